"""Load: many callers and many producers at once; every answer right, nothing lost, RSS flat.

16 threads make facade calls (``run``, ``call``, ``submit``, ``gather``) while 4 producers put
events into one channel: 16 x 5,000 calls and 4 x 100,000 events at CI size (a few seconds on
2 cores), ten times that under ``make soak``. The work runs in rounds; RSS (``VmRSS``) is read
after the first round (warm-up: the allocator's arenas, the executor's threads, janus,
structlog's caches) and after the last.

The bound held: RSS may grow by at most ``RSS_BOUND_KIB`` after warm-up, however many rounds
run. A leak of one small object per call or per event (~100 bytes) would grow it by more than
that over the CI size (480,000 operations x 100 B = 46 MiB), and ten times more under soak.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from typing import Any

from loopthread import LoopThread
from tests.reliability._support import ANSWER_BOUND, SOAK, record, rss_kib, scaled

CALLERS = 16
PRODUCERS = 4
ROUNDS = scaled(4, 20)
CALLS_PER_CALLER = scaled(5_000, 50_000)  # over all rounds
EVENTS_PER_PRODUCER = scaled(100_000, 1_000_000)  # over all rounds
#: Allowed RSS growth after warm-up (KiB). Measured: about 1 MiB (see the README's table).
#: A free-threaded build allocates through mimalloc's per-thread heaps, which hold on to more
#: pages per thread (14 MiB seen there once); a leak grows with the rounds, past either bound.
RSS_BOUND_KIB = (8 if getattr(sys, "_is_gil_enabled", lambda: True)() else 32) * 1024


async def double(x: int) -> int:
    return 2 * x


async def double_suspending(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


class Ledger:
    """The channel's handler: counts items and checks each producer's order (on the loop)."""

    def __init__(self) -> None:
        self.handled = 0
        self.next_seq = [0] * PRODUCERS
        self.out_of_order = 0

    async def __call__(self, batch: list[tuple[int, int]]) -> None:
        next_seq = self.next_seq
        for producer, seq in batch:
            if seq != next_seq[producer]:
                self.out_of_order += 1
            next_seq[producer] = seq + 1
        self.handled += len(batch)


def caller(lt: LoopThread, index: int, start: int, count: int, wrong: list[str]) -> None:
    """Make ``count`` calls, cycling through the facade's entry points; note wrong answers."""
    base = index * 1_000_000
    for i in range(start, start + count):
        x = base + i
        kind = i % 4
        if kind == 0:
            got: Any = lt.run(double(x))
            want: Any = 2 * x
        elif kind == 1:
            got = lt.call(double_suspending, x)
            want = 2 * x
        elif kind == 2:
            got = lt.submit(double(x)).result(ANSWER_BOUND)
            want = 2 * x
        else:
            got = lt.gather(double(x), double_suspending(x + 1))
            want = [2 * x, 2 * x + 2]
        if got != want:
            wrong.append(f"caller {index} call {i}: {got!r} != {want!r}")


def producer(put: Any, index: int, start: int, count: int, refused: list[int]) -> None:
    """Put ``count`` events ``(index, seq)`` in order; note any refusal (there must be none)."""
    for seq in range(start, start + count):
        if not put((index, seq)):
            refused.append(seq)


def run_round(lt: LoopThread, put: Any, rnd: int, wrong: list[str], refused: list[int]) -> None:
    """One round: all callers and producers at once, joined with a bound."""
    calls = CALLS_PER_CALLER // ROUNDS
    events = EVENTS_PER_PRODUCER // ROUNDS
    threads = [
        threading.Thread(target=caller, args=(lt, i, rnd * calls, calls, wrong))
        for i in range(CALLERS)
    ] + [
        threading.Thread(target=producer, args=(put, p, rnd * events, events, refused))
        for p in range(PRODUCERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ANSWER_BOUND * 6)
        assert not t.is_alive(), "a caller or producer was still waiting: something hung"


def test_callers_and_producers_under_load() -> None:
    """16 callers and 4 producers at once: every result right, every event handled exactly
    once in per-producer order, the loop's counters agree, and RSS stays flat after warm-up."""
    lt = LoopThread("load").start()  # monitoring and metrics on, as in production
    ledger = Ledger()
    channel = lt.channel(ledger, maxsize=10_000, overflow="block", batch_size=256)
    wrong: list[str] = []
    refused: list[int] = []
    try:
        run_round(lt, channel.put, 0, wrong, refused)
        assert channel.flush(ANSWER_BOUND)
        gc.collect()
        warm_rss = rss_kib()
        for rnd in range(1, ROUNDS):
            run_round(lt, channel.put, rnd, wrong, refused)
        assert channel.flush(ANSWER_BOUND)
        gc.collect()
        growth = rss_kib() - warm_rss
        stats = lt.stats()
    finally:
        report = lt.stop(5.0)
    calls = CALLERS * (CALLS_PER_CALLER // ROUNDS) * ROUNDS
    events = PRODUCERS * (EVENTS_PER_PRODUCER // ROUNDS) * ROUNDS
    assert wrong == []
    assert refused == []
    assert ledger.handled == events
    assert ledger.out_of_order == 0
    ch = channel.stats()
    assert (ch.put, ch.handled, ch.failed, ch.dropped, ch.unhandled) == (events, events, 0, 0, 0)
    assert stats.calls_ok == calls  # a gather is one call
    assert stats.calls_failed == stats.calls_timed_out == stats.calls_cancelled == 0
    assert report.clean
    assert growth <= RSS_BOUND_KIB, f"RSS grew {growth} KiB after warm-up"
    record(
        "load",
        size="soak" if SOAK else "ci",
        calls=calls,
        events=events,
        wrong=len(wrong),
        lost=events - ledger.handled,
        rss_growth_kib=growth,
        rss_bound_kib=RSS_BOUND_KIB,
    )
