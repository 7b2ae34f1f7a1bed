"""The floor under any sleeping hand-off on this machine: one process writes a
timestamp into a pipe 30 times a second, another sleeps in select() and reads it.
No framebus involved: this is what the kernel and the VM cost to wake a sleeper,
the lower bound for the channel's paced hand-off latency without busy-waiting."""

import os
import select
import statistics
import time

N, RATE = 300, 30.0


def main() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        for _ in range(N):
            time.sleep(1 / RATE)
            os.write(w, time.monotonic_ns().to_bytes(8, "little"))
        os._exit(0)
    os.close(w)
    lat = []
    while True:
        select.select([r], [], [])
        b = os.read(r, 8)
        now = time.monotonic_ns()
        if not b:
            break
        lat.append((now - int.from_bytes(b, "little")) / 1e3)
    os.waitpid(pid, 0)
    lat.sort()
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    print(
        f"pipe wake-up, {RATE:.0f} Hz, sleeping reader, {len(lat)} samples: "
        f"p50 {statistics.median(lat):.0f} µs, p99 {p99:.0f} µs, max {lat[-1]:.0f} µs"
    )


if __name__ == "__main__":
    main()
