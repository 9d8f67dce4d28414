"""Faults: user code that raises, hangs, returns junk or raises BaseException; a loop that dies
mid-flight; Ctrl-C delivered to a waiting caller; stop() with 1,000 calls in flight.

The promise under test: the loop survives every fault of user code (handlers, enrichers,
sinks), each fault is counted, and every caller gets an answer: a result, its own exception,
``TimeoutError``, ``CancelledError`` or ``LoopNotRunningError``, never a hang.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import structlog

import loopthread.structlog as lt_structlog
from loopthread import (
    ChannelClosedError,
    ChannelStats,
    EnricherChain,
    EventBus,
    LoopNotRunningError,
    LoopThread,
    testing,
)
from loopthread.logging import LoopHandler
from tests.reliability._support import ANSWER_BOUND, SLACK, all_answers, record, scaled

ANSWERS = (LoopNotRunningError, TimeoutError, concurrent.futures.CancelledError)


@pytest.fixture(name="quiet_logs")
def fixture_quiet_logs() -> Iterator[list[Any]]:
    """Capture loopthread's structlog events (faults are logged; keep them off the output)."""
    with structlog.testing.capture_logs() as logs:
        yield logs


def assert_accounted(stats: ChannelStats) -> None:
    """The channel's accounting identity, once it is idle or closed."""
    assert stats.put == (
        stats.handled
        + stats.failed
        + stats.dropped
        + stats.unhandled
        + stats.depth
        + stats.in_flight
    ), stats


async def echo(x: Any) -> Any:
    return x


# ---------------------------------------------------------------- faulty user code


class Junk:
    """A value that looks awaitable to a duck-typing check but is not."""

    __await__ = None


def make_fault(kind: str) -> Callable[[], Any]:
    """A function raising or returning what ``kind`` names, for sync and async user code."""

    def fault() -> Any:
        if kind == "ValueError":
            raise ValueError("user bug")
        if kind == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind == "SystemExit":
            raise SystemExit(3)
        if kind == "GeneratorExit":
            raise GeneratorExit
        if kind == "CancelledError":
            raise asyncio.CancelledError  # the code's own, not a cancellation of its task
        if kind == "junk":
            return Junk()
        raise AssertionError(kind)

    return fault


FAULTS = ["ValueError", "KeyboardInterrupt", "SystemExit", "GeneratorExit", "CancelledError"]


@pytest.mark.parametrize("style", ["async", "async-after-await", "sync"])
@pytest.mark.parametrize("kind", [*FAULTS, "junk"])
def test_channel_handler_faults_are_isolated(
    lt: LoopThread, quiet_logs: list[Any], kind: str, style: str
) -> None:
    """A channel handler that raises anything (BaseException included) or returns junk fails
    only its own batch: counted as failed, logged, the loop and the channel go on."""
    fault = make_fault(kind)
    handled: list[int] = []

    async def async_handler(batch: list[int]) -> Any:
        if style == "async-after-await":
            await asyncio.sleep(0)
        if batch[0] % 2:
            return fault()
        handled.extend(batch)
        return None

    def sync_handler(batch: list[int]) -> Any:
        if batch[0] % 2:
            return fault()
        handled.extend(batch)
        return None

    ch = lt.channel(sync_handler if style == "sync" else async_handler, batch_size=1)
    for i in range(20):
        assert ch.put(i)
    assert ch.flush(ANSWER_BOUND)
    stats = ch.stats()
    assert lt.running
    assert lt.run(echo("alive")) == "alive"
    assert handled == list(range(0, 20, 2))
    if kind == "junk" and style == "sync":
        # A sync handler's return value is awaited only if it is awaitable; this one claims
        # to be (it has __await__), so awaiting it fails: a failed batch too.
        assert stats.failed == 10
    elif kind == "junk":
        assert stats.failed == 0  # an async handler's return value is ignored
    else:
        assert stats.failed == 10
    ch.close(ANSWER_BOUND)
    stats = ch.stats()
    assert_accounted(stats)
    assert stats.unhandled == 0
    record("faults: channel handlers", faults_injected=stats.failed, items=20, lost=0)


def test_channel_handler_that_hangs_is_bounded(lt: LoopThread, quiet_logs: list[Any]) -> None:
    """A handler that never returns: flush reports False at its timeout, close() is bounded by
    its own, and the items it held or never got are counted as unhandled, not lost."""
    entered = threading.Event()

    async def hangs(batch: list[int]) -> None:
        entered.set()
        await asyncio.Event().wait()

    ch = lt.channel(hangs, batch_size=2)
    for i in range(10):
        ch.put(i)
    assert entered.wait(ANSWER_BOUND)
    assert ch.flush(timeout=0.05) is False
    started = time.monotonic()
    ch.close(timeout=0.1)
    assert time.monotonic() - started < 0.1 + 1.0 + SLACK  # timeout + grace, not forever
    stats = ch.stats()
    assert_accounted(stats)
    assert (stats.handled, stats.failed, stats.unhandled) == (0, 0, 10)
    assert lt.run(echo(1)) == 1
    record("faults: hanging handler", faults_injected=1, items=10, counted_unhandled=10, lost=0)


@pytest.mark.parametrize("kind", [*FAULTS, "junk"])
def test_event_bus_handler_faults_are_isolated(
    lt: LoopThread, quiet_logs: list[Any], kind: str
) -> None:
    """An EventBus handler that raises anything or returns junk: counted per handler call; the
    other handlers of the same event and every later event still run."""
    fault = make_fault(kind)
    seen: list[int] = []
    bus = EventBus(lt)

    async def bad_async(event: dict[str, Any]) -> Any:
        await asyncio.sleep(0)
        return fault()

    def bad_sync(event: dict[str, Any]) -> Any:
        return fault()

    bus.on("step", bad_async)
    bus.on("step", bad_sync)
    bus.on("step", lambda event: seen.append(event["i"]))
    reporter = bus.reporter()
    for i in range(25):
        assert reporter.report("step", {"i": i})
    assert bus.flush(ANSWER_BOUND)
    assert seen == list(range(25))
    stats = bus.stats()
    # junk from a sync handler claims to be awaitable (it has __await__): awaiting it fails.
    # junk from an async handler is its return value, which is ignored.
    expected = {"junk": 25}.get(kind, 50)
    assert stats.handler_failures == expected
    assert lt.run(echo("alive")) == "alive"
    bus.close(ANSWER_BOUND)
    assert stats.channel is not None
    assert_accounted(bus.stats().channel)  # type: ignore[arg-type]
    record("faults: event bus handlers", faults_injected=expected, events=25, lost=0)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("kind", [*FAULTS, "junk", "hang"])
def test_enricher_faults_are_isolated(
    lt: LoopThread, quiet_logs: list[Any], kind: str, mode: str
) -> None:
    """Enrichers that raise anything, hang (async or blocking in the executor) or return junk,
    before or after their first await: each counted as a failure or timeout; the good
    enricher's fields still arrive; the loop keeps running."""
    release = threading.Event()
    fault = make_fault(kind) if kind != "hang" else None

    async def good(event: Mapping[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"good": event["id"]}

    async def bad_at_once(event: Mapping[str, Any]) -> Any:
        if fault is None:
            await asyncio.Event().wait()
            return None
        return fault()

    async def bad_after_await(event: Mapping[str, Any]) -> Any:
        await asyncio.sleep(0)
        if fault is None:
            await asyncio.Event().wait()
            return None
        return fault()

    def bad_sync(event: Mapping[str, Any]) -> Any:  # runs in the executor
        if fault is None:
            release.wait(ANSWER_BOUND)
            return None
        return fault()

    bad = ["bad_at_once", "bad_after_await", "bad_sync"]
    if kind == "GeneratorExit":
        # Not from the executor: asyncio throws a future's exception into the waiting task,
        # and a thrown GeneratorExit closes the whole await chain (see the README).
        bad.remove("bad_sync")
    chain = EnricherChain(
        [bad_at_once, good, bad_after_await, *([bad_sync] if "bad_sync" in bad else [])],
        mode=mode,  # type: ignore[arg-type]
        loop_thread=lt,
        timeout=0.05,
        failure_threshold=None,
    )
    events = 5
    try:
        for i in range(events):
            assert chain.enrich_sync({"id": i}, timeout=ANSWER_BOUND) == {"id": i, "good": i}
    finally:
        release.set()
    stats = {s.name.rsplit(".", 1)[-1]: s for s in chain.stats().enrichers}
    assert stats["good"].ok == events
    for name in bad:
        s = stats[name]
        assert s.calls == events
        assert s.failures + s.timeouts == events, s
    assert lt.run(echo("alive")) == "alive"
    record("faults: enrichers", faults_injected=len(bad) * events, events=events)


@pytest.mark.parametrize("kind", ["ValueError", "KeyboardInterrupt", "SystemExit"])
def test_structlog_offload_faults_are_isolated(lt: LoopThread, kind: str) -> None:
    """offload(): a processor, a sync sink (in the executor) or an async sink that raises
    anything costs its own events only; the loop and the offload's channel keep going."""
    fault = make_fault(kind)

    def bad_processor(_: Any, __: str, event_dict: Any) -> Any:
        return fault()

    def bad_sink(value: Any) -> None:
        fault()

    async def bad_async_sink(values: list[Any]) -> None:
        await asyncio.sleep(0)
        fault()

    offloads = [
        lt_structlog.offload(bad_processor, sink=lambda v: None, loop_thread=lt),
        lt_structlog.offload(sink=bad_sink, loop_thread=lt),
        lt_structlog.offload(sink=bad_async_sink, loop_thread=lt),
    ]
    with structlog.testing.capture_logs():
        for offload in offloads:
            for i in range(3):
                with pytest.raises(structlog.DropEvent):
                    offload(None, "info", {"event": "e", "i": i})
            assert offload.flush(ANSWER_BOUND)
        for offload in offloads:
            channel = offload.stats().channel
            assert channel is not None
            assert not channel.closed
            assert_accounted(channel)
            assert channel.handled + channel.failed == 3
    assert lt.run(echo("alive")) == "alive"
    record("faults: structlog offload", faults_injected=9)


@pytest.mark.parametrize("where", ["sink", "handler"])
@pytest.mark.parametrize("kind", ["ValueError", "KeyboardInterrupt", "SystemExit"])
def test_loop_handler_faults_are_isolated(
    lt: LoopThread, kind: str, where: str, request: pytest.FixtureRequest
) -> None:
    """LoopHandler: a wrapped logging.Handler or an async sink that raises costs its batch, is
    counted in handler_errors, and the loop keeps running (BaseException included)."""
    fault = make_fault(kind)

    class BadHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fault()

    class BadSink:
        async def emit_batch(self, records: Any) -> None:
            await asyncio.sleep(0)
            fault()

    target: Any = BadHandler() if where == "handler" else BadSink()
    handler = LoopHandler(target, loop_thread=lt)
    log = logging.getLogger(f"reliability.faults.{kind}.{where}")
    log.propagate = False
    log.addHandler(handler)
    try:
        with structlog.testing.capture_logs():
            log.warning("one")
            handler.flush(ANSWER_BOUND)
            alive = lt.running
    finally:
        log.removeHandler(handler)
        handler.close()
    assert alive, "a LoopHandler target's fault killed the loop"
    assert handler.stats().handler_errors >= 1


# ---------------------------------------------------------------- the loop dies mid-flight


def kill_by_stop(lt: LoopThread) -> None:
    """A coroutine stops the loop under everyone's feet."""

    async def stop_the_loop() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.Event().wait()

    lt.submit(stop_the_loop())


def kill_by_callback(lt: LoopThread) -> None:
    """A raw loop callback raises SystemExit: the loop itself crashes."""

    def explode() -> None:
        raise SystemExit("from a raw callback")

    lt.loop.call_soon_threadsafe(explode)


def kill_by_task(lt: LoopThread) -> None:
    """A task that user code spawned raises KeyboardInterrupt: asyncio re-raises it out of
    the loop (the calls' own coroutines are guarded; a bare task is not)."""

    async def spawn() -> None:
        async def interrupt() -> None:
            raise KeyboardInterrupt

        asyncio.get_running_loop().create_task(interrupt())

    lt.submit(spawn())


@pytest.mark.parametrize("kill", [kill_by_stop, kill_by_callback, kill_by_task])
def test_loop_dying_mid_flight_answers_everyone(kill: Callable[[LoopThread], None]) -> None:
    """The loop dies while 8 threads make calls and 4 producers put events: every call gets a
    result or LoopNotRunningError; every put is accepted (and then handled or counted) or
    refused with ChannelClosedError; nothing waits forever; the death is logged."""
    lt = LoopThread("dies", cancel_grace=0.2, metrics_registry=None).start()
    handled: list[int] = []

    async def handler(batch: list[int]) -> None:
        await asyncio.sleep(0)
        handled.extend(batch)

    ch = lt.channel(handler, maxsize=500, batch_size=64)
    go = threading.Event()
    halfway = threading.Semaphore(0)
    calls_per_caller = scaled(2_000, 20_000)

    def call_until_refused(index: int) -> tuple[int, int, list[str]]:
        go.wait()
        ok = refused = 0
        wrong: list[str] = []
        for i in range(calls_per_caller):
            if i == calls_per_caller // 10:
                halfway.release()
            try:
                got = lt.run(echo(i)) if i % 2 else lt.submit(echo(i)).result(ANSWER_BOUND)
            except LoopNotRunningError:
                refused += 1
                continue
            if got != i:
                wrong.append(f"{index}:{i}->{got}")
            ok += 1
        return ok, refused, wrong

    def put_until_closed(index: int) -> tuple[list[int], int]:
        go.wait()
        accepted: list[int] = []
        for i in range(calls_per_caller * 10):
            try:
                if ch.put(index * 10_000_000 + i, timeout=ANSWER_BOUND):
                    accepted.append(index * 10_000_000 + i)
            except ChannelClosedError:
                return accepted, 1
        return accepted, 0

    with (
        concurrent.futures.ThreadPoolExecutor(12) as pool,
        structlog.testing.capture_logs() as logs,
    ):
        callers = [pool.submit(call_until_refused, i) for i in range(8)]
        producers = [pool.submit(put_until_closed, i) for i in range(4)]
        go.set()
        for _ in range(8):
            assert halfway.acquire(timeout=ANSWER_BOUND)
        kill(lt)
        call_answers = all_answers(callers)
        put_answers = all_answers(producers)
        lt.thread.join(ANSWER_BOUND)
    assert not lt.thread.is_alive()
    assert lt.state == "dead"
    assert any(e["event"] == "loop_thread.died" for e in logs)
    oks = refused = 0
    for answer in call_answers:
        assert not isinstance(answer, BaseException), repr(answer)
        ok, no, wrong = answer
        assert wrong == []
        oks += ok
        refused += no
    accepted: list[int] = []
    for answer in put_answers:
        assert not isinstance(answer, BaseException), repr(answer)
        accepted.extend(answer[0])
    assert refused > 0, "the loop died after every call had finished: nothing was tested"
    # Exactly once: every handled item was accepted, none handled twice.
    assert len(handled) == len(set(handled))
    assert set(handled) <= set(accepted)
    stats = ch.stats()
    assert_accounted(stats)
    assert stats.put == len(accepted)
    assert stats.handled == len(handled)
    with pytest.raises(ChannelClosedError):
        ch.put(-1)
    with pytest.raises(LoopNotRunningError):
        lt.run(echo(1))
    assert lt.stop().finished
    record(
        "faults: loop dies mid-flight",
        deaths=1,
        calls_answered=oks + refused,
        events_accepted=len(accepted),
        events_handled=len(handled),
        events_counted_unhandled=stats.unhandled + stats.in_flight + stats.depth,
        lost=len(accepted) - stats.handled - stats.failed - stats.unhandled - stats.in_flight,
    )


# ---------------------------------------------------------------- stop with calls in flight


def test_stop_with_a_thousand_calls_in_flight(quiet_logs: list[Any]) -> None:
    """stop() while 1,000 calls are in flight (submitted and blocking, finishing, failing,
    hanging, swallowing their cancellation) and a channel holds a backlog: every caller gets
    its result, its exception, CancelledError or LoopNotRunningError; every item is handled
    or counted; stop() returns within its deadline plus the floor."""
    lt = LoopThread("stop-1000", cancel_grace=0.2, metrics_registry=None).start()
    gate: asyncio.Event | None = None
    started = threading.Semaphore(0)
    n_submitted = 1000 - 16

    async def job(i: int) -> int:
        nonlocal gate
        if gate is None:
            gate = asyncio.Event()
        started.release()
        kind = i % 4
        if kind == 0:
            return i  # finishes at once
        if kind == 1:
            await gate.wait()  # released when stop() begins: finishes within the deadline
            return i
        if kind == 2:
            await gate.wait()
            raise KeyError(i)
        await asyncio.Event().wait()  # never finishes: cancelled at the deadline
        return -1

    async def release_on_stop(deadline: float) -> int:
        if gate is not None:
            gate.set()
        return 0

    testing.add_stop_hook(lt, release_on_stop)
    handled: list[int] = []

    async def slow_handler(batch: list[int]) -> None:
        await asyncio.sleep(0)
        handled.extend(batch)

    ch = lt.channel(slow_handler, batch_size=16)
    futures = [lt.submit(job(i)) for i in range(n_submitted)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        blocking = [pool.submit(lt.run, job(n_submitted + i)) for i in range(16)]
        for _ in range(1000):
            assert started.acquire(timeout=ANSWER_BOUND)
        for i in range(5000):
            ch.put(i)
        timeout = 1.0
        t0 = time.monotonic()
        report = lt.stop(timeout)
        elapsed = time.monotonic() - t0
        answers = all_answers([*futures, *blocking])
    assert elapsed <= max(timeout, 0.25) + SLACK, elapsed
    counts = {"result": 0, "KeyError": 0, "stopped": 0}
    for i, answer in enumerate(answers):
        kind = i % 4
        if isinstance(answer, KeyError):
            assert kind == 2
            counts["KeyError"] += 1
        elif isinstance(answer, LoopNotRunningError | concurrent.futures.CancelledError):
            counts["stopped"] += 1
        else:
            assert answer == i
            assert kind in (0, 1)
            counts["result"] += 1
    assert counts["result"] == 500
    assert counts["KeyError"] == 250
    assert counts["stopped"] == 250
    assert report.finished
    assert report.cancelled >= 250
    stats = ch.stats()
    assert_accounted(stats)
    assert stats.handled + stats.unhandled == 5000
    assert report.items_unhandled == stats.unhandled
    assert len(handled) == len(set(handled)) == stats.handled
    record(
        "faults: stop() with 1,000 calls in flight",
        calls=1000,
        answered=sum(counts.values()),
        items=5000,
        items_handled=stats.handled,
        items_counted_unhandled=stats.unhandled,
        stop_seconds=round(elapsed, 3),
    )


# ---------------------------------------------------------------- Ctrl-C in a waiting caller


class CtrlC:
    """Delivers one SIGINT (``signal.pthread_kill``) to the main thread once it waits.

    A signal that lands after the main thread released the GIL but before it entered the
    kernel wait is not a wake-up (the wait then runs to its end): a real race of any
    "interrupt a blocked call" test. So the sender repeats SIGINT until the main thread
    acknowledges, and the handler raises KeyboardInterrupt for the first one only.
    """

    def __init__(self, ready: threading.Event) -> None:
        self.ready = ready
        self.received = threading.Event()
        self.fired = 0
        self._previous: Any = None
        self._sender = threading.Thread(target=self._send)

    def _handler(self, signum: int, frame: Any) -> None:
        self.fired += 1
        if self.fired == 1:
            raise KeyboardInterrupt

    def _send(self) -> None:
        assert self.ready.wait(ANSWER_BOUND)
        ident = threading.main_thread().ident or 0
        deadline = time.monotonic() + ANSWER_BOUND
        while not self.received.is_set() and time.monotonic() < deadline:
            signal.pthread_kill(ident, signal.SIGINT)
            self.received.wait(0.05)  # waits for the acknowledgement; re-sends if none

    def __enter__(self) -> CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        self._sender.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.received.set()
        self._sender.join(ANSWER_BOUND)
        signal.signal(signal.SIGINT, self._previous)


class SignallingCondition(threading.Condition):
    """A Condition that says when a thread starts waiting on it (to interrupt that wait)."""

    def __init__(self, lock: Any = None) -> None:
        super().__init__(threading.Lock() if lock is None else lock)
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


@pytest.fixture(name="main_thread_only")
def fixture_main_thread_only() -> None:
    """Signals are delivered to the main thread: these tests must run there."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")


WAITS = ["run", "gather", "enrich_sync", "flush", "bus_flush", "stop"]


@pytest.mark.usefixtures("main_thread_only")
@pytest.mark.parametrize("wait", WAITS)
def test_ctrl_c_in_a_waiting_caller(quiet_logs: list[Any], wait: str) -> None:
    """SIGINT (signal.pthread_kill) while the main thread waits in each blocking entry point:
    KeyboardInterrupt reaches the caller, the work it waited for is cancelled or left intact,
    and the LoopThread, its channels and its counters stay consistent (a later call works)."""
    lt = LoopThread("ctrl-c", cancel_grace=0.5, metrics_registry=None).start()
    ready = threading.Event()
    cleaned = threading.Event()
    hold = threading.Event()

    async def parked() -> None:
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def handler(batch: list[int]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, hold.wait, ANSWER_BOUND)

    ch = lt.channel(handler, maxsize=1, batch_size=1)
    bus = EventBus(lt)
    bus.on("e", handler)  # type: ignore[arg-type]
    with CtrlC(ready) as ctrl_c:
        if wait == "run":
            with pytest.raises(KeyboardInterrupt):
                lt.run(parked(), timeout=ANSWER_BOUND)
            assert cleaned.is_set()
        elif wait == "gather":
            with pytest.raises(KeyboardInterrupt):
                lt.gather(parked(), echo(1), timeout=ANSWER_BOUND)
            assert cleaned.is_set()
        elif wait == "enrich_sync":

            async def enricher(event: Mapping[str, Any]) -> None:
                await parked()

            chain = EnricherChain([enricher], loop_thread=lt, timeout=None, on_unavailable="raise")
            with pytest.raises(KeyboardInterrupt):
                chain.enrich_sync({"id": 1}, timeout=ANSWER_BOUND)
            assert cleaned.is_set()
        elif wait == "flush":
            ch.put(1)  # the handler holds it
            registered = ch._register

            def register_then_say(waiter: Any) -> bool:
                result = registered(waiter)
                ready.set()
                return result

            ch._register = register_then_say  # type: ignore[method-assign]
            with pytest.raises(KeyboardInterrupt):
                ch.flush(ANSWER_BOUND)
        elif wait == "bus_flush":
            bus.reporter().report("e")
            channel = bus._binding.value
            assert channel is not None
            bus_registered = channel._register

            def bus_register_then_say(waiter: Any) -> bool:
                result = bus_registered(waiter)
                ready.set()
                return result

            channel._register = bus_register_then_say  # type: ignore[method-assign]
            with pytest.raises(KeyboardInterrupt):
                bus.flush(ANSWER_BOUND)
        elif wait == "stop":

            async def hold_stop(deadline: float) -> int:
                ready.set()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, hold.wait, ANSWER_BOUND)
                finally:
                    cleaned.set()
                return 0

            testing.add_stop_hook(lt, hold_stop)
            with pytest.raises(KeyboardInterrupt):
                lt.stop(ANSWER_BOUND)
    assert ctrl_c.fired >= 1
    hold.set()
    if wait == "stop":
        # Ctrl-C interrupted the wait, not the shutdown: a second stop() collects the report.
        report = lt.stop(ANSWER_BOUND)
        assert report.finished
        assert cleaned.is_set()
        assert lt.state == "stopped"
    else:
        assert lt.running
        assert lt.run(echo("after"), timeout=ANSWER_BOUND) == "after"
        assert ch.flush(ANSWER_BOUND)
        assert lt.stats().in_flight == 0
        lt.stop(ANSWER_BOUND)
    assert_accounted(ch.stats())
    record("faults: Ctrl-C in a waiting caller", interrupts=1)


@pytest.mark.usefixtures("main_thread_only")
def test_ctrl_c_in_a_put_blocked_on_a_full_channel(quiet_logs: list[Any]) -> None:
    """SIGINT while the main thread waits for room in a full "block" channel: the put raises
    KeyboardInterrupt without adding its item, and the channel's books stay exact."""
    lt = LoopThread("ctrl-c-put", metrics_registry=None).start()
    hold = threading.Event()
    entered = threading.Event()

    async def handler(batch: list[int]) -> None:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, hold.wait, ANSWER_BOUND)

    ch = lt.channel(handler, maxsize=1, batch_size=1)
    cond = SignallingCondition(ch._mutex)  # the channel waits for room on a Condition over it
    ch._cond = cond
    assert ch.put(1)
    assert entered.wait(ANSWER_BOUND)  # item 1 is in the handler
    assert ch.put(2)  # item 2 fills the channel
    with CtrlC(cond.waiting) as ctrl_c, pytest.raises(KeyboardInterrupt):
        ch.put(3, timeout=ANSWER_BOUND)
    assert ctrl_c.fired >= 1
    hold.set()
    assert ch.flush(ANSWER_BOUND)
    stats = ch.stats()
    assert (stats.put, stats.handled) == (2, 2)
    assert ch._blocked == 0
    lt.stop(ANSWER_BOUND)
    assert_accounted(ch.stats())
    record("faults: Ctrl-C in a waiting caller", interrupts=1)


@pytest.mark.usefixtures("main_thread_only")
def test_interrupt_main_reaches_a_waiting_caller_promptly(quiet_logs: list[Any]) -> None:
    """``_thread.interrupt_main()`` only sets the interrupt flag: unlike a real SIGINT it does
    not wake a thread blocked in ``lock.acquire``, and neither does a signal that lands just
    before the wait parks. The main thread waits in bounded slices, so the KeyboardInterrupt
    reaches it within one slice (0.5 s with the GIL, 0.05 s without), not when the call's
    timeout ends the wait; the coroutine is then cancelled and cleaned up as on Ctrl-C."""
    lt = LoopThread("interrupt-main", cancel_grace=0.5, metrics_registry=None).start()
    timeout = 20.0
    for _ in range(3):
        ready = threading.Event()
        cleaned = threading.Event()

        async def parked(
            ready: threading.Event = ready, cleaned: threading.Event = cleaned
        ) -> None:
            ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.set()

        flagged: list[float] = []

        def flag(ready: threading.Event = ready, flagged: list[float] = flagged) -> None:
            assert ready.wait(ANSWER_BOUND)
            flagged.append(time.monotonic())
            _thread.interrupt_main()

        flagger = threading.Thread(target=flag)
        flagger.start()
        with pytest.raises(KeyboardInterrupt):
            lt.run(parked(), timeout=timeout)
        raised = time.monotonic()
        flagger.join(ANSWER_BOUND)
        assert cleaned.is_set()
        # One slice, the cancellation and scheduling slack: far below the call's timeout.
        assert raised - flagged[0] < 3.0, raised - flagged[0]
    assert lt.run(echo(1)) == 1
    assert lt.stats().in_flight == 0
    lt.stop(ANSWER_BOUND)


@pytest.mark.usefixtures("main_thread_only")
def test_interrupt_landing_as_the_result_arrives_is_prompt(quiet_logs: list[Any]) -> None:
    """An interrupt flagged while the caller waits and raised just as the result arrives
    (``_thread.interrupt_main`` then the coroutine finishes) reaches the caller at once.

    Regression: the caller used to wait a full ``cancel_grace`` for a cleanup that had already
    happened (the call was done and its wake-up already consumed)."""
    grace = 3.0
    lt = LoopThread("interrupt-late", cancel_grace=grace, metrics_registry=None).start()
    ready = threading.Event()
    finish = threading.Event()

    async def gated() -> str:
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, finish.wait, ANSWER_BOUND)
        return "result"

    def flag_then_finish() -> None:
        assert ready.wait(ANSWER_BOUND)
        _thread.interrupt_main()
        finish.set()

    helper = threading.Thread(target=flag_then_finish)
    helper.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lt.run(gated())
    elapsed = time.monotonic() - t0
    helper.join(ANSWER_BOUND)
    assert elapsed < grace / 2, f"the interrupted caller waited {elapsed:.2f}s"
    assert lt.run(echo(1)) == 1
    assert lt.stats().in_flight == 0
    lt.stop(ANSWER_BOUND)
