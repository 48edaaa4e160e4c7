"""PNG plots for docs/performance.md (matplotlib, Agg backend: no display needed).

Each function takes a suite's JSON results (bench/common.py) and returns the file names
it wrote. Plots are small (~40-60 KB) and committed next to the report they illustrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 90


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, outdir: Path, name: str) -> list[str]:
    fig.tight_layout()
    fig.savefig(outdir / name, dpi=DPI)
    _plt().close(fig)
    return [name]


def plot_suite(name: str, datas: list[dict[str, Any]], outdir: Path) -> list[str]:
    if name == "datapath":
        return datapath(datas[-1], outdir)
    if name == "connect":
        return connect(datas, outdir)
    if name == "cli":
        return cli(datas[-1], outdir)
    if name == "start":
        return start(datas[-1], outdir)
    return []


def datapath(data: dict[str, Any], outdir: Path) -> list[str]:
    plt = _plt()
    avg: dict[str, dict[str, float]] = data["series"]["avg"]
    samples: dict[str, list[dict[str, Any]]] = data["series"]["samples"]
    cases = [c for c in samples if c in avg]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.38
    base = avg.get("tapvirt")
    for i, (d, label, color) in enumerate((("h2g", "host -> guest", "#3b75af"),
                                           ("g2h", "guest -> host", "#ef8636"))):
        xs = [n + (i - 0.5) * width for n in range(len(cases))]
        ys = [avg[c][d] for c in cases]
        bars = ax.bar(xs, ys, width, label=label, color=color)
        for c, x in zip(cases, xs, strict=True):  # every round as a dot: shows the noise
            ax.scatter([x] * len(samples[c]), [r[d] for r in samples[c]], s=9, color="black",
                       zorder=3)
        if base:
            for b, c in zip(bars, cases, strict=True):
                ax.annotate(f"{avg[c][d] / base[d]:.2f}x", (b.get_x() + b.get_width() / 2,
                                                             b.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cases)), cases, rotation=20, ha="right")
    ax.set_ylabel("Mbit/s (median of rounds; dots: each round)")
    ax.set_title("Guest throughput under TCG, iperf3 (ratio vs tapvirt default)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, outdir, "datapath-throughput.png")


def connect(datas: list[dict[str, Any]], outdir: Path) -> list[str]:
    """Connect time vs number of links, from one or more connect runs."""
    points: dict[int, dict[str, float]] = {}
    for data in datas:
        s = data.get("series", {})
        for n, raw, full, lookup in zip(s.get("links", []), s.get("raw_us", []),
                                        s.get("full_us", []), s.get("lookup_us", []),
                                        strict=False):
            points[int(n)] = {"raw": raw, "full": full, "lookup": lookup}
    if not points:
        return []
    plt = _plt()
    xs = sorted(points)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, marker in (("full", "tapvirt connect (lookup + checks + open)", "o"),
                               ("raw", "raw open + TUNSETIFF + close", "s"),
                               ("lookup", "of which: netlink lookup", "^")):
        ax.plot(xs, [points[x][key] for x in xs], marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("links in the namespace (log scale)")
    ax.set_ylabel("µs per interface (median CPU time)")
    ax.set_title("Per-interface connect cost vs number of links")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, outdir, "connect-vs-links.png")


def cli(data: dict[str, Any], outdir: Path) -> list[str]:
    plt = _plt()
    wall: dict[str, list[float]] = data["series"]["samples_ms"]
    cpu: dict[str, list[float]] = data["series"].get("cpu_ms", {})
    labels = list(wall)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.boxplot([wall[k] for k in labels], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1),
                  [k.replace(" (interpreter floor)", "") for k in labels], fontsize=8)
    if cpu:
        ax.scatter([sorted(cpu[k])[len(cpu[k]) // 2] for k in labels],
                   range(1, len(labels) + 1), marker="x", color="red", zorder=3,
                   label="median CPU time (user + sys)")
    for goal_ms, text in ((60, "--version goal"), (100, "list goal")):
        ax.axvline(goal_ms, ls="--", color="grey", lw=1)
        ax.text(goal_ms, len(labels) + 0.45, text, fontsize=7, ha="center")
    ax.set_xlabel("wall time, ms (boxes: every run)")
    ax.set_title("CLI start-up")
    ax.set_xlim(left=0)
    if cpu:
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, outdir, "cli-startup.png")


def start(data: dict[str, Any], outdir: Path) -> list[str]:
    """Launcher time per guest over consecutive starts, if the start suite reports it."""
    per_guest = data.get("series", {}).get("per_guest_ms")
    if not per_guest:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    n = len(per_guest)
    ax.plot(range(1, n + 1), per_guest, marker=".", lw=0.8, label="each start")
    k = min(10, n // 2)
    if k:
        for xs, label, color in ((range(1, k + 1), f"median of the first {k}", "green"),
                                 (range(n - k + 1, n + 1), f"median of the last {k}", "red")):
            med = sorted(per_guest[x - 1] for x in xs)[k // 2]
            ax.hlines(med, xs[0], xs[-1], colors=color, lw=2, label=f"{label}: {med:.0f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("guest number (started one after another, paused)")
    ax.set_ylabel("launcher time, ms")
    ax.set_title("tapvirt start: launcher time per guest")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, outdir, "start-per-guest.png")
