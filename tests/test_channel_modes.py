"""Where and in which context a channel's handler runs: ``context=`` and ``run_in=``."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopthread import Channel, LoopThread, WouldDeadlockError

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

Item = tuple[str, int]  # (the producer's request id, its sequence number)


def _produce(put: Callable[[Item], object], threads: int, per_thread: int) -> None:
    """``threads`` threads, each with its own request id in the context, put their items."""

    def work(rid: str) -> None:
        request_id.set(rid)
        for n in range(per_thread):
            put((rid, n))

    workers = [threading.Thread(target=work, args=(f"req-{t}",)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


# ---------------------------------------------------------------- context


def test_batch_handlers_run_in_an_empty_context_not_the_creators(lt: LoopThread) -> None:
    """By default no handler call sees the contextvars of the thread that created the channel
    (nor of any producer): a batch belongs to many producers."""
    seen: list[str | None] = []

    def sync_handler(batch: list[Item]) -> None:
        seen.append(request_id.get())

    async def async_handler(batch: list[Item]) -> None:
        seen.append(request_id.get())

    token = request_id.set("creator")
    try:
        channels = [lt.channel(sync_handler), lt.channel(async_handler)]
    finally:
        request_id.reset(token)
    for ch in channels:
        _produce(ch.put, threads=3, per_thread=5)
        assert ch.flush(timeout=5)
        ch.close(timeout=5)
    assert seen
    assert set(seen) == {None}


@pytest.mark.parametrize(
    ("run_in", "kind"), [("loop", "sync"), ("loop", "async"), ("executor", "sync")]
)
def test_producer_context_per_item(lt: LoopThread, run_in: str, kind: str) -> None:
    """context="producer": 4 threads x 25 items, each thread with its own request id: every
    handler call sees the request id of the items it was given, never another one."""
    calls: list[tuple[str | None, list[Item]]] = []

    def sync_handler(batch: list[Item]) -> None:
        calls.append((request_id.get(), list(batch)))

    async def async_handler(batch: list[Item]) -> None:
        await asyncio.sleep(0)  # the context must survive a suspension too
        calls.append((request_id.get(), list(batch)))

    handler = sync_handler if kind == "sync" else async_handler
    token = request_id.set("creator")
    try:
        ch = lt.channel(handler, context="producer", run_in=run_in)
    finally:
        request_id.reset(token)
    _produce(ch.put, threads=4, per_thread=25)
    assert ch.flush(timeout=5)
    items = [item for _, batch in calls for item in batch]
    assert sorted(items) == sorted((f"req-{t}", n) for t in range(4) for n in range(25))
    wrong = [(rid, item) for rid, batch in calls for item in batch if item[0] != rid]
    assert wrong == []
    assert ch.stats().handled == 100


def test_producer_context_keeps_a_threads_burst_in_one_call(lt: LoopThread) -> None:
    """Items of one producer whose variables did not change share one handler call: the
    context option does not cost the batching."""
    calls: list[tuple[str | None, int]] = []

    def handler(batch: list[int]) -> None:
        calls.append((request_id.get(), len(batch)))

    ch = lt.channel(handler, context="producer")

    def burst() -> None:  # on the loop thread: all 50 are in before the consumer runs
        request_id.set("burst")
        for n in range(50):
            ch.put(n)

    lt.run_sync(burst)
    assert ch.flush(timeout=5)
    assert calls == [("burst", 50)]


def test_producer_context_follows_a_threads_changes(lt: LoopThread) -> None:
    """A producer that changes its variables between puts: each item is handled in the
    context of its own put (a thread's snapshot is reused only while nothing changed)."""
    calls: list[tuple[str | None, list[int]]] = []

    def handler(batch: list[int]) -> None:
        calls.append((request_id.get(), list(batch)))

    ch = lt.channel(handler, context="producer")

    def burst() -> None:  # on the loop thread: every put is in before the consumer runs
        for n in range(12):
            request_id.set(f"req-{n // 3}")
            ch.put(n)

    lt.run_sync(burst)
    assert ch.flush(timeout=5)
    assert calls == [(f"req-{k}", [3 * k, 3 * k + 1, 3 * k + 2]) for k in range(4)]


def test_depth_is_what_waits(lt: LoopThread) -> None:
    """ch.depth counts the items waiting for the consumer, as stats().depth."""
    ch: Channel[int] = lt.channel(lambda batch: None)

    def fill() -> tuple[int, int]:  # on the loop thread: the consumer cannot run meanwhile
        for n in range(5):
            ch.put(n)
        return ch.depth, ch.stats().depth

    assert lt.run_sync(fill) == (5, 5)
    assert ch.flush(timeout=5)
    assert ch.depth == 0


def test_producer_context_failure_counts_only_its_run(lt: LoopThread) -> None:
    """A handler call that raises fails the items of its own run; the others are handled."""
    handled: list[Item] = []

    def handler(batch: list[Item]) -> None:
        if request_id.get() == "req-1":
            raise RuntimeError("this request's items fail")
        handled.extend(batch)

    ch = lt.channel(handler, context="producer")
    with structlog.testing.capture_logs() as logs:
        _produce(ch.put, threads=3, per_thread=10)
        assert ch.flush(timeout=5)
        # The consumer logs a failure after counting it (flush may see the count first): a
        # callback on the loop runs once that step, log included, is over.
        lt.run_sync(lambda: None)
    stats = ch.stats()
    assert (stats.handled, stats.failed) == (20, 10)
    assert sorted(handled) == sorted((f"req-{t}", n) for t in (0, 2) for n in range(10))
    assert any(log["event"] == "channel.handler_failed" for log in logs)


def test_bad_options_fail_at_creation(lt: LoopThread) -> None:
    """Unknown options and an async handler for the executor fail at once, saying why."""

    async def handle(batch: list[int]) -> None:
        pass

    with pytest.raises(ValueError, match="context must be one of 'empty', 'producer'"):
        lt.channel(handle, context="caller")
    with pytest.raises(ValueError, match="run_in must be one of 'loop', 'executor'"):
        lt.channel(handle, run_in="thread")
    with pytest.raises(TypeError, match=r"is async: run_in='executor' runs a plain function"):
        lt.channel(handle, run_in="executor")


# ---------------------------------------------------------------- run_in="executor"


def test_executor_handler_does_not_stall_the_loop(lt: LoopThread) -> None:
    """A handler blocked in the executor leaves the loop free: lt.run completes meanwhile."""
    entered = threading.Event()
    release = threading.Event()
    threads: list[threading.Thread] = []

    def blocking(batch: list[int]) -> None:
        threads.append(threading.current_thread())
        entered.set()
        assert release.wait(10)

    ch = lt.channel(blocking, run_in="executor")
    ch.put(1)
    assert entered.wait(5)
    try:
        assert lt.run(asyncio.sleep(0, "loop is free"), timeout=5) == "loop is free"
    finally:
        release.set()
    assert ch.flush(timeout=5)
    assert threads[0] is not lt.thread
    assert ch.stats().handled == 1


def test_executor_handler_failures_are_isolated(lt: LoopThread) -> None:
    """A batch that raises in the executor is counted and logged; later batches go on."""
    got: list[int] = []

    def handler(batch: list[int]) -> None:
        if batch[0] == 0:
            raise KeyboardInterrupt("not the loop's: isolated like any fault")
        got.extend(batch)

    ch = lt.channel(handler, run_in="executor", batch_size=1)
    with structlog.testing.capture_logs() as logs:
        for n in range(3):
            ch.put(n)
        assert ch.flush(timeout=5)
        lt.run_sync(lambda: None)  # the failure is logged after it is counted (see above)
    assert got == [1, 2]
    assert (ch.stats().handled, ch.stats().failed) == (2, 1)
    assert [log["event"] for log in logs].count("channel.handler_failed") == 1


def test_flush_inside_an_executor_handler_raises(lt: LoopThread) -> None:
    """ch.flush() inside the channel's own executor handler would wait for itself."""
    errors: list[BaseException] = []
    ch: Any = None

    def handler(batch: list[int]) -> None:
        try:
            ch.flush(timeout=5)
        except WouldDeadlockError as exc:
            errors.append(exc)

    ch = lt.channel(handler, run_in="executor")
    ch.put(1)
    assert ch.flush(timeout=5)
    assert len(errors) == 1
    assert "inside the executor handler" in str(errors[0])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    context=st.sampled_from(["empty", "producer"]),
    batch_size=st.integers(1, 8),
    producers=st.integers(1, 3),
    per_producer=st.integers(0, 40),
    fail_every=st.integers(0, 4),
)
def test_executor_handler_one_call_at_a_time_in_order(
    lt: LoopThread,
    *,
    context: str,
    batch_size: int,
    producers: int,
    per_producer: int,
    fail_every: int,
) -> None:
    """run_in="executor": never two calls at once, every item exactly once (handled or
    failed), FIFO per producer, each item in its producer's context with context="producer"."""
    running = 0
    most = 0
    handed: list[Item] = []
    wrong: list[Item] = []
    calls = 0
    lock = threading.Lock()

    def handler(batch: list[Item]) -> None:
        nonlocal running, most, calls
        with lock:
            running += 1
            most = max(most, running)
            calls += 1
            call = calls
        try:
            if context == "producer":
                wrong.extend(item for item in batch if item[0] != request_id.get())
            time.sleep(0)  # let another worker in, if one could be
            handed.extend(batch)
            if fail_every and call % fail_every == 0:
                raise ValueError("fails on purpose")
        finally:
            with lock:
                running -= 1

    ch = lt.channel(handler, run_in="executor", context=context, batch_size=batch_size)
    with structlog.testing.capture_logs():
        _produce(ch.put, threads=producers, per_thread=per_producer)
        assert ch.flush(timeout=10)
    stats = ch.stats()
    ch.close(timeout=5)
    assert most <= 1
    assert sorted(handed) == sorted(
        (f"req-{p}", n) for p in range(producers) for n in range(per_producer)
    )
    for p in range(producers):
        assert [n for rid, n in handed if rid == f"req-{p}"] == list(range(per_producer))
    assert stats.handled + stats.failed == stats.put == producers * per_producer
    assert wrong == []


def test_stop_with_a_stuck_executor_handler_is_bounded() -> None:
    """A handler that never returns cannot hang stop(): it returns by its deadline (plus the
    executor's bounded join), counting the items it was given and those behind it."""
    lt = LoopThread("stuck-executor", cancel_grace=0.2).start()
    entered = threading.Event()
    never = threading.Event()

    def stuck(batch: list[int]) -> None:
        entered.set()
        never.wait(30)

    ch = lt.channel(stuck, run_in="executor", batch_size=1)
    for n in range(3):
        ch.put(n)
    assert entered.wait(5)
    try:
        with structlog.testing.capture_logs():
            started = time.monotonic()
            report = lt.stop(timeout=0.5)
            took = time.monotonic() - started
        assert took < 0.5 + 0.25 + 0.5, report  # deadline + stop's slack + the join's bound
        assert report.items_unhandled == 3
        assert report.abandoned >= 1  # the worker still in the handler
        stats = ch.stats()
        assert (stats.handled, stats.unhandled) == (0, 3)
    finally:
        never.set()


def test_close_with_a_stuck_executor_handler_is_bounded(lt: LoopThread) -> None:
    """ch.close(timeout) gives up on a handler call that outlives it, counting its items."""
    entered = threading.Event()
    release = threading.Event()

    def stuck(batch: list[int]) -> None:
        entered.set()
        release.wait(30)

    ch = lt.channel(stuck, run_in="executor")
    ch.put(1)
    assert entered.wait(5)
    try:
        with structlog.testing.capture_logs():
            ch.close(timeout=0.2)
        stats = ch.stats()
        assert (stats.closed, stats.unhandled) == (True, 1)
    finally:
        release.set()


def test_cancelling_every_task_does_not_let_a_batch_overtake(lt: LoopThread) -> None:
    """User code that cancels every task while a handler call runs in the executor does not
    end the channel's wait for it: the next batch starts only after it returned."""
    entered = threading.Event()
    release = threading.Event()
    log: list[str] = []

    def handler(batch: list[int]) -> None:
        log.append(f"start {batch}")
        if batch == [0]:
            entered.set()
            release.wait(10)
        log.append(f"end {batch}")

    async def cancel_everything() -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    ch = lt.channel(handler, run_in="executor", batch_size=1)
    ch.put(0)
    assert entered.wait(5)
    ch.put(1)
    lt.run(cancel_everything(), timeout=5)
    release.set()
    assert ch.flush(timeout=5)
    assert log == ["start [0]", "end [0]", "start [1]", "end [1]"]
    assert ch.stats().handled == 2
