"""The benchmark charts of the documentation site, drawn from ``perf/results/*.json``.

Run: ``python -m perf.charts [--results DIR] [--out DIR]`` (``make charts``; ``make bench`` runs
it after the benchmarks). Writes one PNG per chart into ``docs/img/`` and says which results
each was drawn from; a chart whose results file is missing is skipped with a note, never drawn
from stale numbers of another file.

Every chart names the run it comes from (date, Python, ``--quick`` or not, load average) in its
footer: the numbers are from a shared 2-core VM, and what holds across machines is the ratio
between bars of one chart (competitors ran interleaved in the same run), not the µs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # after matplotlib.use(): the backend is chosen first
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from perf._results import RESULTS_DIR

__all__ = ["CHARTS", "main", "render"]

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"
LOOPTHREAD = "#1f6fb4"  # loopthread's own bars: one colour, everything else grey
OTHER = "#9a9a9a"
FLOOR = "#5b5b5b"

Doc = dict[str, Any]


def _rows(doc: Doc, table: str) -> list[dict[str, Any]]:
    rows = [r for r in doc["rows"] if r["table"] == table]
    if not rows:
        raise KeyError(f"{doc['bench']}.json has no rows of table {table!r}")
    return rows


def _footer(fig: Figure, doc: Doc, note: str = "") -> None:
    load = doc.get("loadavg_before")
    run = (
        f"{doc['bench']}, {doc['date'][:10]}, Python {doc['python']} ({doc['implementation']}), "
        f"{doc['cpus']} CPUs{', --quick' if doc['quick'] else ''}"
        + (f", load {load[0]:.1f}" if load else "")
    )
    fig.text(0.01, 0.01, f"{run}. {note}".strip(), fontsize=7.5, color="#555555")


def _is_ours(name: str) -> bool:
    return name.startswith(("lt.", "ch.put", "enrich_sync", "LoopHandler", "loopthread"))


def _colour(name: str) -> str:
    if _is_ours(name):
        return LOOPTHREAD
    return FLOOR if "floor" in name else OTHER


def _label_bars(ax: Axes, values: Sequence[float], fmt: Callable[[float], str]) -> None:
    xmax = ax.get_xlim()[1]
    for y, value in enumerate(values):
        ax.text(value + xmax * 0.01, y, fmt(value), va="center", fontsize=8)


def _hbar(
    ax: Axes,
    names: Sequence[str],
    values: Sequence[float],
    fmt: Callable[[float], str],
    *,
    xlabel: str,
) -> None:
    ys = range(len(names))
    ax.barh(list(ys), list(values), color=[_colour(n) for n in names])
    ax.set_yticks(list(ys), list(names), fontsize=8.5)
    if not ax.yaxis_inverted():  # first row on top, as in the table (once: axes may share y)
        ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(values) * 1.18)  # room for the value labels
    _label_bars(ax, values, fmt)
    ax.spines[["top", "right"]].set_visible(False)


def calls(results: Path) -> tuple[Figure, str]:
    """µs per call by method, one caller thread (bench_calls)."""
    doc = _load(results, "bench_calls")
    rows = _rows(doc, "single")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    titles = {
        "noop": "async def noop(x): return x (never suspends)",
        "sleep(0)": "await asyncio.sleep(0) (suspends once)",
    }
    for ax, workload in zip(axes, titles, strict=True):
        _hbar(
            ax,
            [r["method"] for r in rows],
            [r[f"{workload} median µs"] for r in rows],
            lambda v: f"{v:.0f} µs",
            xlabel="µs per call, median (shorter is faster)",
        )
        ax.set_title(titles[workload], fontsize=10)
    fig.suptitle("One call from sync code into a coroutine, 1 caller thread", fontsize=12)
    _footer(fig, doc, "Blue: loopthread. Ratios between bars hold across machines, µs do not.")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig, "bench_calls.json, table 'single'"


def _one_bar_chart(
    rows: list[dict[str, Any]],
    name: str,
    value: str,
    fmt: Callable[[float], str],
    *,
    xlabel: str,
    size: tuple[float, float],
) -> tuple[Figure, Axes]:
    """One horizontal bar per row: ``row[name]`` labelled, ``row[value]`` long."""
    fig, ax = plt.subplots(figsize=size)
    _hbar(ax, [r[name] for r in rows], [r[value] for r in rows], fmt, xlabel=xlabel)
    return fig, ax


def threads(results: Path) -> tuple[Figure, str]:
    """Calls per second from 8 caller threads (bench_calls)."""
    doc = _load(results, "bench_calls")
    fig, ax = _one_bar_chart(
        _rows(doc, "threads"),
        "method",
        "noop calls/s",
        lambda v: f"{v:,.0f}",
        xlabel="calls per second, all 8 threads together (longer is better)",
        size=(8, 3.8),
    )
    ax.set_title("8 threads calling a coroutine that returns at once", fontsize=11)
    _footer(fig, doc, "Blue: loopthread.")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig, "bench_calls.json, table 'threads'"


def channel_throughput(results: Path) -> tuple[Figure, str]:
    """Events per second by competitor and number of producer threads (bench_channel)."""
    doc = _load(results, "bench_channel")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, table, title in (
        (axes[0], "throughput", "back to back (nothing else to do)"),
        (axes[1], "throughput_work", "5 µs of producer work per event"),
    ):
        rows = _rows(doc, table)
        names = list(dict.fromkeys(r["competitor"] for r in rows))
        by = {(r["competitor"], r["producers"]): r["events/s (median)"] for r in rows}
        height = 0.38
        for offset, producers, alpha in ((-height / 2, 1, 1.0), (height / 2, 4, 0.5)):
            values = [by[(n, producers)] for n in names]
            ax.barh(
                [i + offset for i in range(len(names))],
                values,
                height=height,
                color=[_colour(n) for n in names],
                alpha=alpha,
                edgecolor="white",
            )
        log = max(by.values()) / min(by.values()) > 20
        if log:
            ax.set_xscale("log")
            ax.set_xlim(min(by.values()) / 2, max(by.values()) * 6)
            ax.set_xlabel("events per second, log scale (longer is better)")
        else:
            ax.set_xlim(0, max(by.values()) * 1.2)
            ax.set_xlabel("events per second (longer is better)")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _si(v)))
        for (competitor, producers), v in by.items():
            y = names.index(competitor) + (-height / 2 if producers == 1 else height / 2)
            x = v * 1.08 if log else v + max(by.values()) * 0.01
            ax.text(x, y, _si(v), va="center", fontsize=7.5)
        ax.set_yticks(range(len(names)), names, fontsize=8.5)
        if not ax.yaxis_inverted():  # the axes share y: invert it once
            ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    shades = [
        Patch(color="#555555", label="darker, upper bar of a pair: 1 producer thread"),
        Patch(color="#555555", alpha=0.5, label="lighter, lower bar: 4 producer threads"),
    ]
    fig.legend(handles=shades, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=2)
    fig.suptitle("Sync producers pushing events to the loop", fontsize=12)
    _footer(
        fig,
        doc,
        "Left: log scale, each step is 10x. The 1 ms poller is fast back to back, and pays "
        "for it in latency and idle wake-ups (next charts).",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.88))
    return fig, "bench_channel.json, tables 'throughput' and 'throughput_work'"


LATENCY_SHOWN = (  # bench_channel's competitor, its label here, colour, line style
    ("ch.put, sync handler", "ch.put, sync handler", LOOPTHREAD, "-"),
    ("ch.put (lt.channel)", "ch.put, async handler", LOOPTHREAD, "--"),
    ("call_soon_threadsafe (floor)", "call_soon_threadsafe (floor)", FLOOR, ":"),
    ("raw janus, get() per item", "raw janus, get() per item", OTHER, "-."),
    ("1 ms polling thread", "1 ms polling thread", "#d9534f", "-"),
)


def latency_cdf(results: Path) -> tuple[Figure, str]:
    """CDF of the put-to-handler latency, channel against the 1 ms poller (bench_channel)."""
    doc = _load(results, "bench_channel")
    by_rate = doc["series"]["latency_percentiles_us"]
    counts = {(r["rate"], r["competitor"]): r["events"] for r in _rows(doc, "latency")}
    fig, axes = plt.subplots(1, len(by_rate), figsize=(11, 4.2), sharey=True)
    quantiles = [q / 100 for q in range(101)]
    for ax, (rate, curves) in zip(axes, by_rate.items(), strict=True):
        for name, label, colour, style in LATENCY_SHOWN:
            if name in curves:
                ax.plot(curves[name], quantiles, style, color=colour, label=label, lw=1.8)
        events = sorted({n for (r, _), n in counts.items() if r == rate})
        each = "/".join(str(n) for n in events)
        ax.set_xscale("log")
        ax.set_xlabel("µs from put() to the handler, log scale (left is faster)")
        ax.axhline(0.5, color="#cccccc", lw=0.8, zorder=0)
        ax.set_title(
            f"one event every {rate.removeprefix('1 event/')} ({each} events each)", fontsize=10
        )
        ax.grid(axis="x", which="major", color="#eeeeee")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("share of events delivered within x")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=3)
    fig.suptitle(
        "Latency: the channel wakes the loop, the poller waits for its next tick", fontsize=12
    )
    _footer(fig, doc, "A curve further left is faster; the grey line is the median.")
    fig.tight_layout(rect=(0, 0.04, 1, 0.84))
    return fig, "bench_channel.json, series 'latency_percentiles_us'"


def idle(results: Path) -> tuple[Figure, str]:
    """Wake-ups per second of an idle process's threads (bench_idle)."""
    doc = _load(results, "bench_idle")
    rows = _rows(doc, "idle")
    names = [f"{r['who']} ({r['threads']} thread{'s' if r['threads'] > 1 else ''})" for r in rows]
    values = [r["wake-ups/s (all its threads)"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ys = list(range(len(names)))
    ax.barh(ys, values, color=[LOOPTHREAD if "LoopThread" in n else OTHER for n in names])
    ax.set_yticks(ys, names, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xlim(0, max(*values, 1) * 1.2)
    for y, v in enumerate(values):
        # A zero has no bar: say it, so the row is not read as missing.
        ax.text(max(v, 0) + ax.get_xlim()[1] * 0.01, y, f"{v:g} / s", va="center", fontsize=8)
    ax.set_xlabel("wake-ups per second while idle, all of its threads (shorter is better)")
    fig.suptitle("Idle: nothing to do after one call, one event and one executor job", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    _footer(
        fig, doc, "Voluntary context switches from /proc; 0 means the threads slept throughout."
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig, "bench_idle.json, table 'idle'"


def prefork(results: Path) -> tuple[Figure, str]:
    """Requests per second of the gunicorn example app against the alternatives."""
    doc = _load(results, "bench_prefork")
    rows = _rows(doc, "serve")
    fig, ax = _one_bar_chart(
        rows,
        "app",
        "requests/s",
        lambda v: f"{v:,.0f} req/s",
        xlabel="requests per second (longer is better)",
        size=(9, 3.4),
    )
    for bar, row in zip(ax.patches, rows, strict=True):
        if "A/A" in row["app"]:  # the same server again: noise, not a competitor
            bar.set_alpha(0.45)
            bar.set_hatch("//")
    fig.suptitle("gunicorn sync workers, one async upstream call per request", fontsize=11)
    _footer(
        fig,
        doc,
        "Hatched: the first server run again; its gap to the first row is this run's noise.",
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig, "bench_prefork.json, table 'serve'"


def exit_losses(results: Path) -> tuple[Figure, str]:
    """Log records written and lost when a program returns without shutting logging down."""
    doc = _load(results, "bench_logging")
    rows = _rows(doc, "exit")
    key = "program that logs from 4 threads and returns"
    names = [r[key] for r in rows]
    written = [r["written"] for r in rows]
    lost = [r["lost"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    ys = list(range(len(names)))
    ax.barh(ys, written, color=[_colour(n) for n in names], label="written")
    ax.barh(ys, lost, left=written, color="#d9534f", label="lost")
    for y, (w, lo) in enumerate(zip(written, lost, strict=True)):
        ax.text(w + lo + 40, y, f"{lo:,} lost" if lo else "none lost", va="center", fontsize=8)
    ax.set_yticks(ys, names, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xlim(0, max(w + lo for w, lo in zip(written, lost, strict=True)) * 1.2)
    ax.set_xlabel("log records")
    ax.set_title("A program logs from 4 threads and returns (no explicit shutdown)", fontsize=11)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _footer(fig, doc)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig, "bench_logging.json, table 'exit'"


def _si(value: float) -> str:
    if value == 0:
        return "0"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _load(results: Path, bench: str) -> Doc:
    path = results / f"{bench}.json"
    if not path.exists():
        raise FileNotFoundError(path)
    doc: Doc = json.loads(path.read_text())
    return doc


CHARTS: dict[str, Callable[[Path], tuple[Figure, str]]] = {
    "calls": calls,
    "threads": threads,
    "channel-throughput": channel_throughput,
    "channel-latency-cdf": latency_cdf,
    "idle-wakeups": idle,
    "prefork": prefork,
    "logging-exit": exit_losses,
}


def render(results: Path = RESULTS_DIR, out: Path = OUT_DIR) -> list[str]:
    """Draw every chart; return one line per chart saying what was written or skipped."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, draw in CHARTS.items():
        try:
            fig, source = draw(results)
        except FileNotFoundError as exc:
            lines.append(f"skipped {name}.png: {exc.filename} not found (run make bench)")
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        lines.append(f"wrote {path} from {source}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    for line in render(args.results, args.out):
        print(line)


if __name__ == "__main__":
    main()
