"""What every benchmark shares: interleaved rounds, medians, p99, ratios, a markdown table.

These machines are noisy: absolute times drift between runs, ratios measured in the same run
hold. So every benchmark runs its competitors interleaved (A, B, C, A, B, C, ...) for several
rounds and reports medians and ratios to a named baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from perf import _results

__all__ = [
    "Result",
    "interleave",
    "markdown_table",
    "one_cpu",
    "overhead_verdict",
    "p99",
    "parse_args",
    "run_main",
    "timed",
    "voluntary_switches",
]


def parse_args(description: str) -> argparse.Namespace:
    """The flags every benchmark takes (``--quick`` for a short smoke run)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few rounds, small counts")
    return parser.parse_args()


class Result:
    """Per-operation samples of one competitor, in seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.per_op: list[float] = []  # one value per round: mean seconds per operation
        self.samples: list[float] = []  # individual operation times, where measured

    @property
    def median(self) -> float:
        return statistics.median(self.per_op)

    @property
    def p99(self) -> float:
        return p99(self.samples) if self.samples else max(self.per_op)


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(fn: Callable[[], object], n: int, *, samples: list[float] | None = None) -> float:
    """Run ``fn`` ``n`` times; return the mean seconds per call (and keep samples if asked)."""
    clock = time.perf_counter
    if samples is None:
        start = clock()
        for _ in range(n):
            fn()
        return (clock() - start) / n
    total_start = clock()
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return (clock() - total_start) / n


def interleave(
    competitors: dict[str, Callable[[], float]], rounds: int, *, warmup: int = 1
) -> dict[str, Result]:
    """Run each competitor once per round, in turn; each returns seconds per operation."""
    results = {name: Result(name) for name in competitors}
    for _ in range(warmup):
        for run in competitors.values():
            run()
    for _ in range(rounds):
        for name, run in competitors.items():
            gc.collect()
            results[name].per_op.append(run())
    return results


@contextlib.contextmanager
def one_cpu() -> Iterator[bool]:
    """Pin this thread, and so every thread it starts meanwhile, to one CPU, if the OS allows.

    Yields whether it could. Use it to compare two configurations of the same code (metrics on
    and off): on a small VM a cross-thread wake-up costs about 25 or 75 µs depending on whether
    the two threads share a CPU, and which they get changes from one LoopThread instance to the
    next, a noise far above a 5% difference. On one CPU the run-to-run spread is about 1%.
    Threads started before entering keep their affinity, so start the competitors inside.
    """
    getter = getattr(os, "sched_getaffinity", None)
    setter = getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        yield False
        return
    before = getter(0)
    setter(0, {min(before)})
    try:
        yield True
    finally:
        setter(0, before)


def overhead_verdict(label: str, ratio: float, limit: float) -> str:
    """A target line for a cost ratio ``on / off`` (time per operation) against ``limit``."""
    verdict = "**met**" if ratio <= limit else "**NOT met**"
    percent = round(100 * (ratio - 1), 1) + 0.0  # + 0.0: no "-0.0%"
    return (
        f"- {label}: {ratio:.3f}x, overhead {percent:+.1f}% "
        f"(target ≤ {100 * (limit - 1):.0f}%): {verdict}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, key: str) -> str:
    """Render a GitHub-flavoured markdown table; also kept as ``key``'s rows in the JSON results.

    ``key`` names the table in ``perf/results/<bench>.json`` (stable across runs and ``--quick``:
    ``perf/charts.py`` looks tables up by it).
    """

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    _results.keep_table(key, headers, rows, text)
    return text


def run_main(bench: str, report: Callable[..., str], description: str) -> None:
    """``python -m perf.<bench> [--quick]``: print the report, write its JSON results."""
    args = parse_args(description)
    command = f"python -m perf.{bench}{' --quick' if args.quick else ''}"
    print(
        _results.record(bench, lambda: report(quick=args.quick), quick=args.quick, command=command)
    )


@contextlib.contextmanager
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A plain asyncio loop run forever by a daemon thread: the floor's loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=main, name="bench-floor-loop", daemon=True)
    thread.start()
    ready.wait()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()


def voluntary_switches(native_id: int | None) -> int | None:
    """Voluntary context switches (wake-ups) of one thread of this process so far; None where
    there is no Linux ``/proc``."""
    path = Path(f"/proc/self/task/{native_id}/status")
    if native_id is None or not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return None


def median_rows(samples: dict[str, list[float]], base: str) -> list[list[object]]:
    """Rows ``[name, median µs, slowest µs, "N.NNx" of base's median]`` of per-operation
    samples in seconds (one value per burst), in ``samples``' order."""
    floor = statistics.median(samples[base])
    return [
        [
            name,
            statistics.median(per) * 1e6,
            max(per) * 1e6,
            f"{statistics.median(per) / floor:.2f}x",
        ]
        for name, per in samples.items()
    ]
