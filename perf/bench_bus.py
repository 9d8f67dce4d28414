"""The event bus and the channel options of issue 16/12: what the caller pays, what a handler
in the executor costs.

Competitors, interleaved round by round in one run, on one LoopThread with the defaults:

* caller-side cost of one call (bursts below maxsize, the consumer held in its handler, so
  that only the caller's work is timed), with a request id in a ``ContextVar`` as a web app
  would have: ``ch.put`` (``context="empty"``, the default),
  ``ch.put`` with ``context="producer"`` (a ``copy_context()`` per item), the bare
  ``copy_context()``, ``reporter.report`` and ``bus.publish`` (both capture the context now;
  their cost before this change is measured against the previous tree in RESULTS.md);
* bus throughput, 1 producer back to back, a sync handler that counts: on the loop, in the
  executor (``run_in="executor"``), and both at once; and the same with 4 producer threads
  (each its own request id, so each its own run of contexts).

Run: ``python -m perf.bench_bus [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextvars
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from structlog.testing import capture_logs

import loopthread
from perf._harness import markdown_table, median_rows, run_main

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


@dataclass(frozen=True)
class Plan:
    put_rounds: int
    put_burst: int
    flow_rounds: int
    flow_events: int


FULL = Plan(put_rounds=15, put_burst=5_000, flow_rounds=7, flow_events=20_000)
QUICK = Plan(put_rounds=3, put_burst=1_000, flow_rounds=2, flow_events=2_000)

PUT_PLAIN = 'ch.put(dict), context="empty"'
PUT_PRODUCER = 'ch.put(dict), context="producer"'
COPY = "contextvars.copy_context() alone"
REPORT = 'reporter.report("t", {"n": 1})'
PUBLISH = 'bus.publish({"type": "t", "n": 1})'


def _put_cost(lt: loopthread.LoopThread, plan: Plan) -> dict[str, list[float]]:
    """Seconds per call over bursts below maxsize, with each consumer held in its handler
    meanwhile (a call then only appends: no wake-up, no consumer competing for the GIL)."""
    gate = asyncio.Event()  # created outside the loop: bound to it at first use (3.10+)
    entered = threading.Event()

    async def hold(_: object) -> None:
        entered.set()
        await gate.wait()

    plain: loopthread.Channel[object] = lt.channel(hold)
    producer: loopthread.Channel[object] = lt.channel(hold, context="producer")
    bus = loopthread.EventBus(lt)
    bus.on("t", hold)
    reporter = bus.reporter()
    data = {"n": 1}
    event = {"type": "t", "n": 1}
    competitors: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        PUT_PLAIN: (lambda: plain.put({"n": 1}), plain.flush),
        PUT_PRODUCER: (lambda: producer.put({"n": 1}), producer.flush),
        COPY: (contextvars.copy_context, lambda: True),
        REPORT: (lambda: reporter.report("t", data), bus.flush),
        PUBLISH: (lambda: bus.publish(event), bus.flush),
    }
    samples: dict[str, list[float]] = {name: [] for name in competitors}
    clock = time.perf_counter
    burst = plan.put_burst
    request_id.set("req-0123456789")
    for round_ in range(plan.put_rounds + 1):
        for name, (call, settle) in competitors.items():
            lt.run_sync(gate.clear)
            entered.clear()
            if name != COPY:
                call()  # the consumer takes this one and waits in the handler
                assert entered.wait(5)
            start = clock()
            for _ in range(burst):
                call()
            per_call = (clock() - start) / burst
            lt.run_sync(gate.set)
            assert settle()
            if round_:  # the first round warms up
                samples[name].append(per_call)
    for ch in (plain, producer):
        ch.close()
    bus.close()
    return samples


def _put_table(samples: dict[str, list[float]]) -> str:
    rows = median_rows(samples, PUT_PLAIN)
    return markdown_table(
        [
            "call",
            "µs per call (median of bursts)",
            "slowest burst µs",
            "vs put",
        ],
        rows,
        key="caller_cost",
    )


# ---------------------------------------------------------------- throughput

LOOP = "handler on the loop"
EXECUTOR = 'handler run_in="executor"'
BOTH = "one of each"
FLOWS = (LOOP, EXECUTOR, BOTH)


def _flow(lt: loopthread.LoopThread, how: str, producers: int, events: int) -> float:
    """Seconds per event from the first report to the end of flush()."""
    bus = loopthread.EventBus(lt)
    counted = 0

    def count(event: dict[str, Any]) -> None:
        nonlocal counted
        counted += 1

    if how in (LOOP, BOTH):
        bus.on("t", count)
    if how in (EXECUTOR, BOTH):
        bus.on("t", count, run_in="executor")
    per_thread = events // producers

    def produce(p: int) -> None:
        request_id.set(f"req-{p}")
        report = bus.reporter().report
        data = {"n": 1}
        for _ in range(per_thread):
            report("t", data)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.flush()
    took = time.perf_counter() - start
    bus.close()
    expected = per_thread * producers * (2 if how == BOTH else 1)
    assert counted == expected, (counted, expected)
    return took / (per_thread * producers)


def _throughput(lt: loopthread.LoopThread, plan: Plan) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(plan.flow_rounds):
        for producers in (1, 4):
            for how in FLOWS:
                per_event = _flow(lt, how, producers, plan.flow_events)
                results.setdefault((how, producers), []).append(per_event)
    return results


def _throughput_table(results: dict[tuple[str, int], list[float]]) -> str:
    rows = []
    for producers in (1, 4):
        base = statistics.median(results[(LOOP, producers)])
        for how in FLOWS:
            per = statistics.median(results[(how, producers)])
            rows.append([producers, how, 1 / per, per * 1e6, f"{per / base:.2f}x"])
    return markdown_table(
        ["producers", "bus", "events/s (median)", "µs per event", "vs on the loop"],
        rows,
        key="throughput",
    )


def report(*, quick: bool = False) -> str:
    """Run the benchmarks; return a markdown report."""
    plan = QUICK if quick else FULL
    with capture_logs(), loopthread.LoopThread("bench-bus") as lt:
        put = _put_cost(lt, plan)
        flows = _throughput(lt, plan)
    return "\n\n".join(
        [
            f"### Caller-side cost of one call ({plan.put_rounds} interleaved rounds x bursts of "
            f"{plan.put_burst:,}, a request id in a ContextVar, each consumer held in its "
            "handler meanwhile)",
            _put_table(put),
            f"### Bus throughput, sync handler that counts ({plan.flow_rounds} interleaved "
            f"rounds x {plan.flow_events:,} events)",
            _throughput_table(flows),
        ]
    )


if __name__ == "__main__":
    run_main("bench_bus", report, __doc__ or "")
