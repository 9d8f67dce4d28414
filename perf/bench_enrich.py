"""Enricher chains: concurrency of the enrichers, the sync hand-off, and memory over many events.

Three sections, each with its competitors interleaved round by round in one run:

* five enrichers that each await 10 ms of simulated I/O (``asyncio.sleep(0.01)``), through
  ``chain.enrich_sync``: ``mode="parallel"`` against ``mode="sequential"``;
* three quick async enrichers (they return without suspending, like a cache hit), from a sync
  caller on the main thread: ``chain.enrich_sync`` (parallel and sequential) against the pattern
  it replaces, ``ThreadPoolExecutor.submit(asyncio.run, run_all(event)).result()``, and against
  ``asyncio.run(run_all(event))`` per event on the main thread (which installs and restores a
  SIGINT handler on every call); ``run_all`` awaits the three one after another and merges;
* the floor: ``lt.run(run_all(event))``, the hand-off with no chain around it;
* memory: RSS and tracemalloc growth over many ``enrich_sync`` calls after a warm-up, and
  ``lt.stats().loops_created``;
* bursts: 200 records enriched at once (as a log handler's batch) against a lookup service
  with 4 connections and 20 ms per lookup, with a 0.2 s budget, then 20 calm records: with
  ``max_concurrency=4`` and without a limit;
* the ``loopthread.structlog.enrich`` processor: what a log call costs, how far past its
  ``timeout`` a call returns when the loop is blocked, and 50 calls from async code.

Run: ``python -m perf.bench_enrich [--quick]``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.testing import LogCapture, capture_logs

import loopthread
from loopthread.structlog import enrich as structlog_enrich
from perf._harness import Result, interleave, markdown_table, run_main, timed

__all__ = ["report"]

Event = Mapping[str, Any]
EVENT: dict[str, Any] = {"user_id": 42, "host": "web-1", "msg": "login"}


@dataclass(frozen=True, slots=True)
class _Plan:
    io_rounds: int
    io_calls: int  # events per competitor per round, 10 ms-enrichers
    quick_rounds: int
    quick_calls: int  # events per competitor per round, quick enrichers
    memory_warmup: int
    memory_calls: int
    blocked_calls: int  # log calls on a blocked loop
    log_calls: int  # log calls timed on a free loop


FULL = _Plan(
    io_rounds=8,
    io_calls=20,
    quick_rounds=12,
    quick_calls=400,
    memory_warmup=5_000,
    memory_calls=100_000,
    blocked_calls=40,
    log_calls=3_000,
)
QUICK = _Plan(
    io_rounds=3,
    io_calls=5,
    quick_rounds=3,
    quick_calls=100,
    memory_warmup=1_000,
    memory_calls=10_000,
    blocked_calls=10,
    log_calls=500,
)

IO_TARGET = 4.0
SYNC_TARGET = 2.0
MEMORY_TARGET = 1 << 20
BURST_TARGET = 0.95  # of the burst enriched with max_concurrency=4 (calm traffic: 100%)
BOUND_TARGET = 0.02  # seconds a log call may take past its timeout on a blocked loop
ASYNC_TARGET = 0.005  # seconds for 50 log calls from async code


# ---------------------------------------------------------------------- the enrichers


def _io_enricher(index: int) -> Callable[[Event], Any]:
    async def io(event: Event) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # simulated I/O: a lookup over the network
        return {f"io{index}": index}

    io.__qualname__ = f"io{index}"
    return io


async def user(event: Event) -> dict[str, Any]:
    return {"user": f"user-{event['user_id']}"}


async def region(event: Event) -> dict[str, Any]:
    return {"region": "eu-west" if event["host"].startswith("web") else "us-east"}


async def flags(event: Event) -> dict[str, Any]:
    return {"flags": ("new-login",)}


QUICK_ENRICHERS = (user, region, flags)


async def run_all(event: Event) -> dict[str, Any]:
    """What code in the wild does: await each enricher in turn, merge into a copy."""
    out = dict(event)
    for enrich in QUICK_ENRICHERS:
        fields = await enrich(event)
        if fields:
            out.update(fields)
    return out


# ---------------------------------------------------------------------- sections


def _round(call: Callable[[], object], n: int, samples: list[float]) -> Callable[[], float]:
    return lambda: timed(call, n, samples=samples)


def _section(competitors: dict[str, Callable[[], object]], rounds: int, n: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in competitors}
    results = interleave(
        {name: _round(call, n, samples[name]) for name, call in competitors.items()},
        rounds,
    )
    for name, result in results.items():
        result.samples = samples[name][n:]  # drop the warm-up round's samples
    return results


PARALLEL = "enrich_sync, parallel"
SEQUENTIAL = "enrich_sync, sequential"
EXECUTOR = "executor.submit(asyncio.run, run_all(e)).result()"
ASYNCIO_RUN = "asyncio.run(run_all(e)) per event, main thread"
FLOOR = "lt.run(run_all(e)) (the hand-off alone, no chain)"


def _io_section(lt: loopthread.LoopThread, plan: _Plan) -> dict[str, Result]:
    enrichers = [_io_enricher(i) for i in range(5)]
    parallel = loopthread.EnricherChain(enrichers, loop_thread=lt, timeout=1.0)
    sequential = loopthread.EnricherChain(enrichers, mode="sequential", loop_thread=lt, timeout=1.0)
    expected = {**EVENT, **{f"io{i}": i for i in range(5)}}
    for chain in (parallel, sequential):
        assert chain.enrich_sync(EVENT) == expected
    return _section(
        {
            PARALLEL: lambda: parallel.enrich_sync(EVENT),
            SEQUENTIAL: lambda: sequential.enrich_sync(EVENT),
        },
        plan.io_rounds,
        plan.io_calls,
    )


def _sync_section(
    lt: loopthread.LoopThread, pool: ThreadPoolExecutor, plan: _Plan
) -> dict[str, Result]:
    parallel = loopthread.EnricherChain(QUICK_ENRICHERS, loop_thread=lt)
    sequential = loopthread.EnricherChain(QUICK_ENRICHERS, mode="sequential", loop_thread=lt)
    expected = asyncio.run(run_all(EVENT))
    for chain in (parallel, sequential):
        assert chain.enrich_sync(EVENT) == expected
    return _section(
        {
            PARALLEL: lambda: parallel.enrich_sync(EVENT),
            SEQUENTIAL: lambda: sequential.enrich_sync(EVENT),
            EXECUTOR: lambda: pool.submit(asyncio.run, run_all(EVENT)).result(),
            ASYNCIO_RUN: lambda: asyncio.run(run_all(EVENT)),
            FLOOR: lambda: lt.run(run_all(EVENT)),
        },
        plan.quick_rounds,
        plan.quick_calls,
    )


@dataclass(frozen=True, slots=True)
class _Memory:
    calls: int
    rss_growth: int | None
    traced_growth: int
    traced_peak: int
    loops_created: int
    seconds: float


def _rss() -> int | None:
    """Resident set size in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _memory(lt: loopthread.LoopThread, plan: _Plan) -> _Memory:
    chain = loopthread.EnricherChain(QUICK_ENRICHERS, loop_thread=lt)
    enrich = chain.enrich_sync
    for _ in range(plan.memory_warmup):
        enrich(EVENT)
    started = time.perf_counter()

    # RSS without tracemalloc (which has its own footprint), then the same run traced.
    gc.collect()
    rss_before = _rss()
    for _ in range(plan.memory_calls):
        enrich(EVENT)
    gc.collect()
    rss_after = _rss()
    rss_growth = None if rss_before is None or rss_after is None else rss_after - rss_before

    tracemalloc.start()
    gc.collect()
    traced_before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(plan.memory_calls):
        enrich(EVENT)
    gc.collect()
    traced_after, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert chain.stats().events == plan.memory_warmup + 2 * plan.memory_calls
    return _Memory(
        calls=plan.memory_calls,
        rss_growth=rss_growth,
        traced_growth=traced_after - traced_before,
        traced_peak=traced_peak - traced_before,
        loops_created=lt.stats().loops_created,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------- bursts


class _Pool:
    """A lookup service with 4 connections, 20 ms per lookup: calls beyond 4 wait inside."""

    def __init__(self) -> None:
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, event: Event) -> dict[str, Any]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(4)
        async with self._semaphore:
            await asyncio.sleep(0.02)  # simulated I/O: the lookup
        return {"user": f"user-{event['n']}"}


@dataclass(frozen=True, slots=True)
class _Burst:
    label: str
    enriched: int
    seconds: float
    calm: int
    timeouts: int
    queue_time: float
    own_time: float
    circuit: str


def _burst(lt: loopthread.LoopThread, limit: int | None) -> _Burst:
    chain = loopthread.EnricherChain(
        [loopthread.enricher(_Pool(), name="users", max_concurrency=limit)],
        timeout=0.2,
        loop_thread=lt,
    )

    async def batch() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(chain.enrich({"n": n}) for n in range(200))))

    started = time.perf_counter()
    results = lt.run(batch())
    seconds = time.perf_counter() - started
    calm = [chain.enrich_sync({"n": n}) for n in range(20)]
    stats = chain.stats().enrichers[0]
    return _Burst(
        label=f"max_concurrency={limit}" if limit else "no limit",
        enriched=sum("user" in r for r in results),
        seconds=seconds,
        calm=sum("user" in r for r in calm),
        timeouts=stats.timeouts,
        queue_time=stats.queue_time,
        own_time=stats.time,
        circuit=stats.circuit,
    )


# ---------------------------------------------------------------------- the enrich() processor


@dataclass(frozen=True, slots=True)
class _LogCalls:
    per_call: float  # seconds per log call, loop free
    past_timeout_median: float  # seconds past timeout=0.05, loop blocked
    past_timeout_max: float
    async_50: float  # seconds for 50 calls from a coroutine


def _log_calls(plan: _Plan) -> _LogCalls:
    lt = loopthread.LoopThread("bench-enrich-log", cancel_grace=1.0).start()
    chain = loopthread.EnricherChain(QUICK_ENRICHERS, loop_thread=lt)
    processor = structlog_enrich(chain, timeout=0.05)
    structlog.configure(
        processors=[structlog.processors.add_log_level, processor, LogCapture()],
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger()
    try:
        log.info("warm-up", **EVENT)
        per_call = timed(lambda: log.info("login", **EVENT), plan.log_calls)
        past: list[float] = []
        for _ in range(plan.blocked_calls):
            gate = threading.Event()
            blocked = threading.Event()

            async def busy(
                gate: threading.Event = gate, blocked: threading.Event = blocked
            ) -> None:
                blocked.set()
                gate.wait(10)  # the loop thread is blocked: a busy loop

            blocker = lt.submit(busy())
            blocked.wait(10)
            started = time.perf_counter()
            log.info("login", **EVENT)
            past.append(time.perf_counter() - started - 0.05)
            gate.set()
            blocker.result(10)

        async def from_async_code() -> float:
            started = time.perf_counter()
            for _ in range(50):
                log.info("login", **EVENT)
            return time.perf_counter() - started

        async_50 = asyncio.run(from_async_code())
    finally:
        lt.stop()
        structlog.reset_defaults()
    return _LogCalls(
        per_call=per_call,
        past_timeout_median=sorted(past)[len(past) // 2],
        past_timeout_max=max(past),
        async_50=async_50,
    )


# ---------------------------------------------------------------------- the report


def _us(seconds: float) -> float:
    return seconds * 1e6


def _ms(seconds: float) -> float:
    return seconds * 1e3


def _table(
    results: dict[str, Result], baseline: str, scale: Callable[[float], float], *, key: str
) -> str:
    base = results[baseline].median
    rows = [
        [f"`{name}`", scale(r.median), scale(r.p99), f"{base / r.median:.2f}x"]
        for name, r in results.items()
    ]
    return markdown_table(["method", "median", "p99", f"speed vs `{baseline}`"], rows, key=key)


def _kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:+,.0f} KiB"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section (tables, targets, notes)."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    with (
        capture_logs() as logs,
        loopthread.LoopThread("bench-enrich") as lt,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        io = _io_section(lt, plan)
        sync = _sync_section(lt, pool, plan)
        memory = _memory(lt, plan)
        bursts = [_burst(lt, 4), _burst(lt, None)]
    calls = _log_calls(plan)
    elapsed = time.perf_counter() - started
    problems = [e for e in logs if e.get("log_level") in ("warning", "error", "critical")]

    io_ratio = io[SEQUENTIAL].median / io[PARALLEL].median
    executor_ratio = sync[EXECUTOR].median / sync[PARALLEL].median
    run_ratio = sync[ASYNCIO_RUN].median / sync[PARALLEL].median
    growth = max(memory.traced_growth, memory.rss_growth or 0)
    limited = bursts[0]
    lines = [
        f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs; "
        f"{'--quick, ' if quick else ''}{elapsed:.0f} s.",
        "",
        f"### Five enrichers awaiting 10 ms each: ms per event ({plan.io_rounds} interleaved "
        f"rounds x {plan.io_calls} events)",
        "",
        _table(io, SEQUENTIAL, _ms, key="io"),
        "",
        f"### Three quick async enrichers from a sync caller: µs per event "
        f"({plan.quick_rounds} interleaved rounds x {plan.quick_calls} events)",
        "",
        _table(sync, EXECUTOR, _us, key="sync"),
        "",
        f"### Memory over {memory.calls:,} enrich_sync calls after {plan.memory_warmup:,} "
        "warm-up calls",
        "",
        markdown_table(
            ["RSS growth", "tracemalloc growth", "tracemalloc peak above start", "loops_created"],
            [
                [
                    _kib(memory.rss_growth),
                    _kib(memory.traced_growth),
                    _kib(memory.traced_peak),
                    memory.loops_created,
                ]
            ],
            key="memory",
        ),
        "",
        "### A burst of 200 records against 4 connections x 20 ms, budget 0.2 s; then 20 calm",
        "",
        markdown_table(
            [
                "enricher",
                "burst enriched",
                "burst took",
                "calm enriched",
                "timeouts",
                "queued (s, total)",
                "own time (s, total)",
                "circuit",
            ],
            [
                [
                    f"`{b.label}`",
                    f"{b.enriched}/200",
                    f"{b.seconds:.2f} s",
                    f"{b.calm}/20",
                    b.timeouts,
                    f"{b.queue_time:.1f}",
                    f"{b.own_time:.1f}",
                    b.circuit,
                ]
                for b in bursts
            ],
            key="burst",
        ),
        "",
        "### `loopthread.structlog.enrich(chain, timeout=0.05)`: one log call",
        "",
        markdown_table(
            [
                "loop free: per call",
                "loop blocked: past the timeout, median",
                "max",
                "50 calls from async code",
            ],
            [
                [
                    f"{_us(calls.per_call):.1f} µs",
                    f"{_ms(calls.past_timeout_median):.2f} ms",
                    f"{_ms(calls.past_timeout_max):.2f} ms",
                    f"{_ms(calls.async_50):.2f} ms",
                ]
            ],
            key="structlog_enrich",
        ),
        "",
        "### Targets",
        "",
        f"- parallel >= {IO_TARGET:.0f}x faster than sequential (five 10 ms enrichers): "
        f"{io_ratio:.2f}x, {_met(io_ratio >= IO_TARGET)}.",
        f"- enrich_sync >= {SYNC_TARGET:.0f}x faster than executor.submit(asyncio.run, ...): "
        f"{executor_ratio:.2f}x, {_met(executor_ratio >= SYNC_TARGET)} "
        f"(and {run_ratio:.2f}x faster than asyncio.run per event on the main thread).",
        f"- memory growth <= 1 MiB over {memory.calls:,} calls: {_kib(growth)}, "
        f"{_met(growth <= MEMORY_TARGET)}; loops_created == 1: "
        f"{_met(memory.loops_created == 1)}.",
        f"- a burst with max_concurrency=4 enriched >= {BURST_TARGET:.0%}: "
        f"{limited.enriched / 200:.0%}, calm traffic after it 100%: {limited.calm / 20:.0%}, "
        f"{_met(limited.enriched >= BURST_TARGET * 200 and limited.calm == 20)}.",
        f"- a log call on a blocked loop returns within its timeout + "
        f"{_ms(BOUND_TARGET):.0f} ms: max {_ms(calls.past_timeout_max):.2f} ms past it, "
        f"{_met(calls.past_timeout_max <= BOUND_TARGET)} (it took 2.1 s: cancel_grace twice).",
        f"- 50 log calls from async code <= {_ms(ASYNC_TARGET):.0f} ms: "
        f"{_ms(calls.async_50):.2f} ms, {_met(calls.async_50 <= ASYNC_TARGET)} (it took 633 ms).",
        "",
        "Notes:",
        "- median is the median over rounds of the mean time per event; p99 is over every "
        "single event; speed = the baseline's median / this one's (higher is faster).",
        f"- `{FLOOR}` is the blocking facade with the same three awaits and no chain: "
        "the part of enrich_sync's time that is the hop between threads (which a busy "
        "machine makes slower and noisier).",
        "- the executor competitor uses one shared ThreadPoolExecutor of 4 workers; "
        "asyncio.run creates and closes a new loop for every event.",
        "- RSS is measured without tracemalloc, then tracemalloc over a second run of the "
        "same length (tracing slows the calls down several times).",
    ]
    if quick:
        lines.append(f"- --quick: {memory.calls:,} calls, not 100,000; rerun without it.")
    if problems:
        lines.append(f"- {len(problems)} warnings were logged during the run: {problems[:3]}")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main("bench_enrich", report, __doc__ or "")
