"""Enricher deadlines: one timer serves every call of an enricher in flight, and each call still
gets its own full timeout, from its own start; nothing is left scheduled once the calls end."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from loopthread import EnricherChain, LoopThread, enricher
from tests.test_monitor import voluntary_switches

TIMEOUT = 0.2
SLACK = 0.005  # the enricher reads the clock a few µs after the chain started its call


class Timed:
    """Hangs until cancelled (calls whose id is in ``hang``) or returns after one loop
    iteration; records, per call id, the loop's time at its start and at its cancellation."""

    name = "timed"

    def __init__(self, hang: set[int] | None = None) -> None:
        self.hang = hang
        self.started: dict[int, float] = {}
        self.cancelled: dict[int, float] = {}

    async def __call__(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        loop = asyncio.get_running_loop()
        call = event["id"]
        self.started[call] = loop.time()
        if self.hang is not None and call not in self.hang:
            await asyncio.sleep(0)  # it suspends: its deadline is armed, then it ends
            return {"seen": call}
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled[call] = loop.time()
            raise
        return {"never": True}


def test_every_call_of_a_burst_times_out_after_its_own_full_timeout(lt: LoopThread) -> None:
    """Two waves of hanging calls, the second begun halfway through the first's timeout: every
    call is cancelled no sooner than its own start plus the timeout, none later than it needs,
    and each is counted once."""
    timed = Timed()
    chain = EnricherChain([timed], loop_thread=lt, timeout=TIMEOUT)

    async def two_waves() -> list[dict[str, Any]]:
        first = [asyncio.ensure_future(chain.enrich({"id": i})) for i in range(25)]
        # The scenario itself: the second wave begins while the first is half way to its
        # deadline (a timer serving both must not end the second wave with the first).
        await asyncio.sleep(TIMEOUT / 2)
        second = [asyncio.ensure_future(chain.enrich({"id": i})) for i in range(25, 50)]
        return await asyncio.gather(*first, *second)

    assert lt.run(two_waves(), timeout=10) == [{"id": i} for i in range(50)]  # unenriched
    assert sorted(timed.cancelled) == list(range(50))
    assert (
        min(timed.started[i] for i in range(25, 50)) - max(timed.started[i] for i in range(25))
        >= TIMEOUT / 2 - SLACK
    )
    for call, began in timed.started.items():
        waited = timed.cancelled[call] - began
        assert TIMEOUT - SLACK <= waited <= TIMEOUT + 5.0, (call, waited)
    stats = chain.stats().enrichers[0]
    assert (stats.calls, stats.timeouts, stats.ok, stats.failures) == (50, 50, 0, 0)


def test_a_call_stuck_behind_others_holds_up_none_of_them_nor_their_memory(
    lt: LoopThread,
) -> None:
    """One call hangs while 2,000 calls of the same enricher begin and end behind it: they are
    all enriched, the chain lets go of their tasks while the stuck one still runs, and the
    stuck one still gets its fields once it returns."""
    gate = asyncio.Event()
    tasks: list[weakref.ref[asyncio.Task[Any]]] = []

    async def lookup(event: Mapping[str, Any]) -> Mapping[str, Any]:
        if event["id"] == 0:
            await gate.wait()
        else:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(weakref.ref(task))
            await asyncio.sleep(0)  # it suspends: its deadline is armed, then it ends
        return {"seen": event["id"]}

    chain = EnricherChain([lookup], loop_thread=lt, timeout=30.0)
    stuck = lt.submit(chain.enrich({"id": 0}))
    futures = [lt.submit(chain.enrich({"id": i})) for i in range(1, 2001)]
    assert [f.result(timeout=10)["seen"] for f in futures] == list(range(1, 2001))
    del futures
    lt.run_sync(gc.collect)
    assert not stuck.done()
    assert len(tasks) == 2000
    assert sum(ref() is not None for ref in tasks) <= 100  # ended calls are let go of
    lt.call_soon(gate.set).result(timeout=5)
    assert stuck.result(timeout=10) == {"id": 0, "seen": 0}
    stats = chain.stats().enrichers[0]
    assert (stats.calls, stats.ok, stats.timeouts) == (2001, 2001, 0)


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_closing_a_suspended_enrich_closes_the_enricher_and_its_deadline(
    lt: LoopThread, timeout: float | None
) -> None:
    """``enrich()`` closed while its enricher waits (its task destroyed, the loop closing): the
    enricher is closed too (its ``finally`` runs) and the close completes (no "coroutine
    ignored GeneratorExit"), counted as neither a fault nor a timeout; an enricher that itself
    raises GeneratorExit is a fault like any other (tests/reliability/test_faults.py)."""
    cleaned: list[str] = []

    async def waits(event: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")
        return {"never": True}

    chain = EnricherChain([waits], loop_thread=lt, timeout=timeout)

    async def scenario() -> None:
        coro = chain.enrich({"id": 1})
        coro.send(None)  # the enricher's first step: it waits
        coro.close()

    lt.run(scenario(), timeout=5)
    assert cleaned == ["finally"]
    stats = chain.stats().enrichers[0]
    assert (stats.calls, stats.ok, stats.failures, stats.timeouts) == (1, 0, 0, 0)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_calls_that_ended_leave_no_timer_to_wake_the_loop() -> None:
    """After bursts of calls that end well before their deadlines, the idle loop sleeps: each
    enricher's timer goes with its last call, so no deadline wakes it (five enrichers with
    five timeouts would wake it five times)."""
    timeouts = (0.2, 0.35, 0.5, 0.65, 0.8)
    with LoopThread("deadlines-idle", lag_interval=None) as lt:
        chain = EnricherChain(
            [enricher(Timed(hang=set()), name=f"e{t}", timeout=t) for t in timeouts],
            loop_thread=lt,
        )
        futures = [lt.submit(chain.enrich({"id": i})) for i in range(200)]
        assert [f.result(timeout=10)["seen"] for f in futures] == list(range(200))
        before = voluntary_switches(lt.thread)
        time.sleep(1.0)  # the measurement window itself, past every deadline
        after = voluntary_switches(lt.thread)
        assert after - before <= 2
        assert [s.ok for s in chain.stats().enrichers] == [200] * 5
