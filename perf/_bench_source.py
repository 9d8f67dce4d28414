"""``lt.channel_from`` on a ``multiprocessing.Queue``, against what it replaces (a section of
perf/bench_channel.py; ``python -m perf.bench_channel [--quick]`` runs it with the rest).

Alone: ``python -m perf._bench_source [--quick]`` (this section only).

A producer *process* (spawned) puts ``time.perf_counter()`` into a fresh ``multiprocessing.Queue``
every ``interval`` (1 ms, 50 ms); the consumer records ``perf_counter() - t`` per event
(``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux: one clock for every process). Competitors,
interleaved round by round, each on its own queue and producer:

* ``channel_from``, sync and async handler: the loop thread watches the queue's pipe
  (``add_reader``), no thread in between (LoopThread defaults: lag probe, watchdog, metrics);
* the 1 ms poller: a thread looping ``get_nowait()`` and ``time.sleep(0.001)`` when empty
  (daglite's ``EventProcessor``, which ``channel_from`` replaces);
* a thread blocked in ``q.get()``: the floor for any reader (a pump thread feeding a channel
  costs this plus a cross-thread hand-off).

Idle: the consumer thread's wake-ups per second with nothing in the queue (the loop thread for
``channel_from``, on a LoopThread with ``lag_interval=None``; the defaults cost it nothing
either: see bench_idle).
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import loopthread
from perf import _mp_producer
from perf._harness import markdown_table, p99, parse_args, voluntary_switches

__all__ = ["SourcePlan", "section"]

SPAWN = multiprocessing.get_context("spawn")

FROM_SYNC = "lt.channel_from(mp.Queue), sync handler"
FROM_ASYNC = "lt.channel_from(mp.Queue), async handler"
POLLER = "1 ms poller (get_nowait + sleep)"
BLOCKED = "thread blocked in q.get() (floor)"
RATES = {"1 event/ms": 0.001, "1 event/50 ms": 0.05}


@dataclass(frozen=True)
class SourcePlan:
    rounds: int
    fast_events: int  # at 1 event/ms
    slow_events: int  # at 1 event/50 ms
    idle_seconds: float


FULL = SourcePlan(rounds=2, fast_events=2000, slow_events=150, idle_seconds=3.0)
QUICK = SourcePlan(rounds=1, fast_events=400, slow_events=24, idle_seconds=1.0)

#: Start consuming ``events`` from a queue; return (wait for the end and get the latencies,
#: the consumer's thread).
Runner = Callable[[Any, int], tuple[Callable[[], list[float]], threading.Thread | None]]


def _produce(q: Any, interval: float, events: int) -> None:
    proc = SPAWN.Process(target=_mp_producer.paced, args=(q, interval, events))
    proc.start()
    proc.join(events * interval + 60)
    if proc.exitcode != 0:
        raise RuntimeError(f"the producer process failed ({proc.exitcode})")


def _channel_from(lt: loopthread.LoopThread, *, sync: bool) -> Runner:
    def start(q: Any, events: int) -> tuple[Callable[[], list[float]], threading.Thread | None]:
        seen: list[float] = []
        clock = time.perf_counter

        def handle(batch: list[float]) -> None:
            now = clock()
            seen.extend(now - t for t in batch)

        async def ahandle(batch: list[float]) -> None:
            now = clock()
            seen.extend(now - t for t in batch)

        ch = lt.channel_from(q, handle if sync else ahandle)

        def finish() -> list[float]:
            ch.flush(timeout=30)
            ch.close(timeout=5)
            return seen

        return finish, lt.thread

    return start


def _thread(poll: bool) -> Runner:
    def start(q: Any, events: int) -> tuple[Callable[[], list[float]], threading.Thread | None]:
        seen: list[float] = []
        clock = time.perf_counter

        def poller() -> None:
            get, sleep = q.get_nowait, time.sleep
            while len(seen) < events:
                try:
                    t = get()
                except queue.Empty:
                    sleep(0.001)
                    continue
                seen.append(clock() - t)

        def blocked() -> None:
            get = q.get
            for _ in range(events):
                t = get()
                seen.append(clock() - t)

        thread = threading.Thread(target=poller if poll else blocked)
        thread.start()

        def finish() -> list[float]:
            thread.join(30)
            return seen

        return finish, thread

    return start


def _latency(lt: loopthread.LoopThread, plan: SourcePlan) -> dict[tuple[str, str], list[float]]:
    competitors: dict[str, Runner] = {
        FROM_SYNC: _channel_from(lt, sync=True),
        FROM_ASYNC: _channel_from(lt, sync=False),
        POLLER: _thread(poll=True),
        BLOCKED: _thread(poll=False),
    }
    events = {"1 event/ms": plan.fast_events, "1 event/50 ms": plan.slow_events}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(plan.rounds):
        for rate, interval in RATES.items():
            for name, start in competitors.items():
                q = SPAWN.Queue()
                finish, _ = start(q, events[rate])
                _produce(q, interval, events[rate])
                seen = finish()
                if len(seen) != events[rate]:
                    raise RuntimeError(f"{name}: {len(seen)} of {events[rate]} events")
                results.setdefault((name, rate), []).extend(seen)
    return results


def _idle_rate(native_id: int | None, seconds: float) -> float | None:
    before = voluntary_switches(native_id)
    time.sleep(seconds)  # the measurement window: nothing else runs
    after = voluntary_switches(native_id)
    return None if before is None or after is None else (after - before) / seconds


def _idle(plan: SourcePlan) -> dict[str, float | None]:
    results: dict[str, float | None] = {}
    with loopthread.LoopThread("bench-source-idle", lag_interval=None) as lt:
        q = SPAWN.Queue()
        got = threading.Event()
        ch: loopthread.SourceChannel[float] = lt.channel_from(q, lambda batch: got.set())
        q.put(0.0)
        got.wait(10)
        ch.flush(timeout=10)
        time.sleep(0.2)  # let the consumer park and the loop settle before the window
        results[FROM_SYNC] = _idle_rate(lt.thread.native_id, plan.idle_seconds)
        ch.close(timeout=5)
    for name, poll in ((POLLER, True), (BLOCKED, False)):
        q = SPAWN.Queue()
        finish, thread = _thread(poll)(q, 1)
        assert thread is not None
        time.sleep(0.2)  # the thread is in its loop (or blocked in get()) by then
        results[name] = _idle_rate(thread.native_id, plan.idle_seconds)
        q.put(0.0)
        finish()
    return results


def _table(latency: dict[tuple[str, str], list[float]], idle: dict[str, float | None]) -> str:
    rows = []
    for (name, rate), seen in latency.items():
        poll = latency[(POLLER, rate)]
        rows.append(
            [
                rate,
                name,
                statistics.median(seen) * 1e6,
                p99(seen) * 1e6,
                f"{statistics.median(seen) / statistics.median(poll):.2f}x",
                f"{p99(seen) / p99(poll):.2f}x",
                len(seen),
            ]
        )
    rows.sort(key=lambda r: (list(RATES).index(str(r[0])), str(r[1])))
    table = markdown_table(
        ["rate", "consumer", "p50 µs", "p99 µs", "p50 vs poller", "p99 vs poller", "events"],
        rows,
        key="source_latency",
    )
    idle_rows = [[n, "n/a" if w is None else f"{w:.1f}"] for n, w in idle.items()]
    return (
        table
        + "\n\n"
        + markdown_table(["idle consumer", "wake-ups/s"], idle_rows, key="source_idle")
    )


Latency = dict[tuple[str, str], list[float]]


def _targets(latency: Latency, idle: dict[str, float | None]) -> list[str]:
    lines = []

    def line(text: str, value: float, target: str, ok: bool, unit: str = "x") -> None:
        verdict = "**met**" if ok else "**NOT met**"
        lines.append(f"- {text}: {value:.2f}{unit} (target {target}): {verdict}")

    for rate in RATES:
        poll = latency[(POLLER, rate)]
        for name, what in ((FROM_SYNC, "sync"), (FROM_ASYNC, "async")):
            seen = latency[(name, rate)]
            label = f"channel_from ({what} handler) at {rate} / 1 ms poller"
            r50 = statistics.median(seen) / statistics.median(poll)
            line(f"{label}, p50", r50, "≤ 1x", r50 <= 1)
            r99 = p99(seen) / p99(poll)
            line(f"{label}, p99", r99, "≤ 0.2x", r99 <= 0.2)
    wakeups = idle[FROM_SYNC]
    if wakeups is None:
        lines.append("- channel_from idle wake-ups: not measured (needs Linux /proc)")
    else:
        line("channel_from idle wake-ups of the loop thread", wakeups, "0/s", wakeups == 0, "/s")
    return lines


def section(lt: loopthread.LoopThread, quick: bool) -> tuple[str, list[str]]:
    """Run the channel_from benchmark on ``lt``; return its markdown (tables and notes) and
    its target lines."""
    plan = QUICK if quick else FULL
    latency = _latency(lt, plan)
    idle = _idle(plan)
    text = "\n".join(
        [
            f"### lt.channel_from on a multiprocessing.Queue fed by another process "
            f"({plan.rounds} interleaved round{'s' if plan.rounds > 1 else ''}; idle: "
            f"{plan.idle_seconds:.0f} s each)",
            "",
            _table(latency, idle),
            "",
            "Latency is from `q.put(perf_counter())` in the producer process to the consumer "
            "(the producer's feeder thread and the pipe included, for every row). The poller "
            "is daglite's `EventProcessor` pattern; the blocked thread is the floor for any "
            "reader (a pump thread feeding a channel adds a cross-thread hand-off to it).",
        ]
    )
    return text, _targets(latency, idle)


if __name__ == "__main__":
    from structlog.testing import capture_logs

    quick = parse_args(__doc__ or "").quick
    with capture_logs(), loopthread.LoopThread("bench-source") as bench_lt:
        body, target_lines = section(bench_lt, quick)
    print(body, "", "Targets:", "", *target_lines, sep="\n")
