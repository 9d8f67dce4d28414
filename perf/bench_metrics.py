"""What a Prometheus scrape costs: ``generate_latest`` of a loop with channels and enrichers.

One LoopThread with its metrics on a fresh ``CollectorRegistry``, 10 real channels and 2 real
enricher chains of 5 enrichers each, all with non-zero counters (items put and handled, events
enriched) and idle while scraped, so the figure is their ``stats()`` snapshots, the collector's
and the exposition's, not the channels' work. The collector reads every value from ``stats()``
at scrape time, so this is where the counters cost something; the hot paths pay only the
per-call histogram, measured with metrics on and off in perf/bench_calls.py (lt.run) and
perf/bench_channel.py (channel throughput).

Run: ``python -m perf.bench_metrics [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

import loopthread
from perf._harness import markdown_table, p99, run_main, timed

__all__ = ["report"]


@dataclass(frozen=True, slots=True)
class _Plan:
    scrapes: int


FULL = _Plan(scrapes=300)
QUICK = _Plan(scrapes=30)

CHANNELS = 10
CHAINS = 2
ENRICHERS = 5  # per chain


async def noop(x: int) -> int:
    return x


async def _handle(batch: list[int]) -> None:
    return None


def _make_enricher(index: int) -> Any:
    async def enrich(event: Mapping[str, Any]) -> dict[str, Any]:
        return {f"field{index}": index}

    return loopthread.enricher(enrich, name=f"e{index}")


def _scrape(plan: _Plan) -> tuple[list[float], int]:
    """Seconds per scrape (one sample each) and the exposition's size in bytes."""
    registry = CollectorRegistry()
    with loopthread.LoopThread("bench-scrape", metrics_registry=registry) as lt:
        # Real components, attached to lt as any user's are; the collector finds them there.
        channels = [lt.channel(_handle, name=f"channel-{c}") for c in range(CHANNELS)]
        for channel in channels:
            for i in range(100):
                channel.put(i)
        for channel in channels:
            channel.flush(timeout=10)
        chains = [
            loopthread.EnricherChain(
                [_make_enricher(i) for i in range(ENRICHERS)],
                loop_thread=lt,
                name=f"chain-{c}",
            )
            for c in range(CHAINS)
        ]
        for chain in chains:
            for i in range(100):
                chain.enrich_sync({"n": i})
        for _ in range(100):  # something in the call histogram
            lt.run(noop(1))
        size = len(generate_latest(registry))
        samples: list[float] = []
        timed(lambda: generate_latest(registry), plan.scrapes, samples=samples)
    return samples, size


def report(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section (table and notes)."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    with capture_logs():  # the loop logs its start and stop; keep the report clean
        samples, size = _scrape(plan)
    elapsed = time.perf_counter() - started
    row = [
        f"1 loop, {CHANNELS} channels, {CHAINS} chains x {ENRICHERS} enrichers",
        f"{size:,}",
        statistics.median(samples) * 1e6,
        p99(samples) * 1e6,
    ]
    return "\n".join(
        [
            f"python {sys.version.split()[0]} on {sys.platform}; "
            f"{'--quick, ' if quick else ''}{elapsed:.1f} s.",
            "",
            f"### One scrape, generate_latest ({plan.scrapes} scrapes)",
            "",
            markdown_table(
                ["what is scraped", "bytes", "median µs", "p99 µs"], [row], key="scrape"
            ),
            "",
            "No target: a scrape runs on the HTTP server's thread (holding the GIL for that "
            "long), once per scrape interval (typically 15 s or more), not on the loop. The "
            "metrics' cost on the hot paths (target ≤ 5%) is measured in bench_calls (lt.run) "
            "and bench_channel (throughput), metrics on and off in the same run.",
        ]
    )


if __name__ == "__main__":
    run_main("bench_metrics", report, __doc__ or "")
