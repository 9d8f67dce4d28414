"""Enricher chains: merge semantics, isolation of faults, the circuit breaker, lifecycle hooks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import loopthread
from loopthread import (
    EnricherChain,
    LoopNotRunningError,
    LoopThread,
    LoopThreadError,
    WouldDeadlockError,
    testing,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")

Fields = Mapping[str, Any]


class Boom(Exception):
    """A fault inside an enricher."""


def returning(fields: dict[str, Any], name: str | None = None) -> Any:
    """An async enricher returning ``fields``."""

    async def enrich(event: Fields) -> Fields:
        return fields

    enrich.__qualname__ = name or f"returning_{'_'.join(fields)}"
    return enrich


async def raising(event: Fields) -> Fields:
    raise Boom("lookup failed")


async def junk(event: Fields) -> Any:
    return ["not", "a", "mapping"]


async def nothing(event: Fields) -> None:
    return None


async def hanging(event: Fields) -> Fields:
    await asyncio.Event().wait()  # never set: only the chain's deadline ends this
    return {"never": True}


class Gate:
    """An enricher that parks until released from the test thread; records what it saw."""

    def __init__(self, fields: dict[str, Any], name: str = "gate") -> None:
        self.fields = fields
        self.name = name
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, event: Fields) -> Fields:
        self.loop = asyncio.get_running_loop()
        if self._event is None:
            self._event = asyncio.Event()
        self.seen.append(dict(event))
        self.started.set()
        try:
            await self._event.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return self.fields

    def release(self) -> None:
        assert self.loop is not None
        assert self._event is not None
        self.loop.call_soon_threadsafe(self._event.set)


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """Fails while ``failing`` is True, else returns one field."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    async def __call__(self, event: Fields) -> Fields:
        self.calls += 1
        if self.failing:
            raise Boom("down")
        return {"flaky": "ok"}


@pytest.fixture(name="logs")
def fixture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog events emitted during the test (from any thread)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def by_name(chain: EnricherChain) -> dict[str, loopthread.EnricherStats]:
    return {s.name: s for s in chain.stats().enrichers}


# ---------------------------------------------------------------------- merge semantics


def test_parallel_runs_enrichers_concurrently(lt: LoopThread) -> None:
    """In parallel mode the enrichers overlap: one waits for a signal only the other sends."""
    signal: dict[str, asyncio.Event] = {}

    async def waits(event: Fields) -> Fields:
        await signal.setdefault("e", asyncio.Event()).wait()
        return {"waited": True}

    async def signals(event: Fields) -> Fields:
        signal.setdefault("e", asyncio.Event()).set()
        return {"signalled": True}

    chain = EnricherChain([waits, signals], loop_thread=lt, timeout=5.0)
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "waited": True, "signalled": True}


def test_parallel_enrichers_all_get_the_original_event(lt: LoopThread) -> None:
    """In parallel mode no enricher sees another one's fields."""
    first = Gate({"a": 1}, "first")
    second = Gate({"b": 2}, "second")
    chain = EnricherChain([first, second], loop_thread=lt, timeout=5.0)
    future = lt.submit(chain.enrich({"id": 1}))
    assert first.started.wait(5)
    assert second.started.wait(5)
    second.release()
    first.release()
    assert future.result(5) == {"id": 1, "a": 1, "b": 2}
    assert first.seen == [{"id": 1}]
    assert second.seen == [{"id": 1}]


def test_sequential_each_sees_the_event_enriched_so_far(lt: LoopThread) -> None:
    """In sequential mode an enricher reads the fields added before it."""

    async def user(event: Fields) -> Fields:
        return {"user": f"u{event['user_id']}"}

    async def team(event: Fields) -> Fields:
        return {"team": f"team-of-{event['user']}"}

    chain = EnricherChain([user, team], mode="sequential", loop_thread=lt)
    assert chain.enrich_sync({"user_id": 7}) == {
        "user_id": 7,
        "user": "u7",
        "team": "team-of-u7",
    }


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_merge_follows_the_given_order_not_completion_order(lt: LoopThread, mode: str) -> None:
    """Fields merge in the order the enrichers were given; on a conflict the later one wins."""
    slow_first = Gate({"k": "first", "a": 1}, "slow_first")
    fast_second = returning({"k": "second", "b": 2})
    chain = EnricherChain(
        [slow_first, fast_second],
        mode=mode,  # type: ignore[arg-type]
        loop_thread=lt,
        timeout=5.0,
    )
    future = lt.submit(chain.enrich({"k": "event", "z": 0}))
    assert slow_first.started.wait(5)
    slow_first.release()
    result = future.result(5)
    assert result == {"k": "second", "z": 0, "a": 1, "b": 2}
    assert list(result) == ["k", "z", "a", "b"]


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_input_is_never_mutated_and_result_is_new(lt: LoopThread, mode: str) -> None:
    """The caller's event is left as it was, even by an enricher that mutates what it gets."""

    async def vandal(event: Any) -> Fields:
        event["vandal"] = True
        return {"v": 1}

    chain = EnricherChain([vandal], mode=mode, loop_thread=lt)  # type: ignore[arg-type]
    event = {"id": 1}
    result = chain.enrich_sync(event)
    assert event == {"id": 1}
    assert result is not event
    assert result["v"] == 1


def test_empty_chain_returns_a_copy(lt: LoopThread) -> None:
    """A chain without enrichers returns a new dict equal to the event."""
    chain = EnricherChain([], loop_thread=lt)
    event = {"id": 1}
    result = chain.enrich_sync(event)
    assert result == event
    assert result is not event


def test_enrich_awaited_on_the_loop(lt: LoopThread) -> None:
    """``await chain.enrich(event)`` works inside coroutines on the chain's loop."""
    chain = EnricherChain([returning({"a": 1})], loop_thread=lt)

    async def handler() -> dict[str, Any]:
        return await chain.enrich({"id": 1})

    assert lt.run(handler()) == {"id": 1, "a": 1}


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_each_enricher_stays_in_one_task(lt: LoopThread, mode: str) -> None:
    """An enricher sees one current task across its awaits (anyio cancel scopes need that)."""

    def make(name: str, *, suspend: bool) -> Any:
        async def enrich(event: Fields) -> Fields:
            before = asyncio.current_task()
            async with asyncio.timeout(5):  # bound to the task it was entered in
                if suspend:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            return {name: before is asyncio.current_task()}

        return loopthread.enricher(enrich, name=name)

    chain = EnricherChain(
        [
            make("quick1", suspend=False),
            make("slow1", suspend=True),
            make("quick2", suspend=False),
            make("slow2", suspend=True),
        ],
        mode=mode,  # type: ignore[arg-type]
        loop_thread=lt,
    )
    result = chain.enrich_sync({})
    assert result == {"quick1": True, "slow1": True, "quick2": True, "slow2": True}
    assert all(s.ok == 1 for s in chain.stats().enrichers)


def test_caller_giving_up_cancels_every_running_enricher(lt: LoopThread) -> None:
    """enrich_sync's timeout cancels the enricher in the chain's task and those in their own."""
    gates = [Gate({"a": 1}, "a"), Gate({"b": 2}, "b"), Gate({"c": 3}, "c")]
    chain = EnricherChain(gates, loop_thread=lt, timeout=None)
    assert chain.enrich_sync({"id": 1}, timeout=0.05) == {"id": 1}
    for gate in gates:
        assert gate.cancelled.wait(5)


def test_async_enricher_may_return_any_awaitable(lt: LoopThread) -> None:
    """An enricher known to be async may return a Future rather than a coroutine."""

    def returns_future(event: Fields) -> Any:
        future = asyncio.get_running_loop().create_future()
        future.get_loop().call_soon(future.set_result, {"f": 1})
        return future

    def returns_junk(event: Fields) -> Any:
        return 42

    chain = EnricherChain([returns_future, returns_junk], loop_thread=lt)
    for slot in chain._slots:
        slot.is_async = True  # as if declared async: called on the loop, result awaited
    assert chain.enrich_sync({}) == {"f": 1}
    assert [s.failures for s in chain.stats().enrichers] == [0, 1]


# ---------------------------------------------------------------------- faults


def test_timeout_cancels_the_slow_enricher_and_keeps_the_others(lt: LoopThread) -> None:
    """A slow enricher contributes nothing, is cancelled and counted; the others' fields stay."""
    slow = Gate({"slow": True}, "slow")
    chain = EnricherChain([slow, returning({"a": 1}, "fast")], loop_thread=lt, timeout=0.05)
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "a": 1}
    assert slow.cancelled.is_set()
    stats = by_name(chain)
    assert stats["slow"].timeouts == 1
    assert stats["slow"].calls == 1
    assert stats["slow"].ok == 0
    assert stats["fast"].ok == 1


def test_enricher_that_swallows_cancellation_is_still_a_timeout(lt: LoopThread) -> None:
    """An enricher that ignores its cancellation and returns late contributes nothing."""

    async def stubborn(event: Fields) -> Fields:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        return {"late": True}

    chain = EnricherChain([stubborn], loop_thread=lt, timeout=0.05)
    assert chain.enrich_sync({"id": 1}) == {"id": 1}
    assert chain.stats().enrichers[0].timeouts == 1


def test_per_enricher_timeout_via_helper_and_attribute(lt: LoopThread) -> None:
    """``loopthread.enricher(fn, timeout=)`` and a ``timeout`` attribute override the chain's."""

    class SlowObject:
        name = "slow_object"
        timeout = 0.05

        async def __call__(self, event: Fields) -> Fields:
            await asyncio.Event().wait()
            return {}

    chain = EnricherChain(
        [loopthread.enricher(hanging, name="slow_fn", timeout=0.05), SlowObject()],
        loop_thread=lt,
        timeout=None,  # without the overrides this would wait forever
    )
    assert chain.enrich_sync({"id": 1}, timeout=10) == {"id": 1}
    stats = by_name(chain)
    assert stats["slow_fn"].timeouts == 1
    assert stats["slow_object"].timeouts == 1


def test_raising_enricher_is_isolated_counted_and_logged(
    lt: LoopThread, logs: list[MutableMapping[str, Any]]
) -> None:
    """An enricher that raises contributes nothing; the event goes through with the rest."""
    chain = EnricherChain([raising, returning({"a": 1})], loop_thread=lt, name="c")
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "a": 1}
    stats = by_name(chain)
    assert stats["raising"].failures == 1
    failed = [e for e in logs if e["event"] == "enricher.failed"]
    assert len(failed) == 1
    assert failed[0]["enricher"] == "raising"
    assert failed[0]["chain"] == "c"
    assert "lookup failed" in failed[0]["error"]


def test_junk_result_is_a_failure_and_none_is_fine(
    lt: LoopThread, logs: list[MutableMapping[str, Any]]
) -> None:
    """A non-mapping result counts as a failure; None is a success that adds nothing."""
    chain = EnricherChain([junk, nothing, returning({"a": 1})], loop_thread=lt)
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "a": 1}
    stats = by_name(chain)
    assert stats["junk"].failures == 1
    assert stats["nothing"].ok == 1
    assert stats["nothing"].failures == 0
    invalid = [e for e in logs if e["event"] == "enricher.invalid_result"]
    assert [e["result_type"] for e in invalid] == ["list"]


def test_fault_logs_are_rate_limited(lt: LoopThread, logs: list[MutableMapping[str, Any]]) -> None:
    """An enricher failing on every event logs once per interval, not once per event."""
    chain = EnricherChain([raising], loop_thread=lt, failure_threshold=None)
    for _ in range(20):
        chain.enrich_sync({"id": 1})
    assert chain.stats().enrichers[0].failures == 20
    assert len([e for e in logs if e["event"] == "enricher.failed"]) == 1


def test_base_exception_in_enricher_does_not_kill_the_loop(lt: LoopThread) -> None:
    """Even SystemExit raised by an enricher is isolated: the loop keeps running."""

    async def exits(event: Fields) -> Fields:
        raise SystemExit(3)

    chain = EnricherChain([exits], loop_thread=lt)
    assert chain.enrich_sync({"id": 1}) == {"id": 1}
    assert lt.running
    assert chain.stats().enrichers[0].failures == 1


# ---------------------------------------------------------------------- circuit breaker


def test_circuit_breaker_open_half_open_closed(
    lt: LoopThread, logs: list[MutableMapping[str, Any]]
) -> None:
    """Consecutive faults open the circuit; after the cool-down one trial decides."""
    clock = FakeClock()
    flaky = Flaky()
    chain = EnricherChain([flaky], loop_thread=lt, failure_threshold=2, cooldown=30.0, clock=clock)

    def state() -> loopthread.EnricherStats:
        return chain.stats().enrichers[0]

    chain.enrich_sync({})
    assert state().circuit == "closed"
    chain.enrich_sync({})
    assert state().circuit == "open"
    assert flaky.calls == 2

    # Open: skipped without being called, for the whole cool-down.
    assert chain.enrich_sync({"id": 1}) == {"id": 1}
    clock.now += 29.9
    chain.enrich_sync({})
    assert flaky.calls == 2
    assert state().skipped == 2

    # Cool-down over: one trial; it fails, so the circuit opens again at once.
    clock.now += 0.1
    assert state().circuit == "half_open"
    chain.enrich_sync({})
    assert flaky.calls == 3
    assert state().circuit == "open"
    chain.enrich_sync({})
    assert flaky.calls == 3

    # Next trial succeeds: closed, and calls flow again.
    clock.now += 30.0
    flaky.failing = False
    assert chain.enrich_sync({}) == {"flaky": "ok"}
    assert state().circuit == "closed"
    assert chain.enrich_sync({}) == {"flaky": "ok"}
    assert flaky.calls == 5
    final = state()
    assert (final.calls, final.ok, final.failures, final.skipped) == (5, 2, 3, 3)
    opened = [e for e in logs if e["event"] == "enricher.circuit_opened"]
    assert [e["trial_failed"] for e in opened] == [False, True]
    assert [e["event"] for e in logs].count("enricher.circuit_closed") == 1


def test_success_resets_the_consecutive_count(lt: LoopThread) -> None:
    """Only consecutive faults open the circuit."""
    flaky = Flaky()
    chain = EnricherChain([flaky], loop_thread=lt, failure_threshold=2, clock=FakeClock())
    for failing in (True, False, True, False, True):
        flaky.failing = failing
        chain.enrich_sync({})
    assert chain.stats().enrichers[0].circuit == "closed"


def test_timeouts_count_towards_the_breaker(lt: LoopThread) -> None:
    """A dead dependency that hangs stops costing its timeout once the circuit opens."""
    chain = EnricherChain(
        [hanging], loop_thread=lt, timeout=0.02, failure_threshold=2, clock=FakeClock()
    )
    for _ in range(4):
        chain.enrich_sync({})
    stats = chain.stats().enrichers[0]
    assert (stats.timeouts, stats.skipped, stats.circuit) == (2, 2, "open")


def test_half_open_lets_exactly_one_trial_through(lt: LoopThread) -> None:
    """While the trial call runs, other events skip the enricher."""
    clock = FakeClock()
    gate = Gate({"g": 1})
    failing = [True]

    async def maybe(event: Fields) -> Fields:
        if failing[0]:
            raise Boom("down")
        return await gate(event)

    chain = EnricherChain(
        [loopthread.enricher(maybe, name="maybe")],
        loop_thread=lt,
        timeout=5.0,
        failure_threshold=1,
        cooldown=10.0,
        clock=clock,
    )
    chain.enrich_sync({})
    assert chain.stats().enrichers[0].circuit == "open"
    failing[0] = False
    clock.now += 10.0
    trial = lt.submit(chain.enrich({"n": 1}))
    assert gate.started.wait(5)
    assert chain.enrich_sync({"n": 2}) == {"n": 2}  # skipped: the trial is in flight
    gate.release()
    assert trial.result(5) == {"n": 1, "g": 1}
    stats = chain.stats().enrichers[0]
    assert (stats.circuit, stats.skipped) == ("closed", 1)


def test_breaker_can_be_disabled(lt: LoopThread) -> None:
    """``failure_threshold=None`` never skips an enricher."""
    flaky = Flaky()
    chain = EnricherChain([flaky], loop_thread=lt, failure_threshold=None)
    for _ in range(10):
        chain.enrich_sync({})
    assert flaky.calls == 10


# ---------------------------------------------------------------------- lifecycle


class Lifecycle:
    """An enricher with startup/shutdown hooks that records what happened to it."""

    def __init__(self, name: str, *, fail_startup: bool = False) -> None:
        self.name = name
        self.fail_startup = fail_startup
        self.startups = 0
        self.shutdowns = 0
        self.startup_context: str | None = None
        self.release_startup: asyncio.Event | None = None
        self.startup_started = threading.Event()

    async def startup(self) -> None:
        self.startups += 1
        self.startup_context = request_id.get()
        self.startup_started.set()
        if self.release_startup is not None:
            await self.release_startup.wait()
        if self.fail_startup:
            raise Boom("cannot connect")

    async def shutdown(self) -> None:
        self.shutdowns += 1

    async def __call__(self, event: Fields) -> Fields:
        return {self.name: "ready"}


def test_startup_runs_once_before_first_use_even_when_raced(lt: LoopThread) -> None:
    """Concurrent first calls share one startup; none is served before it finished."""
    hooked = Lifecycle("hooked")
    chain = EnricherChain([hooked], loop_thread=lt)

    async def make_gate() -> None:
        hooked.release_startup = asyncio.Event()

    lt.run(make_gate())
    futures = [lt.submit(chain.enrich({"n": n})) for n in range(20)]
    assert hooked.startup_started.wait(5)
    assert not any(f.done() for f in futures)
    release = hooked.release_startup
    assert release is not None
    lt.loop.call_soon_threadsafe(release.set)
    assert [f.result(5) for f in futures] == [{"n": n, "hooked": "ready"} for n in range(20)]
    assert hooked.startups == 1
    chain.enrich_sync({})
    assert hooked.startups == 1


def test_startup_runs_in_a_clean_context(lt: LoopThread) -> None:
    """Startup is shared, so it does not capture the first caller's contextvars."""
    hooked = Lifecycle("hooked")
    chain = EnricherChain([hooked], loop_thread=lt)
    token = request_id.set("first-request")
    try:
        chain.enrich_sync({})
    finally:
        request_id.reset(token)
    assert hooked.startup_context == "none"


def test_startup_failure_disables_that_enricher_only(
    lt: LoopThread, logs: list[MutableMapping[str, Any]]
) -> None:
    """A failed startup disables its enricher (counted, logged); the chain keeps working."""
    broken = Lifecycle("broken", fail_startup=True)
    fine = Lifecycle("fine")
    chain = EnricherChain([broken, fine], loop_thread=lt)
    assert chain.enrich_sync({}) == {"fine": "ready"}
    assert chain.enrich_sync({}) == {"fine": "ready"}
    stats = chain.stats()
    assert stats.startup_failures == 1
    broken_stats = by_name(chain)["broken"]
    assert broken_stats.disabled
    assert (broken_stats.calls, broken_stats.skipped) == (0, 2)
    assert [e["enricher"] for e in logs if e["event"] == "enricher.startup_failed"] == ["broken"]
    lt.stop()
    assert (broken.shutdowns, fine.shutdowns) == (0, 1)


def test_shutdown_runs_at_stop_concurrently_and_bounded(lt: LoopThread) -> None:
    """stop() runs every started enricher's shutdown(); a hanging one is cut off, not waited."""
    done: list[str] = []

    class Hangs:
        name = "hangs"

        async def shutdown(self) -> None:
            await asyncio.Event().wait()

        async def __call__(self, event: Fields) -> None:
            return None

    class Quick:
        name = "quick"

        async def shutdown(self) -> None:
            done.append("quick")

        async def __call__(self, event: Fields) -> None:
            return None

    chain = EnricherChain([Hangs(), Quick()], loop_thread=lt, hook_timeout=0.05)
    chain.enrich_sync({})
    report = lt.stop(timeout=5.0)
    assert report.finished
    assert report.duration < 2.0
    assert done == ["quick"]


def test_unused_chain_runs_no_hooks(lt: LoopThread) -> None:
    """Hooks belong to first use: a chain never used neither starts nor shuts down."""
    hooked = Lifecycle("hooked")
    EnricherChain([hooked], loop_thread=lt)
    lt.stop()
    assert (hooked.startups, hooked.shutdowns) == (0, 0)


# ---------------------------------------------------------------------- sync callers


def test_contextvars_reach_every_enricher_through_enrich_sync(lt: LoopThread) -> None:
    """Async enrichers, gathered tasks and executor-run sync enrichers see the caller's vars."""

    async def async_seen(event: Fields) -> Fields:
        return {"async": request_id.get()}

    def sync_seen(event: Fields) -> Fields:
        return {"sync": request_id.get()}

    for mode in ("parallel", "sequential"):
        chain = EnricherChain([async_seen, sync_seen], mode=mode, loop_thread=lt)
        token = request_id.set(f"req-{mode}")
        try:
            result = chain.enrich_sync({})
        finally:
            request_id.reset(token)
        assert result == {"async": f"req-{mode}", "sync": f"req-{mode}"}


def test_sync_enricher_runs_in_the_shared_executor(lt: LoopThread) -> None:
    """A plain function runs on the loop thread's executor, not on the loop, not in a new pool."""

    def where(event: Fields) -> Fields:
        return {"thread": threading.current_thread().name}

    chain = EnricherChain([where], loop_thread=lt)
    for _ in range(3):
        thread = chain.enrich_sync({})["thread"]
        assert thread.startswith(f"{lt.name}-executor")
    assert lt.stats().loops_created == 1


def test_sync_enricher_timeout(lt: LoopThread) -> None:
    """A blocking plain function is bounded too (its thread finishes on its own later)."""
    release = threading.Event()

    def blocks(event: Fields) -> Fields:
        release.wait(10)
        return {"late": True}

    chain = EnricherChain([blocks], loop_thread=lt, timeout=0.05)
    try:
        assert chain.enrich_sync({"id": 1}) == {"id": 1}
    finally:
        release.set()
    assert chain.stats().enrichers[0].timeouts == 1


def test_plain_function_returning_a_coroutine_is_awaited(lt: LoopThread) -> None:
    """A plain function that returns a coroutine works: the coroutine is awaited on the loop."""
    lookup = returning({"a": 1})

    def plain(event: Fields) -> Any:
        return lookup(event)

    chain = EnricherChain([plain], loop_thread=lt)
    assert chain.enrich_sync({}) == {"a": 1}


def test_passthrough_when_the_loop_is_stopped(lt: LoopThread) -> None:
    """A stopped loop degrades enrich_sync to a copy of the event, counted and logged."""
    chain = EnricherChain([returning({"a": 1})], loop_thread=lt)
    lt.stop()
    event = {"id": 1}
    with structlog.testing.capture_logs() as logs:
        result = chain.enrich_sync(event)
        chain.enrich_sync(event)
    assert result == event
    assert result is not event
    assert chain.stats().degraded == 2
    degraded = [e for e in logs if e["event"] == "enricher_chain.degraded"]
    assert len(degraded) == 1  # rate-limited
    assert "LoopNotRunningError" in degraded[0]["reason"]


def test_passthrough_when_the_loop_was_never_started() -> None:
    """A LoopThread that was never started also degrades (and is reported in the log)."""
    lt = LoopThread("never-started")
    chain = EnricherChain([returning({"a": 1})], loop_thread=lt)
    assert chain.enrich_sync({"id": 1}) == {"id": 1}
    assert chain.stats().degraded == 1
    lt.stop()


def test_raise_when_the_loop_is_stopped(lt: LoopThread) -> None:
    """With ``on_unavailable="raise"`` the loop's error reaches the caller."""
    chain = EnricherChain([returning({"a": 1})], loop_thread=lt, on_unavailable="raise")
    lt.stop()
    with pytest.raises(LoopNotRunningError):
        chain.enrich_sync({"id": 1})
    assert chain.stats().degraded == 0


@pytest.mark.parametrize("on_unavailable", ["passthrough", "raise"])
def test_overall_timeout(lt: LoopThread, on_unavailable: str) -> None:
    """enrich_sync's own timeout cancels the enrichment; passthrough returns the event."""
    gate = Gate({"g": 1})
    chain = EnricherChain(
        [gate],
        loop_thread=lt,
        timeout=None,
        on_unavailable=on_unavailable,  # type: ignore[arg-type]
    )
    if on_unavailable == "raise":
        with pytest.raises(TimeoutError):
            chain.enrich_sync({"id": 1}, timeout=0.05)
    else:
        assert chain.enrich_sync({"id": 1}, timeout=0.05) == {"id": 1}
    assert gate.cancelled.wait(5.0)  # cancelled on the loop (the caller did not wait for it)
    stats = chain.stats()
    assert stats.degraded == (1 if on_unavailable == "passthrough" else 0)
    assert stats.enrichers[0].timeouts == 0  # the caller gave up: not the enricher's fault


def test_enrich_sync_timeout_does_not_wait_for_the_cleanup() -> None:
    """enrich_sync(timeout=) bounds the caller's wait: it returns once the time is up, while
    the cancelled enricher's cleanup still runs on the loop (lt.run(timeout=) would wait
    cancel_grace for it: here forever)."""
    lt = LoopThread("enrich-cleanup", cancel_grace=None, metrics_registry=None).start()
    cleaning = threading.Event()
    release = threading.Event()

    async def slow_to_cancel(event: Fields) -> Fields:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.to_thread(release.wait)  # the cleanup takes as long as the test says
            raise
        return {"never": True}

    try:
        chain = EnricherChain([slow_to_cancel], loop_thread=lt, timeout=None)
        assert chain.enrich_sync({"id": 1}, timeout=0.05) == {"id": 1}
        assert cleaning.wait(5.0)
        assert not release.is_set()  # returned while the cleanup is still running
        assert chain.stats().degraded == 1
        strict = EnricherChain([slow_to_cancel], loop_thread=lt, on_unavailable="raise")
        with pytest.raises(TimeoutError, match=r"timeout=0\.05s; it was cancelled"):
            strict.enrich_sync({"id": 2}, timeout=0.05)
    finally:
        release.set()
        report = lt.stop()
    assert report.finished


def test_enrich_sync_on_the_loop_thread(lt: LoopThread) -> None:
    """On the loop thread, passthrough returns the event; "raise" raises WouldDeadlockError."""
    passthrough = EnricherChain([returning({"a": 1})], loop_thread=lt)
    strict = EnricherChain([returning({"a": 1})], loop_thread=lt, on_unavailable="raise")

    async def on_loop() -> dict[str, Any]:
        return passthrough.enrich_sync({"id": 1})

    assert lt.run(on_loop()) == {"id": 1}
    assert passthrough.stats().degraded == 1

    async def on_loop_strict() -> dict[str, Any]:
        return strict.enrich_sync({"id": 1})

    with pytest.raises(WouldDeadlockError, match=r"await chain\.enrich\(event\)"):
        lt.run(on_loop_strict())


def test_enrich_on_another_loop_is_refused(lt: LoopThread) -> None:
    """Awaiting enrich() on a loop that is not the chain's raises a clear error."""
    chain = EnricherChain([returning({"a": 1})], loop_thread=lt)
    with pytest.raises(LoopThreadError, match="enrich_sync"):
        asyncio.run(chain.enrich({}))


def test_default_loop_thread_is_used_when_none_is_given() -> None:
    """``loop_thread=None`` runs on loopthread.default(), bound at first use."""
    chain = EnricherChain([returning({"a": 1})])
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "a": 1}
    assert chain in testing.components(loopthread.default())


def test_chain_registers_itself_for_metrics(lt: LoopThread) -> None:
    """Each chain is in its LoopThread's registry, and its stats are plain frozen data."""
    chain = EnricherChain([returning({"a": 1}), returning({"a": 1})], loop_thread=lt, name="c1")
    assert chain in testing.components(lt)
    stats = chain.stats()
    assert stats.name == "c1"
    assert stats.mode == "parallel"
    assert [s.name for s in stats.enrichers] == ["returning_a", "returning_a#2"]
    with pytest.raises(AttributeError):
        stats.events = 3  # type: ignore[misc]
    chain.enrich_sync({})
    assert chain.stats().events == 1
    assert "c1" in repr(chain)


# ---------------------------------------------------------------------- bad input


def test_bad_arguments_are_refused_with_a_hint(lt: LoopThread) -> None:
    """Wrong input fails at construction with a message that says what to pass."""
    with pytest.raises(TypeError, match="not callable"):
        EnricherChain([42], loop_thread=lt)  # type: ignore[list-item]
    coro = nothing({})
    with pytest.raises(TypeError, match="coroutine"):
        EnricherChain([coro], loop_thread=lt)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of enrichers"):
        EnricherChain(nothing, loop_thread=lt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        EnricherChain([], mode="fast", loop_thread=lt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_unavailable"):
        EnricherChain([], on_unavailable="drop", loop_thread=lt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        EnricherChain([], timeout=-1, loop_thread=lt)
    with pytest.raises(ValueError, match="failure_threshold"):
        EnricherChain([], failure_threshold=0, loop_thread=lt)
    with pytest.raises(TypeError, match="loop_thread"):
        EnricherChain([], loop_thread="lt")  # type: ignore[arg-type]

    class OddTimeout:
        timeout = "soon"

        async def __call__(self, event: Fields) -> None:
            return None

    with pytest.raises(TypeError, match="rename the attribute"):
        EnricherChain([OddTimeout()], loop_thread=lt)
    with pytest.raises(TypeError, match="enricher function itself"):
        loopthread.enricher(nothing({}))  # type: ignore[arg-type]


def test_non_mapping_event_is_refused(lt: LoopThread) -> None:
    """enrich and enrich_sync take mappings."""
    chain = EnricherChain([], loop_thread=lt)
    with pytest.raises(TypeError, match="mapping"):
        chain.enrich_sync(["id", 1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        lt.run(chain.enrich("id=1"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the invariant


@pytest.fixture(name="shared_lt", scope="module")
def fixture_shared_lt() -> Iterator[LoopThread]:
    """One LoopThread for the Hypothesis examples (function fixtures do not reset per example)."""
    lt = LoopThread("test-enrich-hypothesis").start()
    yield lt
    lt.stop()


BEHAVIOURS = ("ok", "suspend_ok", "sync_ok", "none", "raise", "suspend_raise", "junk", "timeout")


def make_enricher(index: int, behaviour: str) -> Any:
    fields = {f"f{index}": index, "shared": index}

    async def ok(event: Fields) -> Fields:
        return fields

    async def suspend_ok(event: Fields) -> Fields:
        await asyncio.sleep(0)
        return fields

    async def suspend_raise(event: Fields) -> Fields:
        await asyncio.sleep(0)
        raise Boom("after an await")

    def sync_ok(event: Fields) -> Fields:
        return fields

    chosen: dict[str, Any] = {
        "ok": ok,
        "suspend_ok": suspend_ok,
        "suspend_raise": suspend_raise,
        "sync_ok": sync_ok,
        "none": nothing,
        "raise": raising,
        "junk": junk,
        "timeout": hanging,
    }
    # Only the hanging one needs a short timeout; the others get a generous one, so that a
    # loaded machine (a sync enricher's executor hop) cannot turn a success into a timeout.
    timeout = 0.02 if behaviour == "timeout" else 2.0
    return loopthread.enricher(chosen[behaviour], name=f"e{index}", timeout=timeout)


@settings(max_examples=60, deadline=None)
@given(
    behaviours=st.lists(st.sampled_from(BEHAVIOURS), max_size=6),
    mode=st.sampled_from(["parallel", "sequential"]),
)
def test_result_holds_exactly_the_successful_fields_in_order(
    shared_lt: LoopThread, behaviours: list[str], mode: str
) -> None:
    """For any mix of enrichers that succeed, fail or time out, only successes add fields."""
    chain = EnricherChain(
        [make_enricher(i, b) for i, b in enumerate(behaviours)],
        mode=mode,  # type: ignore[arg-type]
        loop_thread=shared_lt,
    )
    event = {"event": 1, "shared": -1}
    result = chain.enrich_sync(event)
    expected = dict(event)
    for index, behaviour in enumerate(behaviours):
        if behaviour in ("ok", "suspend_ok", "sync_ok"):
            expected.update({f"f{index}": index, "shared": index})
    assert result == expected
    assert list(result) == list(expected)
    assert event == {"event": 1, "shared": -1}
    stats = chain.stats().enrichers
    assert [s.timeouts for s in stats] == [int(b == "timeout") for b in behaviours]
    failing = ("raise", "suspend_raise", "junk")
    assert [s.failures for s in stats] == [int(b in failing) for b in behaviours]


def test_startup_raising_cancelled_error_is_a_fault(lt: LoopThread) -> None:
    """A startup() whose own awaits raise CancelledError (nobody cancelled the chain) disables
    that enricher and is counted; it does not escape to the sync caller."""

    class Flaky:
        name = "flaky"

        async def startup(self) -> None:
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.cancel)
            await fut

        async def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
            return {"flaky": 1}

    chain = EnricherChain([Flaky()], loop_thread=lt)
    assert chain.enrich_sync({"a": 1}) == {"a": 1}
    assert chain.stats().startup_failures == 1
