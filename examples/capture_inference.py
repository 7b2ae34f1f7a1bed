"""Capture → slow inference in another process, through a framebus channel.

A producer process makes 1080p BGRA frames at a fixed rate (with `framebus.grab` when
the capture feature and a display are there, else synthetic frames drawn into the
channel's own pool) and publishes them with no copy. A consumer process runs a slow
"inference" (it reads the whole frame, then sleeps) and prints, every second, how old
the frames it got were when it received them and when it finished with them.

In "latest" mode the consumer always gets the newest frame: stale ones are skipped (and
counted), so the latency stays flat however slow the inference is. Run with
`--mode lossless` to see the other policy: every frame, in order, with the producer
held back by the bounded queue.

    python examples/capture_inference.py                      # 60 fps in, 8 fps inference
    python examples/capture_inference.py --mode lossless --depth 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import framebus
import numpy as np

try:
    from framebus import Publisher, Subscriber
except ImportError:  # before the package re-exports the channel classes
    from framebus._framebus import Publisher, Subscriber


def produce(name: str, mode: str, depth: int, fps: float, seconds: float, ready) -> None:
    kw = {"mode": mode}
    if mode == "lossless":
        kw.update(depth=depth, on_full="block")
    with Publisher(name, **kw) as pub:
        ready.set()
        pub.wait_for_subscribers(1, timeout=10)
        grab = getattr(framebus, "grab", None) if os.environ.get("DISPLAY") else None
        source = "screen (framebus.grab into the channel's pool)" if grab else "synthetic 1080p"
        print(f"producer: {source} frames at {fps:.0f} fps, mode={mode}")
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            if grab is not None:
                frame = grab(pool=pub.pool)  # captured straight into a channel slot
            else:
                frame = pub.acquire(1920, 1080, "BGRA")  # timestamped now
                a = np.asarray(frame)
                a[n % 1080] = 255  # something changes each frame; no full repaint
                del a
            pub.send(frame)
            del frame
            n += 1
            delay = start + n / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        print(f"producer: sent {n} frames in {seconds:.0f} s ({n / seconds:.0f} fps)")


def consume(name: str, infer_ms: float) -> None:
    sub = Subscriber(name, timeout=10)
    print("  s | frames | skipped | age at recv p50/max ms | age after inference p50/max ms")
    t_last = time.monotonic()
    at_recv, at_done, second, got = [], [], 1, 0
    for frame in sub:  # ends when the producer closes the channel
        recv_ns = time.monotonic_ns()
        a = np.asarray(frame)
        a.reshape(-1).view(np.uint64).sum()  # "inference" reads every pixel ...
        time.sleep(infer_ms / 1000)  # ... and takes its time
        done_ns = time.monotonic_ns()
        at_recv.append((recv_ns - frame.timestamp) / 1e6)
        at_done.append((done_ns - frame.timestamp) / 1e6)
        got += 1
        del a, frame  # unpins the slot in the producer
        if time.monotonic() - t_last >= 1.0:
            print(
                f"{second:3d} | {got:6d} | {sub.skipped:7d} | "
                f"{statistics.median(at_recv):10.2f} / {max(at_recv):8.2f} | "
                f"{statistics.median(at_done):13.2f} / {max(at_done):8.2f}"
            )
            t_last, at_recv, at_done, got, second = time.monotonic(), [], [], 0, second + 1
    print(f"consumer: received {sub.received}, skipped {sub.skipped}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["latest", "lossless"], default="latest")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--infer-ms", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    name = f"capture-inference-{os.getpid()}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    prod = ctx.Process(target=produce, args=(name, a.mode, a.depth, a.fps, a.seconds, ready))
    prod.start()
    ready.wait(10)
    consume(name, a.infer_ms)
    prod.join()


if __name__ == "__main__":
    main()
