"""The README's pictures: the benchmark chart (framebus against each anchor, as ratios)
and the memory-model diagram. Needs matplotlib (requirements-bench.txt).

    python bench/plot.py bench/results/current.jsonl -o docs/img/benchmarks.png
    python bench/plot.py --memory-model -o docs/img/memory-model.png

Inputs, read in order (a later case replaces an earlier one with the same feature, case,
size, framebus variant and anchor):

* ``*.jsonl`` — one case per line, as in bench/results/current.jsonl (the figures of
  docs/benchmarks.md, transcribed with their date and command);
* ``bench/out/*.json`` — what the harness writes for each table (pool_cycle, bench_capture,
  bench_pipe, bench_channel; other tables are skipped);
* a ``.md`` table from ``bench_kernels.py --markdown FILE``.

So ``bench/run_all.sh`` redraws the chart from the run it just made, on top of the recorded
figures, and ``--save FILE`` writes the merged cases in the format of current.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import matplotlib.ticker  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

FEATURES = {  # chart order and group titles
    "pool": "Pool (#2)",
    "capture": "Capture (#3)",
    "pipe": "Pipe to FFmpeg (#4)",
    "channel": "Channel between processes (#5)",
    "kernels": "Kernels (#6)",
}
COLORS = {
    "pool": "#6c757d",
    "capture": "#1f77b4",
    "pipe": "#d62728",
    "channel": "#2ca02c",
    "kernels": "#9467bd",
}
VARIANTS = {  # how the chart names a framebus variant, per feature
    ("pipe", "framebus"): "pipe()",
    ("pipe", "framebus+splice"): "VideoWriter, pipe(splice=True)",
    ("channel", "framebus_spin"): "Subscriber(spin=1.0)",
    ("channel", "framebus"): "Subscriber()",
}
ANCHORS = {  # benchmark row names -> the names in current.jsonl
    "mss 10.2 xshmgetimage": "mss 10.2 (XShmGetImage)",
    "ctypes→bytes": "ctypes→bytes (mss < 11)",
    "shm_ring": "shared_memory + Queue",
    "mpqueue": "multiprocessing.Queue",
    "opencv cvtColor": "OpenCV cvtColor",
}


def key(c: dict) -> tuple:
    # The anchor's first word: a new turbopipe version still replaces "turbopipe 2.1".
    return (c["feature"], c["case"], c["res"], c["framebus"], c["anchor"].split()[0])


# Which rows of a benchmark's table make chart cases: (feature, case, column naming the
# method, other columns that must match, framebus row, anchor rows, value column, unit,
# which way is better). Sizes: 1080p and 4K.
SPECS = {
    "pool_cycle": [
        ("pool", "frame cycle", "method", {}, "framebus",
         ("bytearray", "np.empty", "ctypes→bytes"), "ms/frame (median)", "ms/frame", "lower"),
    ],
    "bench_capture": [
        ("capture", "grab + sum", "case", {}, "framebus",
         ("mss 10.2 xshmgetimage",), "frames/s", "frames/s", "higher"),
    ],
    "bench_pipe": [
        ("pipe", "into ffmpeg -f null", "method", {"sink": "null"}, variant,
         ("turbopipe",), "GB/s", "GB/s", "higher")
        for variant in ("framebus+splice", "framebus")
    ],
    "bench_channel": [
        ("channel", "hand-off p99, 30 fps", "transport", {"mode": "paced"}, "framebus_spin",
         ("shm_ring", "iceoryx2"), "hand-off p99 µs", "µs", "lower"),
        ("channel", "max throughput", "transport", {"mode": "max"}, "framebus",
         ("iceoryx2", "shm_ring", "mpqueue"), "frames/s", "frames/s", "higher"),
    ],
    "kernels": [
        ("kernels", f"{op.replace('->', '→')}, 1 thread", "implementation",
         {"threads": "1", "operation": op}, "framebus",
         ("opencv cvtColor",), "ms (median)", "ms", "lower")
        for op in ("BGRA->RGB", "BGRA->GRAY", "BGRA->I420")
    ],
}  # fmt: skip


def find(rows: list[dict], res: str, col: str, method: str, where: dict) -> dict | None:
    """The row of `method` (in column `col`) at size `res`, matching `where`."""
    for r in rows:
        size = str(r.get("res", r.get("size", "")))
        if (
            size.lower() == res.lower()
            and r[col] == method
            and all(str(r[k]) == v for k, v in where.items())
        ):
            return r
    return None


def cases_from_rows(name: str, rows: list[dict], meta: dict) -> list[dict]:
    """Chart cases from one table's rows (dicts by column name), per SPECS[name]."""
    out = []
    for feature, case, col, where, fb_name, anchors, value, unit, better in SPECS[name]:
        for res in ("1080p", "4K"):
            fb = find(rows, res, col, fb_name, where)
            for anchor in anchors:
                a = find(rows, res, col, anchor, where)
                if not (fb and a):
                    continue
                f, v = float(fb[value]), float(a[value])
                ratio = f / v if better == "higher" else v / f
                if anchor == "turbopipe":
                    anchor += " " + ".".join(str(meta.get("turbopipe", "?")).split(".")[:2])
                out.append(
                    {
                        "feature": feature,
                        "case": case,
                        "res": res,
                        "framebus": fb_name,
                        "framebus_value": float(f"{f:.4g}"),
                        "anchor": ANCHORS.get(anchor, anchor),
                        "anchor_value": float(f"{v:.4g}"),
                        "unit": unit,
                        "better": better,
                        "ratio": float(f"{ratio:.3g}"),
                        "date": meta["date"],
                        "time": meta.get("time", ""),
                        "command": meta["command"],
                        "source": "bench/out (this run)",
                    }
                )
    return out


def from_harness(path: Path) -> list[dict]:
    """Cases from a table the harness wrote (bench/out/<name>.json)."""
    doc = json.loads(path.read_text())
    if path.stem not in SPECS:
        print(f"plot.py: {path}: no chart cases in this table, skipped", file=sys.stderr)
        return []
    rows = [dict(zip(doc["header"], r)) for r in doc["rows"]]
    return cases_from_rows(path.stem, rows, {**doc["machine"], "command": doc["command"]})


def from_kernels_markdown(path: Path) -> list[dict]:
    """Cases from the table `bench_kernels.py --markdown FILE` writes."""
    lines = path.read_text().splitlines()
    head = "| res | threads | operation | implementation | ms (median) | GB/s | vs copy |"
    if head not in lines:  # e.g. a harness table's .md twin: its .json has the figures
        print(f"plot.py: {path}: not a bench_kernels.py --markdown table, skipped", file=sys.stderr)
        return []
    header = [c.strip() for c in head.strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in ln.strip().strip("|").split("|"))))
        for ln in lines[lines.index(head) + 2 :]
        if ln.startswith("|")
    ]
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    meta = {
        "date": stamp.strftime("%Y-%m-%d"),
        "time": stamp.strftime("%H:%M UTC"),
        "command": next((ln[9:] for ln in lines if ln.startswith("Command: ")), ""),
    }
    return cases_from_rows("kernels", rows, meta)


def load(paths: list[Path]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for p in paths:
        if p.suffix == ".jsonl":
            cases = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        elif p.suffix == ".json":
            cases = from_harness(p)
        elif p.suffix == ".md":
            cases = from_kernels_markdown(p)
        else:
            raise SystemExit(f"plot.py: {p}: expected .jsonl, a harness .json or a kernels .md")
        for c in cases:
            merged[key(c)] = c
    order = list(FEATURES)
    # Stable sort: within a feature, the order in which cases first appeared.
    return sorted(merged.values(), key=lambda c: order.index(c["feature"]))


HEADING = {
    "fontsize": 10,
    "fontweight": "bold",
    "va": "center",
    "bbox": {"facecolor": "white", "edgecolor": "none", "pad": 1},
}


def fmt(v: float) -> str:
    return f"{v:.4g}" if v >= 1000 else f"{v:.3g}"


def save_png(fig, out: Path) -> None:
    """Save with a 256-colour palette: a third of the size, the same to the eye."""
    from PIL import Image  # a matplotlib dependency

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    with Image.open(out) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)


def chart(cases: list[dict], out: Path) -> None:
    """One horizontal bar per case: framebus's advantage over the anchor, log scale."""
    rows: list[tuple[str, dict | None]] = []  # (label, case), or (heading, None)
    for feature, title in FEATURES.items():
        group = [c for c in cases if c["feature"] == feature]
        heads = list(dict.fromkeys((c["case"], c["framebus"]) for c in group))
        for case, fb_name in heads:
            first = next(c for c in group if (c["case"], c["framebus"]) == (case, fb_name))
            variant = VARIANTS.get((feature, fb_name))
            better = "higher" if first["better"] == "higher" else "lower"
            rows.append(
                (
                    f"{title} · {case}" + (f", {variant}" if variant else "")
                    + f" · {first['unit']}, {better} is better",
                    None,
                )
            )  # fmt: skip
            for c in group:
                if (c["case"], c["framebus"]) == (case, fb_name):
                    rows.append((f"{c['res']}  vs {c['anchor']}", c))
    fig = plt.figure(figsize=(12, 0.27 * len(rows) + 1.3), dpi=100)
    height = 0.27 * len(rows) / (0.27 * len(rows) + 1.3)
    ax = fig.add_axes((0.25, 0.75 / (0.27 * len(rows) + 1.3), 0.73, height))
    ys = list(range(len(rows)))[::-1]
    for y, (label, c) in zip(ys, rows):
        if c is None:
            ax.text(-0.33, y - 0.05, label, HEADING, transform=ax.get_yaxis_transform())
            continue
        r = c["ratio"]
        alpha = 1.0 if r >= 1 else 0.45  # the anchor ahead: a paler bar
        ax.barh(y, r - 1, left=1, height=0.66, color=COLORS[c["feature"]], alpha=alpha)
        ax.text(
            max(r, 1) * 1.06,
            y,
            f"{fmt(r)}×   ({fmt(c['framebus_value'])} vs {fmt(c['anchor_value'])} {c['unit']})",
            fontsize=8.5,
            va="center",
        )
    ax.axvline(1, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(0.5, 100)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks([y for y, (_, c) in zip(ys, rows) if c], [lb for lb, c in rows if c], fontsize=9)
    ax.tick_params(axis="y", length=0)
    ticks = [0.5, 1, 2, 5, 10, 20, 50, 100]
    ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(axis="x", which="major", color="#ddd", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    dates = sorted({c["date"] for c in cases})
    span = dates[0] if len(dates) == 1 else f"{dates[0]} – {dates[-1]}"
    title = f"framebus against each anchor, each pair measured in the same run ({span})"
    fig.text(0.01, 1 - 0.12 / fig.get_figheight(), title, fontsize=13, va="top")
    fig.text(
        0.01,
        0.12 / fig.get_figheight(),
        "× better than the anchor (log scale): for frames/s and GB/s framebus ÷ anchor, for "
        "time and latency anchor ÷ framebus.  Right of 1 = framebus ahead, left = the "
        "anchor ahead.",
        fontsize=9.5,
        color="#333",
    )
    save_png(fig, out)


def memory_model(out: Path) -> None:
    """One slot in the middle, what fills it on the left, every lease holder on the right."""
    fig, ax = plt.subplots(figsize=(12, 6.2), dpi=100)
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 6.2)
    ax.axis("off")
    blue, green, grey = "#1f5fa8", "#2b7a3d", "#555"

    def box(x, y, w, h, text, face, edge, size=9.5, ls="-"):
        style = "round,pad=0.02,rounding_size=0.12"
        ax.add_patch(FancyBboxPatch((x, y), w, h, style, fc=face, ec=edge, lw=1.4, ls=ls))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(a, b, color, ls="-"):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color=color,
                                     lw=1.4, ls=ls, shrinkA=2, shrinkB=2))  # fmt: skip

    def heading(x, text, color):
        ax.text(x, 5.75, text, ha="center", fontsize=11, fontweight="bold", color=color)

    # The slot.
    sx, sy, sw, sh = 4.55, 2.2, 2.9, 1.9
    box(sx, sy, sw, sh, "", "#fff4d6", "#c98a00")
    ax.text(sx + sw / 2, sy + sh - 0.38, "slot", ha="center", fontsize=15, fontweight="bold")
    ax.text(sx + sw / 2, sy + 0.7, "one memfd mapping\npage-aligned, MAP_SHARED\nowned by a "
            "FramePool", ha="center", va="center", fontsize=9.5, linespacing=1.4)  # fmt: skip

    # What fills the slot, in place.
    heading(1.75, "fill it in place", blue)
    producers = [
        ("X server\nMIT-SHM attach_fd of the memfd", "-"),
        ("Wayland compositor\n(coming)", "--"),
        ("another process\n(Publisher; memfd over a Unix socket)", "-"),
        ("a kernel: convert / resize\ninto a pool slot", "-"),
    ]
    for i, (text, ls) in enumerate(producers):
        y = 4.75 - i * 1.2
        box(0.2, y, 3.1, 0.8, text, "#e8f0fb", blue, size=9, ls=ls)
        arrow((3.32, y + 0.4), (sx - 0.02, sy + sh / 2 + (1.5 - i) * 0.35), blue, ls=ls)

    # Who reads it: every holder owns a Lease.
    heading(10.2, "read it: each holder owns a Lease", green)
    holders = [
        "Frame",
        "NumPy / buffer view",
        "DLPack tensor (PyTorch, …)",
        "channel pin (other process)",
        "pipe job (FFmpeg reads it)",
    ]
    for i, text in enumerate(holders):
        y = 4.95 - i * 0.98
        box(8.65, y, 3.1, 0.66, text, "#e7f5ea", green)
        arrow((8.63, y + 0.33), (sx + sw + 0.02, sy + sh / 2 + (2 - i) * 0.3), green)
        ax.text(8.5, y + 0.36, "Lease", ha="right", va="bottom", fontsize=7.5, color=green,
                style="italic")  # fmt: skip

    # The refcount, and the only way back to the pool.
    box(3.45, 0.25, 5.1, 1.05, "Lease = Arc: one refcount per slot, one count per holder\n"
        "the slot returns to the pool when the last lease drops", "#f4f4f4", grey)  # fmt: skip
    arrow((sx + sw / 2, 1.32), (sx + sw / 2, sy - 0.02), grey)
    ax.text(sx + sw / 2 + 0.12, 1.74, "reused only then,\nnever by a timer or a frame counter",
            fontsize=8, color=grey, va="center")  # fmt: skip
    fig.tight_layout(pad=0.3)
    save_png(fig, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", type=Path, help=".jsonl, harness .json, kernels .md")
    ap.add_argument("-o", "--output", type=Path, help="PNG to write")
    ap.add_argument("--memory-model", action="store_true", help="draw the memory-model picture")
    ap.add_argument("--save", type=Path, help="also write the merged cases as JSON lines")
    a = ap.parse_args()
    if a.memory_model:
        memory_model(a.output or Path("docs/img/memory-model.png"))
        return
    if not a.inputs:
        ap.error("give at least one results file (bench/results/current.jsonl)")
    cases = load(a.inputs)
    if not cases:
        raise SystemExit("plot.py: no cases in " + ", ".join(map(str, a.inputs)))
    chart(cases, a.output or Path("docs/img/benchmarks.png"))
    if a.save:
        a.save.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))


if __name__ == "__main__":
    main()
