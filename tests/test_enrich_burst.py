"""Bursts: an enricher's ``max_concurrency``, its queue, and a burst counting once toward the
circuit breaker (issue 12, item 5)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import pytest

import loopthread
from loopthread import EnricherChain, LoopThread

Fields = Mapping[str, Any]


class Pool:
    """A lookup service with 4 connections: each lookup holds one for 20 ms.

    Calls beyond 4 wait for a connection inside the enricher, as with a real pool, so a
    burst that is not limited before the enricher spends its budget waiting there.
    """

    def __init__(self, connections: int = 4, lookup: float = 0.02) -> None:
        self.connections = connections
        self.lookup = lookup
        self._semaphore: asyncio.Semaphore | None = None
        self.running = 0
        self.most_running = 0

    async def __call__(self, event: Fields) -> Fields:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.connections)
        async with self._semaphore:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                await asyncio.sleep(self.lookup)  # the workload: a 20 ms lookup
            finally:
                self.running -= 1
        return {"user": f"user-{event['n']}"}


def burst(lt: LoopThread, chain: EnricherChain, n: int) -> list[dict[str, Any]]:
    """``n`` events enriched at once, as a log handler enriches a batch."""

    async def batch() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(chain.enrich({"n": i}) for i in range(n))))

    return lt.run(batch(), timeout=30)


def enriched(results: list[dict[str, Any]]) -> int:
    return sum("user" in r for r in results)


def test_burst_against_a_pool_of_four_is_enriched_then_calm_traffic_too(lt: LoopThread) -> None:
    """200 records at once, a 4-connection 20 ms lookup, a 0.2 s budget: with
    ``max_concurrency=4`` the burst is enriched (>= 95%, was 36 of 200) and the calm traffic
    after it as well (100%, was 0 of 20); the queueing is counted apart from the lookups."""
    pool = Pool()
    chain = EnricherChain(
        [loopthread.enricher(pool, name="users", max_concurrency=4)],
        timeout=0.2,
        loop_thread=lt,
    )
    results = burst(lt, chain, 200)
    assert enriched(results) >= 190
    calm = [chain.enrich_sync({"n": i}) for i in range(20)]
    assert enriched(calm) == 20
    stats = chain.stats().enrichers[0]
    assert stats.max_concurrency == 4
    assert pool.most_running == 4
    assert stats.circuit == "closed"
    assert stats.timeouts == 0
    assert stats.queued >= 190  # all but the first 4 of the burst waited for a place
    # The lookups' own time is about 220 x 20 ms; the waits are much longer and not in it.
    assert stats.time < 220 * 0.2
    assert stats.queue_time > stats.time


def test_overlapping_timeouts_of_a_burst_count_once_toward_the_breaker(lt: LoopThread) -> None:
    """Without a limit the same burst times out en masse (the pool serves ~40 of 200 within
    the budget), but the timeouts overlap: one fault, not 160, so the circuit stays closed
    and the calm traffic after the burst is enriched (it was skipped for 30 s)."""
    chain = EnricherChain(
        [loopthread.enricher(Pool(), name="users")],
        timeout=0.2,
        loop_thread=lt,
        failure_threshold=5,
    )
    results = burst(lt, chain, 200)
    stats = chain.stats().enrichers[0]
    assert stats.timeouts > 100
    assert enriched(results) + stats.timeouts == 200
    assert stats.circuit == "closed"
    calm = [chain.enrich_sync({"n": i}) for i in range(20)]
    assert enriched(calm) == 20


def test_a_dead_enricher_still_opens_its_circuit_and_the_queue_is_skipped(
    lt: LoopThread,
) -> None:
    """Waves of failing calls each count once: with 2 places and a threshold of 2 the second
    wave opens the circuit, and the 16 calls still waiting are skipped without being made."""
    calls = 0

    async def down(event: Fields) -> Fields:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ConnectionError("refused")

    chain = EnricherChain(
        [loopthread.enricher(down, name="down", max_concurrency=2)],
        loop_thread=lt,
        failure_threshold=2,
    )
    results = burst(lt, chain, 20)
    assert results == [{"n": i} for i in range(20)]
    stats = chain.stats().enrichers[0]
    assert (calls, stats.calls, stats.failures) == (4, 4, 4)
    assert (stats.circuit, stats.skipped, stats.queued) == ("open", 16, 18)


def test_no_more_than_max_concurrency_run_and_places_go_in_order(lt: LoopThread) -> None:
    """3 places: never a 4th call at once; queued calls begin in the order they came."""
    running = 0
    most = 0
    began: list[int] = []

    async def lookup(event: Fields) -> Fields:
        nonlocal running, most
        began.append(event["n"])
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)  # the workload
        running -= 1
        return {"ok": True}

    chain = EnricherChain([lookup], loop_thread=lt, max_concurrency=3)
    results = burst(lt, chain, 50)
    assert all(r["ok"] for r in results)
    assert most == 3
    assert began == list(range(50))
    assert chain.stats().enrichers[0].queued == 47


def test_a_caller_giving_up_in_the_queue_keeps_no_place(lt: LoopThread) -> None:
    """A call whose caller gives up while it waits for a place leaves the queue: once the
    holder is done, the next call gets the place at once."""
    gate = threading.Event()
    entered = threading.Event()

    async def held(event: Fields) -> Fields:
        if event.get("hold"):
            entered.set()
            await asyncio.to_thread(gate.wait, 10)
        return {"done": event["n"]}

    chain = EnricherChain([held], loop_thread=lt, max_concurrency=1, timeout=None)
    first = lt.submit(chain.enrich({"n": 0, "hold": True}))
    assert entered.wait(5)
    assert chain.enrich_sync({"n": 1}, timeout=0.02) == {"n": 1}  # gave up in the queue
    gate.set()
    assert first.result(5) == {"n": 0, "hold": True, "done": 0}
    assert chain.enrich_sync({"n": 2}, timeout=5) == {"n": 2, "done": 2}
    stats = chain.stats().enrichers[0]
    assert (stats.calls, stats.ok, stats.queued, stats.timeouts) == (2, 2, 1, 0)


def test_a_place_handed_to_a_cancelled_call_is_passed_on(lt: LoopThread) -> None:
    """The holder ends and its place goes to the next call in line, which is cancelled in the
    same step (before it could run): the place passes to the call after it."""

    async def scenario() -> tuple[dict[str, Any], bool, dict[str, Any], dict[str, Any]]:
        hold = asyncio.Event()
        entered = asyncio.Event()

        async def held(event: Fields) -> Fields:
            if event.get("hold"):
                entered.set()
                await hold.wait()
            return {"done": event["n"]}

        chain = EnricherChain([held], loop_thread=lt, max_concurrency=1, timeout=None)
        second: asyncio.Task[dict[str, Any]] | None = None

        async def holder() -> dict[str, Any]:
            result = await chain.enrich({"n": 0, "hold": True})
            # enrich() handed the place to `second` as it returned; nothing ran since.
            assert second is not None
            second.cancel()
            return result

        first = asyncio.create_task(holder())
        await entered.wait()
        second = asyncio.create_task(chain.enrich({"n": 2}))
        third = asyncio.create_task(chain.enrich({"n": 3}))
        await asyncio.sleep(0)  # a yield: both tasks take their first step, into the queue
        assert chain.stats().enrichers[0].queued == 2
        hold.set()
        held_result = await first
        try:
            await second
            cancelled = False
        except asyncio.CancelledError:
            cancelled = True
        later = await chain.enrich({"n": 4})
        return held_result, cancelled, await third, later

    held_result, cancelled, third, later = lt.run(scenario(), timeout=5)
    assert held_result == {"n": 0, "hold": True, "done": 0}
    assert cancelled
    assert third == {"n": 3, "done": 3}
    assert later == {"n": 4, "done": 4}


@pytest.mark.parametrize(
    ("where", "value", "error", "match"),
    [
        ("enricher", 0, ValueError, "max_concurrency must be an int >= 1; got 0"),
        ("enricher", "4", TypeError, "max_concurrency must be an int >= 1; got str"),
        ("chain", -1, ValueError, "max_concurrency must be an int >= 1; got -1"),
        ("chain", 2.5, TypeError, "max_concurrency must be an int >= 1; got float"),
    ],
)
def test_bad_max_concurrency_is_refused(
    where: str, value: Any, error: type[Exception], match: str
) -> None:
    """max_concurrency is an int >= 1 or None, checked where it is given."""
    make: Any = loopthread.enricher if where == "enricher" else EnricherChain
    target: Any = Pool() if where == "enricher" else [Pool()]
    with pytest.raises(error, match=match):
        make(target, max_concurrency=value)


def test_bad_max_concurrency_attribute_names_the_enricher() -> None:
    """An enricher object's own ``max_concurrency`` attribute is checked, with its name."""

    class Lookup:
        name = "geo"
        max_concurrency = 0

        async def __call__(self, event: Fields) -> Fields:
            return {}

    with pytest.raises(ValueError, match=r"max_concurrency of enricher 'geo'.*None: no limit"):
        EnricherChain([Lookup()])
