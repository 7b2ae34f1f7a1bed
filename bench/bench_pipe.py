"""Frames into an FFmpeg subprocess: TurboPipe's own comparison, reproduced in one run.

For each pixel format (rgb24 as in TurboPipe's benchmark, and bgra: what screen capture
gives), each resolution (720p, 1080p, 4K) and each sink, the same NBUF=4 rotating, pre-filled NumPy frames are sent by:

  write      proc.stdin.write(frame) on the main thread (no copy, buffer protocol)
  thread     a Python writer thread fed by queue.Queue(maxsize=NBUF-2)
  turbopipe  turbopipe 2.x from PyPI: sync(frame) before reuse, pipe(frame, fd)
  framebus   framebus.pipe / framebus.sync, same pattern (zero-copy, export held; write(2))
  framebus+splice  the same with splice=True: pages vmspliced into the pipe, each
             buffer released when the reader has read it (VideoWriter's default)
  raw        the raw pipe limit: a small C program (bench/pipe_raw.c, built here with
             gcc) write()s the same bytes from 4 rotating buffers straight into the
             sink's stdin: no Python at all
  file       the sink's own ceiling (ffmpeg sinks): no writer and no pipe, FFmpeg reads
             the same 4 frames from a file in /dev/shm (page cache) with -stream_loop -1
             and the same options; "x file" = a method's fps / this row's. Its time is
             FFmpeg's own -benchmark rtime (no start-up, like the writers' clocks)

Every method gets the pipe as `subprocess` makes it (64 KiB); turbopipe is also run
on a pipe grown to /proc/sys/fs/pipe-max-size (turbopipe+1M), its best case.
framebus and raw grow the pipe themselves (F_SETPIPE_SZ).

Sinks: null = ffmpeg -f rawvideo ... -i - -f null - ; cat = sh -c 'cat > /dev/null' ;
x264 = ffmpeg ... -c:v libx264 -preset ultrafast -f null - (--x264-seconds at X264_FPS, ~3 s).
Time: first write -> sink exit. GB/s = 1e9 bytes of frame data per second; median of
--repeats runs; methods alternate within each repeat (the 2-core VM is noisy).
CPU per frame: of this process (all threads; for --fresh the run's own process) and of
the sink (os.wait4's rusage: FFmpeg and every thread of its encoder; for raw also the C
writer); "sink sleeps/frame": the sink's voluntary context switches per frame (each one
a read that found the pipe empty or locked, or an encoder thread waiting). Into an encoder that
takes the cores these are the honest figures: fps is bounded by the file row, and
a writer can only give back its own CPU per frame.

--fresh runs every (method, repeat) in a new Python process (turbopipe's per-fd threads
never stop, so in one process earlier methods' threads stay around). --boost gives this
run's session priority over other sessions' processes on a shared machine (autogroup
nice -20, restored at the end; needs root or CAP_SYS_NICE, else it says so and runs as
is): with Linux's autogroup scheduling every terminal session or job gets an equal CPU
share whatever its processes' nice values, so another session's build halves the cores
an encoder can use.

Usage: python bench/bench_pipe.py [--res 720p,1080p,4k] [--sinks null,x264,cat]
       [--formats rgb24,bgra]
       [--methods write,thread,turbopipe,turbopipe+1M,framebus,framebus+splice,raw,file]
       [--gib 1] [--repeats 3] [--x264-seconds 3] [--fresh] [--boost]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import framebus
from framebus import _framebus as fb
from harness import report

try:
    import turbopipe
except ImportError:  # the bench still runs; the turbopipe rows say so
    turbopipe = None

RES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
NBUF = 4
F_SETPIPE_SZ = 1031
X264_FPS = {"720p": 120, "1080p": 60, "4k": 15}  # rough x264 ultrafast rates here


def pipe_max() -> int:
    with open("/proc/sys/fs/pipe-max-size") as f:
        return int(f.read())


CHANNELS = {"rgb24": 3, "bgra": 4}


def make_frames(res: str, pix_fmt: str) -> list[np.ndarray]:
    """NBUF pre-filled frames, the same in every process (seeded)."""
    w, h = RES[res]
    rng = np.random.default_rng(0)
    shape = (h, w, CHANNELS[pix_fmt])
    return [rng.integers(128, 135, shape, dtype=np.uint8) for _ in range(NBUF)]


def frames_path(res: str, pix_fmt: str) -> str:
    """Where `file` finds the frames: /dev/shm (tmpfs: page cache, no disk)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(base, f"framebus-bench-{res}-{pix_fmt}.raw")


def remove_if_there(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def frames_file(frames: list[np.ndarray], res: str, pix_fmt: str) -> str:
    """The frames in one file (written once per case; main() removes it at the end)."""
    path = frames_path(res, pix_fmt)
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            for fr in frames:
                f.write(fr.data)
        os.replace(path + ".tmp", path)
    return path


def sink_cmd(sink: str, w: int, h: int, pix_fmt: str, src: str = "-", n: int = 0) -> list[str]:
    """The sink reading stdin, or (`file`) `src` looped until n frames were read."""
    if sink == "cat":
        return ["sh", "-c", "cat > /dev/null"]
    src_args = ["-i", src] if src == "-" else ["-stream_loop", "-1", "-i", src, "-frames:v", str(n)]
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        f"{w}x{h}",
        "-r",
        "60",
        *src_args,
    ]
    if sink == "x264":
        cmd += ["-c:v", "libx264", "-preset", "ultrafast"]
    return cmd + ["-f", "null", "-"]


def build_raw() -> str | None:
    if shutil.which("gcc") is None:
        return None
    exe = os.path.join(tempfile.mkdtemp(prefix="framebus-bench-"), "pipe_raw")
    src = Path(__file__).resolve().parent / "pipe_raw.c"
    subprocess.run(["gcc", "-O2", "-o", exe, str(src)], check=True)
    return exe


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def one_run(method: str, res: str, pix_fmt: str, sink: str, n: int, raw_exe: str | None) -> dict:
    """One run: seconds from the first write to the sink's exit, CPU seconds of this
    process (all its threads) and of the sink (with the raw writer for raw), and the
    sink's voluntary context switches."""
    w, h = RES[res]
    frames = make_frames(res, pix_fmt)
    fbytes = frames[0].nbytes
    if method == "file":
        # -benchmark: FFmpeg's own loop time (rtime), which leaves out its start-up,
        # as the writers' clocks do (they start once the sink is up and waiting).
        cmd = sink_cmd(sink, w, h, pix_fmt, frames_file(frames, res, pix_fmt), n)
        cmd[cmd.index("error")] = "info"
        cmd[1:1] = ["-benchmark", "-nostats"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    else:
        proc = subprocess.Popen(sink_cmd(sink, w, h, pix_fmt), stdin=subprocess.PIPE)
        fd = proc.stdin.fileno()
    if method == "turbopipe+1M":
        fcntl.fcntl(fd, F_SETPIPE_SZ, pipe_max())
    if method == "raw":
        wr = subprocess.Popen(
            [raw_exe, str(fbytes), str(n), str(pipe_max())],
            stdin=subprocess.PIPE,
            stdout=proc.stdin,
        )
    if method != "file":
        time.sleep(0.2)  # let the sink (and the raw writer) start before the clock does
    c_self, c_child = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if method == "write":
        for i in range(n):
            proc.stdin.write(frames[i % NBUF])
    elif method == "thread":
        q: queue.Queue = queue.Queue(maxsize=NBUF - 2)

        def worker():
            while (item := q.get()) is not None:
                proc.stdin.write(item)

        th = threading.Thread(target=worker, daemon=True)
        th.start()
        for i in range(n):
            q.put(frames[i % NBUF])
        q.put(None)
        th.join()
    elif method.startswith("turbopipe"):
        for i in range(n):
            obj = frames[i % NBUF]
            turbopipe.sync(obj)  # the previous write of this buffer must be done before reuse
            turbopipe.pipe(obj, fd)
        for obj in frames:
            turbopipe.sync(obj)
    elif method.startswith("framebus"):
        splice = method == "framebus+splice"
        for i in range(n):
            obj = frames[i % NBUF]
            fb.sync(obj)
            fb.pipe(obj, fd, splice=splice)
        fb.close(fd)  # flush and stop the writer before the fd is closed
    elif method == "raw":
        wr.stdin.write(b"g")  # go
        wr.stdin.close()
        if wr.wait() != 0:
            raise RuntimeError("pipe_raw failed")
    if proc.stdin is not None:
        proc.stdin.close()
    err = proc.stderr.read() if proc.stderr is not None else ""
    _, status, ru = os.wait4(proc.pid, 0)  # the sink's own rusage (all its threads)
    proc.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    if method == "file":
        dt = float(err.rsplit("rtime=", 1)[1].split("s")[0])
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}")
    sink_cpu = ru.ru_utime + ru.ru_stime
    if method == "raw":  # the C writer is a child too: count it with the sink
        sink_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - c_child
    return {
        "s": dt,
        "cpu_self": cpu_seconds(resource.RUSAGE_SELF) - c_self,
        "cpu_sink": sink_cpu,
        "sink_sleeps": ru.ru_nvcsw,
    }


def fresh_run(method: str, res: str, pix_fmt: str, sink: str, n: int, raw_exe: str | None) -> dict:
    """one_run in a new Python process (--fresh)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps([method, res, pix_fmt, sink, n, raw_exe])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


@contextlib.contextmanager
def boosted(on: bool):
    """Give this session's autogroup (and this process) nice -20 for the run, then
    restore it (see the module doc); a note on stderr when not permitted."""
    path = "/proc/self/autogroup"
    before = None
    if on:
        try:
            with open(path) as f:
                before = f.read().split()[-1]
            with open(path, "w") as f:
                f.write("-20")
            os.setpriority(os.PRIO_PROCESS, 0, -20)
        except OSError as e:
            print(f"# --boost: not permitted here ({e}); running at normal priority", flush=True)
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError), open(path, "w") as f:
                f.write(before)


def per_frame(runs: list[dict], key: str, n: int) -> float:
    """The median run's `key` divided by its n frames."""
    return statistics.median(r[key] for r in runs) / n


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="720p,1080p,4k")
    ap.add_argument("--sinks", default="null,x264,cat")
    ap.add_argument("--formats", default="rgb24,bgra")
    ap.add_argument(
        "--methods",
        default="write,thread,turbopipe,turbopipe+1M,framebus,framebus+splice,raw,file",
    )
    ap.add_argument("--gib", type=float, default=1.0, help="data per run (null and cat sinks)")
    ap.add_argument("--x264-seconds", type=float, default=3.0, help="rough length of x264 runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="a new Python process per run")
    ap.add_argument("--boost", action="store_true", help="autogroup nice -20 for the run")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run for --fresh
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_run(*json.loads(a.one))))
        return
    raw_exe = build_raw()
    all_methods = [
        m
        for m in a.methods.split(",")
        if not (m.startswith("turbopipe") and turbopipe is None)
        and not (m == "raw" and raw_exe is None)
    ]
    run = fresh_run if a.fresh else one_run
    rows = []
    t_start = time.perf_counter()
    load_start, date_start = loadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    cases = [
        (sink, res, pix_fmt)
        for pix_fmt in a.formats.split(",")
        for sink in a.sinks.split(",")
        for res in a.res.split(",")
    ]
    with boosted(a.boost), contextlib.ExitStack() as cleanup:
        for sink, res, pix_fmt in cases:
            cleanup.callback(remove_if_there, frames_path(res, pix_fmt))
            methods = [m for m in all_methods if not (m == "file" and sink == "cat")]
            fbytes = RES[res][0] * RES[res][1] * CHANNELS[pix_fmt]
            if sink == "x264":
                n = max(NBUF, int(X264_FPS[res] * a.x264_seconds))
            else:
                n = max(NBUF, int(a.gib * 2**30 / fbytes))
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            for m in methods:  # warm-up (page cache, ffmpeg binary, thread start)
                run(m, res, pix_fmt, sink, max(NBUF, n // 10), raw_exe)
            for _ in range(a.repeats):
                for m in methods:
                    runs[m].append(run(m, res, pix_fmt, sink, n, raw_exe))
            gb = n * fbytes / 1e9
            times = {m: [r["s"] for r in rs] for m, rs in runs.items()}
            gbps = {m: gb / statistics.median(t) for m, t in times.items()}
            for m in methods:
                row = [
                    sink,
                    res,
                    pix_fmt,
                    m,
                    n,
                    round(gbps[m], 2),
                    round(n / statistics.median(times[m]), 1),
                    round(gb / min(times[m]), 2),
                    round(per_frame(runs[m], "cpu_self", n) * 1e3, 2),
                    round(per_frame(runs[m], "cpu_sink", n) * 1e3, 1),
                    round(per_frame(runs[m], "sink_sleeps", n), 1),
                    round(gbps[m] / gbps["file"], 2) if "file" in gbps else "",
                ]
                for ref in ("framebus", "framebus+splice"):
                    row.append(round(gbps[ref] / gbps[m], 2) if ref in gbps else "")
                rows.append(row)
            print(
                f"# {sink} {res} {pix_fmt}: " + ", ".join(f"{m} {g:.2f}" for m, g in gbps.items()),
                flush=True,
            )
    notes = (
        f"GB/s = 1e9 bytes/s, median of {a.repeats} alternating runs (best in the next column); "
        "'x file' = that row's median GB/s divided by the file row's (the sink reading the same "
        "frames from a file: its own ceiling); 'fb ×' / 'fb+splice ×' = framebus's "
        "(framebus+splice's) median GB/s divided by that row's. CPU ms/frame: this process "
        "(all threads) and the sink (FFmpeg with its encoder threads; for raw also the C "
        "writer), median run; sink sleeps/frame: the sink's voluntary context switches. 4 "
        "rotating NumPy buffers synced before reuse. "
        + ("A fresh process per run. " if a.fresh else "")
        + (f"Boost: {'on' if a.boost else 'off'}. ")
        + f"Started {date_start} UTC, load average {load_start} at the start and {loadavg()} "
        f"at the end; total time {time.perf_counter() - t_start:.0f} s. "
        f"turbopipe {getattr(turbopipe, '__version__', 'missing')}, framebus {framebus.__version__}."
    )
    report(
        "bench_pipe",
        "Frames into FFmpeg (bench_pipe.py)",
        [
            "sink",
            "res",
            "format",
            "method",
            "frames",
            "GB/s",
            "fps",
            "best GB/s",
            "CPU ms/frame self",
            "CPU ms/frame sink",
            "sink sleeps/frame",
            "x file",
            "fb ×",
            "fb+splice ×",
        ],
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
