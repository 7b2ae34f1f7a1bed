"""Shared benchmark harness: timing with medians of alternating repeats, machine and
version info, and markdown/JSON output. Every bench_<feature>.py uses it so results
in docs/benchmarks.md carry the same columns, the exact command and the versions."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

OUT = Path(__file__).resolve().parent / "out"


def per_op_seconds(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of fn over n calls (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def alternate(
    cases: dict[str, Callable[[], object]], n: int, repeats: int
) -> dict[str, list[float]]:
    """Run every case `repeats` times, interleaved (A B C A B C ...), so slow
    phases of a noisy machine hit every case alike. Returns per-op seconds."""
    out: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            # progress on stderr (the tables go to stdout)
            print(f"  repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            out[name].append(per_op_seconds(fn, n))
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def rss_bytes() -> int:
    """Resident set size including shared memory pages this process touched."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": f"{cpu} x{os.cpu_count()}",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for mod in ("numpy", "framebus", "mss", "turbopipe", "cv2", "PIL", "iceoryx2"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except ImportError:
            pass
    try:
        ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
        info["ffmpeg"] = ff.split()[2] if ff else "?"
    except OSError:
        pass
    return info


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def report(
    name: str, title: str, header: list[str], rows: list[list[object]], notes: str = ""
) -> str:
    """Print and save (bench/out/<name>.md and .json) one result table."""
    OUT.mkdir(exist_ok=True)
    info = machine()
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    md = (
        f"### {title}\n\n`{cmd}` — {info['date']}, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}, "
        + ", ".join(
            f"{k} {v}" for k, v in info.items() if k not in ("date", "cpu", "kernel", "python")
        )
        + "\n\n"
        + markdown_table(header, rows)
        + ("\n\n" + notes if notes else "")
        + "\n"
    )
    print(md)
    (OUT / f"{name}.md").write_text(md)
    (OUT / f"{name}.json").write_text(
        json.dumps({"command": cmd, "machine": info, "header": header, "rows": rows}, indent=1)
    )
    return md


def start_xvfb(w: int, h: int) -> tuple[subprocess.Popen, str]:
    """Xvfb on a display number it picks itself (-displayfd), -noreset (kept from
    the shared anchor script capture_mss.py: without it Xvfb wipes the screen when the last
    client disconnects)."""
    r, wfd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(wfd), "-screen", "0", f"{w}x{h}x24", "-noreset"],
        pass_fds=(wfd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(wfd)
    with os.fdopen(r, "rb") as f:
        num = f.readline().strip()
    if not num:
        raise SystemExit("Xvfb did not start")
    return proc, f":{int(num)}"
