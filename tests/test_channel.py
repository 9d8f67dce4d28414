"""The event channel: delivery, accounting, overflow policies, flush, close/stop, no polling."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loopthread
from loopthread import (
    Channel,
    ChannelClosedError,
    ChannelFullError,
    LoopNotRunningError,
    LoopThread,
    WouldDeadlockError,
    testing,
)

POLICIES = ("block", "drop_newest", "drop_oldest", "error")


class Recorder:
    """A handler that records what it gets, and can hold the consumer until released.

    While held it waits in the loop's executor, so the loop itself stays free (other
    coroutines, and puts from the loop thread, still run).
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.batches: list[list[Any]] = []
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()
        self.threads: set[int] = set()

    def hold(self) -> None:
        self.released.clear()
        self.entered.clear()

    def release(self) -> None:
        self.released.set()

    async def __call__(self, batch: list[Any]) -> None:
        self.threads.add(threading.get_ident())
        self.entered.set()
        if not self.released.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
        self.batches.append(list(batch))
        self.items.extend(batch)


@pytest.fixture(name="recorder")
def fixture_recorder() -> Iterator[Recorder]:
    """A recording handler, released at teardown so no executor thread stays parked."""
    recorder = Recorder()
    yield recorder
    recorder.release()


def held_full(lt: LoopThread, recorder: Recorder, overflow: str, maxsize: int = 2) -> Channel[int]:
    """A channel whose consumer is held inside the handler with item 0 and ``maxsize`` queued."""
    recorder.hold()
    ch: Channel[int] = lt.channel(recorder, maxsize=maxsize, overflow=overflow)
    assert ch.put(0)
    assert recorder.entered.wait(5)
    for i in range(1, maxsize + 1):
        assert ch.put(i)
    assert ch.stats().depth == maxsize
    return ch


async def noop_batch(batch: list[Any]) -> None:
    pass


# ---------------------------------------------------------------- delivery


def test_items_reach_handler_in_order_on_loop_thread(lt: LoopThread, recorder: Recorder) -> None:
    """Items put from a thread arrive in FIFO order, handled on the loop thread."""
    ch = lt.channel(recorder)
    for i in range(1000):
        assert ch.put(i) is True
    assert ch.flush(timeout=5)
    assert recorder.items == list(range(1000))
    assert recorder.threads == {lt.thread.ident}
    stats = ch.stats()
    assert (stats.put, stats.handled, stats.depth, stats.in_flight) == (1000, 1000, 0, 0)


def test_burst_is_drained_in_batches(lt: LoopThread, recorder: Recorder) -> None:
    """One wake-up serves a burst: queued items come in batches of at most batch_size."""
    recorder.hold()
    ch = lt.channel(recorder, batch_size=3)
    ch.put(0)
    assert recorder.entered.wait(5)
    for i in range(1, 10):
        ch.put(i)
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.batches == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert ch.stats().batches == 4


def test_plain_function_handler(lt: LoopThread) -> None:
    """A plain (sync) handler is called on the loop like an async one."""
    got: list[int] = []
    ch = lt.channel(got.extend)
    for i in range(5):
        ch.put(i)
    assert ch.flush(timeout=5)
    assert got == [0, 1, 2, 3, 4]


def test_channel_registered_for_stats(lt: LoopThread) -> None:
    """The channel is attached to its LoopThread, so metrics can read its stats()."""
    ch = lt.channel(noop_batch, name="metrics-me")
    assert ch in testing.components(lt)
    assert ch.stats().name == "metrics-me"
    assert "metrics-me" in repr(ch)


# ---------------------------------------------------------------- accounting


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    overflow=st.sampled_from(POLICIES),
    maxsize=st.integers(1, 12),
    batch_size=st.integers(1, 6),
    producers=st.integers(1, 3),
    per_producer=st.integers(0, 60),
    hold=st.booleans(),
    fail_every=st.integers(0, 5),
)
def test_accounting_and_per_producer_order(
    lt: LoopThread,
    *,
    overflow: str,
    maxsize: int,
    batch_size: int,
    producers: int,
    per_producer: int,
    hold: bool,
    fail_every: int,
) -> None:
    """put = handled + failed + dropped; nothing delivered twice; FIFO per producer."""
    handed: list[tuple[int, int]] = []  # every item the handler got, in call order
    failed: list[tuple[int, int]] = []
    gate = threading.Event()
    if not hold:
        gate.set()
    calls = 0

    async def handler(batch: list[tuple[int, int]]) -> None:
        nonlocal calls
        calls += 1
        if not gate.is_set():
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        handed.extend(batch)
        if fail_every and calls % fail_every == 0:
            failed.extend(batch)
            raise ValueError("handler fails on purpose")

    ch = lt.channel(handler, maxsize=maxsize, overflow=overflow, batch_size=batch_size)
    outcomes: dict[int, list[str]] = {p: [] for p in range(producers)}

    def produce(p: int) -> None:
        for i in range(per_producer):
            try:
                # A held consumer never makes room: "block" waits at most a moment, then drops.
                ok = ch.put((p, i), timeout=0.001 if hold else None)
            except ChannelFullError:
                outcomes[p].append("rejected")
            else:
                outcomes[p].append("accepted" if ok else "refused")

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    with structlog.testing.capture_logs():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gate.set()
        assert ch.flush(timeout=10)
        stats = ch.stats()
        ch.close(timeout=5)

    results = [o for got in outcomes.values() for o in got]
    accepted = {(p, i) for p, got in outcomes.items() for i, o in enumerate(got) if o == "accepted"}
    refused = results.count("refused")
    assert stats.put == len(results) - results.count("rejected")
    assert stats.rejected == results.count("rejected")
    assert stats.put == stats.handled + stats.failed + stats.dropped
    assert (stats.depth, stats.in_flight, stats.unhandled) == (0, 0, 0)
    assert stats.failed == len(failed)
    assert stats.handled == len(handed) - len(failed)
    assert len(handed) == len(set(handed)), "an item was handed to the handler twice"
    assert set(handed) <= accepted
    evicted = stats.dropped - refused
    assert len(handed) == len(accepted) - evicted
    if overflow != "drop_oldest":
        assert set(handed) == accepted
    for p in range(producers):
        mine = [i for q, i in handed if q == p]
        assert mine == sorted(mine), f"producer {p} out of order"


def test_four_producers_lose_nothing(lt: LoopThread) -> None:
    """4 threads x 100,000 items through a 10,000-item "block" channel: all handled, in order."""
    count = 100_000
    last = [-1] * 4
    disorder: list[tuple[int, int]] = []
    handled = 0

    def handler(batch: list[tuple[int, int]]) -> None:
        nonlocal handled
        handled += len(batch)
        for p, i in batch:
            if i != last[p] + 1:
                disorder.append((p, i))
            last[p] = i

    ch = lt.channel(handler)

    def produce(p: int) -> None:
        put = ch.put
        for i in range(count):
            put((p, i))

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ch.flush(timeout=30)
    assert handled == 4 * count
    assert disorder == []
    assert last == [count - 1] * 4
    stats = ch.stats()
    assert stats.put == stats.handled == 4 * count
    assert stats.high_water <= 10_000 + 4


# ---------------------------------------------------------------- overflow policies


def test_block_waits_for_room(lt: LoopThread, recorder: Recorder) -> None:
    """With "block", a full channel makes put wait until the consumer makes room: while the
    handler is held the put does not return and nothing is admitted past maxsize; once the
    handler returns, the put is admitted and its item handled in order."""
    ch = held_full(lt, recorder, "block")
    # The consumer sampled depth 1 when it took item 0; only the full path can raise it now.
    assert ch.stats().high_water == 1
    calling = threading.Event()
    result: list[tuple[bool, bool]] = []  # (put's answer, was the handler still held?)

    def produce() -> None:
        calling.set()
        accepted = ch.put(3)
        result.append((accepted, not recorder.released.is_set()))

    def put_found_the_channel_full() -> bool:
        # ChannelStats.high_water is also sampled on put's full path.
        deadline = time.monotonic() + 5
        while ch.stats().high_water < 2:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    producer = threading.Thread(target=produce)
    producer.start()
    assert calling.wait(5)
    assert put_found_the_channel_full()
    stats = ch.stats()
    assert (stats.depth, stats.put, stats.over_limit, stats.dropped) == (2, 3, 0, 0)
    assert result == []  # the put has not returned: it waits for room
    recorder.release()
    producer.join(5)
    assert not producer.is_alive()
    assert result == [(True, False)]  # admitted only after the handler was released
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 1, 2, 3]
    assert ch.stats().high_water == 2


def test_block_timeout_drops(lt: LoopThread, recorder: Recorder) -> None:
    """With "block" and a timeout, put returns False when no room came in time, counted dropped."""
    ch = held_full(lt, recorder, "block")
    started = time.monotonic()
    assert ch.put(3, timeout=0.05) is False
    assert time.monotonic() - started >= 0.05
    assert ch.stats().dropped == 1
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 1, 2]


def test_drop_newest_refuses(lt: LoopThread, recorder: Recorder) -> None:
    """With "drop_newest", put returns False at once and the new item is never handled."""
    ch = held_full(lt, recorder, "drop_newest")
    assert ch.put(3) is False
    assert ch.stats().dropped == 1
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 1, 2]
    stats = ch.stats()
    assert stats.put == stats.handled + stats.dropped == 4


def test_drop_oldest_evicts(lt: LoopThread, recorder: Recorder) -> None:
    """With "drop_oldest", put returns True and the oldest waiting item is evicted."""
    ch = held_full(lt, recorder, "drop_oldest")
    assert ch.put(3) is True
    assert ch.put(4) is True
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 3, 4]
    stats = ch.stats()
    assert stats.dropped == 2
    assert stats.put == stats.handled + stats.dropped == 5


def test_error_raises_channel_full(lt: LoopThread, recorder: Recorder) -> None:
    """With "error", put raises ChannelFullError, whose message names the way out."""
    ch = held_full(lt, recorder, "error")
    with pytest.raises(ChannelFullError, match="overflow"):
        ch.put(3)
    assert ch.stats().rejected == 1
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 1, 2]
    assert ch.stats().put == 3


@pytest.mark.parametrize(
    ("overflow", "expected", "handled"),
    [
        ("block", True, [0, 1, 2, 3]),  # admitted past maxsize, counted
        ("drop_newest", False, [0, 1, 2]),
        ("drop_oldest", True, [0, 2, 3]),
        ("error", ChannelFullError, [0, 1, 2]),
    ],
)
def test_put_from_loop_thread_when_full(
    lt: LoopThread,
    recorder: Recorder,
    overflow: str,
    expected: bool | type[Exception],
    handled: list[int],
) -> None:
    """put() on the loop thread with a full channel never deadlocks, whatever the policy."""
    ch = held_full(lt, recorder, overflow)

    async def put_on_loop() -> bool:
        return ch.put(3)

    if isinstance(expected, bool):
        assert lt.run(put_on_loop(), timeout=5) is expected
    else:
        with pytest.raises(expected):
            lt.run(put_on_loop(), timeout=5)
    assert ch.stats().over_limit == (1 if overflow == "block" else 0)
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == handled


def test_aput_on_loop_waits_for_room(lt: LoopThread, recorder: Recorder) -> None:
    """await ch.aput() with "block" waits for room without blocking the loop."""
    ch = held_full(lt, recorder, "block")
    future = lt.submit(ch.aput(3))

    async def round_trip() -> None:
        await asyncio.sleep(0)

    lt.run(round_trip(), timeout=5)  # the loop is free while aput waits
    assert not future.done()
    recorder.release()
    assert future.result(timeout=5) is True
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 1, 2, 3]
    assert ch.stats().over_limit == 0


def test_put_from_own_handler_when_full(lt: LoopThread) -> None:
    """A handler that puts into its own full channel is admitted past the limit, not frozen."""
    seen: list[int] = []
    ch: Channel[int]

    async def handler(batch: list[int]) -> None:
        seen.extend(batch)
        if batch[0] == 0:
            for i in range(100, 105):
                assert await ch.aput(i)
            assert ch.put(105)

    ch = lt.channel(handler, maxsize=2)
    ch.put(0)
    assert ch.flush(timeout=5)
    assert seen == [0, 100, 101, 102, 103, 104, 105]
    assert ch.stats().over_limit >= 4


# ---------------------------------------------------------------- flush


def test_flush_times_out_while_held(lt: LoopThread, recorder: Recorder) -> None:
    """flush returns False when the handler does not get through in time, True once it does."""
    recorder.hold()
    ch = lt.channel(recorder)
    ch.put(1)
    assert recorder.entered.wait(5)
    assert ch.flush(timeout=0.05) is False
    recorder.release()
    assert ch.flush(timeout=5) is True


def test_flush_on_loop_thread_raises(lt: LoopThread) -> None:
    """flush() on the loop thread raises WouldDeadlockError pointing to aflush()."""
    ch = lt.channel(noop_batch)

    async def flush_on_loop() -> bool:
        return ch.flush()

    with pytest.raises(WouldDeadlockError, match="aflush"):
        lt.run(flush_on_loop(), timeout=5)


def test_aflush_on_loop(lt: LoopThread, recorder: Recorder) -> None:
    """await ch.aflush() on the loop waits for the items put before it."""
    ch = lt.channel(recorder)

    async def put_and_flush() -> list[int]:
        for i in range(50):
            ch.put(i)
        assert await ch.aflush(timeout=5)
        return list(recorder.items)

    assert lt.run(put_and_flush(), timeout=5) == list(range(50))


def test_aflush_from_another_loop(lt: LoopThread, recorder: Recorder) -> None:
    """aflush() awaited on a different event loop waits through the executor."""
    ch = lt.channel(recorder)
    ch.put(1)
    assert asyncio.run(ch.aflush(timeout=5))
    assert recorder.items == [1]


# ---------------------------------------------------------------- failures


def test_failing_handler_is_counted_logged_and_isolated(lt: LoopThread) -> None:
    """A handler that raises: the batch counts as failed, it is logged, the channel goes on."""
    seen: list[int] = []

    async def handler(batch: list[int]) -> None:
        if 13 in batch:
            raise ValueError("unlucky")
        seen.extend(batch)

    ch = lt.channel(handler, batch_size=1)
    with structlog.testing.capture_logs() as logs:
        for i in (12, 13, 14):
            ch.put(i)
        assert ch.flush(timeout=5)
    assert seen == [12, 14]
    stats = ch.stats()
    assert (stats.handled, stats.failed) == (2, 1)
    failures = [log for log in logs if log["event"] == "channel.handler_failed"]
    assert len(failures) == 1
    assert isinstance(failures[0]["exc_info"], ValueError)


# ---------------------------------------------------------------- close and stop


def test_close_drains_then_refuses(lt: LoopThread, recorder: Recorder) -> None:
    """close() handles what is queued; put afterwards raises ChannelClosedError; idempotent."""
    recorder.hold()
    ch = lt.channel(recorder)
    for i in range(5):
        ch.put(i)
    assert recorder.entered.wait(5)
    closer = threading.Thread(target=ch.close)
    closer.start()
    recorder.release()
    closer.join(5)
    assert not closer.is_alive()
    assert recorder.items == [0, 1, 2, 3, 4]
    with pytest.raises(ChannelClosedError, match="after close"):
        ch.put(5)
    ch.close()
    assert ch.closed
    assert ch.stats().closed
    assert ch.flush(timeout=1)


def test_close_with_hanging_handler_is_bounded(lt: LoopThread) -> None:
    """A handler that never returns: close(timeout) returns in time and counts the rest."""
    never = threading.Event()

    async def hang(batch: list[int]) -> None:
        await asyncio.Event().wait()

    ch = lt.channel(hang)
    for i in range(10):
        ch.put(i)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        ch.close(timeout=0.2)
    elapsed = time.monotonic() - started
    assert elapsed < 0.2 + 1.5
    stats = ch.stats()
    assert stats.unhandled == 10
    assert stats.put == stats.handled + stats.unhandled
    assert any(log["event"] == "channel.closed_with_unhandled" for log in logs)
    assert not never.is_set()


def test_stop_drains_channels(lt: LoopThread, recorder: Recorder) -> None:
    """lt.stop() closes its channels and handles what they hold first."""
    recorder.hold()
    ch = lt.channel(recorder)
    for i in range(100):
        ch.put(i)
    assert recorder.entered.wait(5)
    stopper = threading.Thread(target=lambda: reports.append(lt.stop(timeout=5)))
    reports: list[loopthread.ShutdownReport] = []
    stopper.start()
    recorder.release()
    stopper.join(10)
    assert reports[0].items_unhandled == 0
    assert recorder.items == list(range(100))
    with pytest.raises(ChannelClosedError, match="stopped"):
        ch.put(1)


def test_stop_with_hanging_handler_counts_unhandled() -> None:
    """A hanging handler: stop() is still bounded and reports what it could not handle."""
    lt = LoopThread("hang-stop", cancel_grace=0.2).start()

    async def hang(batch: list[int]) -> None:
        await asyncio.Event().wait()

    ch = lt.channel(hang, batch_size=4)
    for i in range(10):
        ch.put(i)
    with structlog.testing.capture_logs():
        report = lt.stop(timeout=1.0)
    assert report.finished
    assert report.items_unhandled == 10
    assert report.duration < 1.5
    stats = ch.stats()
    assert stats.unhandled == 10
    assert stats.handled == 0


def test_stop_with_loop_blocking_handler_is_bounded() -> None:
    """A handler that blocks the loop thread itself: stop() still returns by its timeout."""
    lt = LoopThread("blocked-stop", cancel_grace=0.1).start()
    gate = threading.Event()
    entered = threading.Event()

    def block(batch: list[int]) -> None:
        entered.set()
        gate.wait(10)

    ch = lt.channel(block)
    ch.put(1)
    assert entered.wait(5)
    started = time.monotonic()
    with structlog.testing.capture_logs():
        report = lt.stop(timeout=0.3)
        assert time.monotonic() - started < 1.0
        assert not report.finished
        assert report.deadline_hit
        closer_started = time.monotonic()
        ch.close(timeout=0.1)
        assert time.monotonic() - closer_started < 2.0
    gate.set()
    lt.thread.join(5)
    assert not lt.thread.is_alive()


def test_close_from_loop_thread_does_not_block(lt: LoopThread, recorder: Recorder) -> None:
    """close() inside a coroutine on the loop stops accepting and drains in the background."""
    ch = lt.channel(recorder)

    async def close_on_loop() -> bool:
        ch.put(1)
        ch.close()
        return ch.closed

    assert lt.run(close_on_loop(), timeout=5)
    assert ch.flush(timeout=5)
    assert recorder.items == [1]


def test_aclose_on_loop(lt: LoopThread, recorder: Recorder) -> None:
    """await ch.aclose() drains and returns once the consumer is done."""
    ch = lt.channel(recorder)

    async def put_and_close() -> list[int]:
        for i in range(3):
            ch.put(i)
        await ch.aclose(timeout=5)
        return list(recorder.items)

    assert lt.run(put_and_close(), timeout=5) == [0, 1, 2]


def test_aclose_inside_own_handler_does_not_wait_for_itself(lt: LoopThread) -> None:
    """await ch.aclose() inside the channel's own handler (whose drain waits for that very
    handler call) stops accepting and returns; the consumer then finishes the drain."""
    returned = threading.Event()
    ch: Channel[str]

    async def handler(batch: list[str]) -> None:
        if "quit" in batch:
            await ch.aclose(timeout=5)
            returned.set()

    ch = lt.channel(handler)
    ch.put("quit")
    assert returned.wait(5)
    assert ch.closed
    assert ch.flush(timeout=5)
    with pytest.raises(ChannelClosedError):
        ch.put("late")
    ch.close(timeout=5)
    stats = ch.stats()
    assert (stats.handled, stats.unhandled) == (1, 0)


def test_close_racing_producers_loses_nothing(lt: LoopThread) -> None:
    """Producers still putting while close() runs: every accepted item is handled or counted."""
    got: list[tuple[int, int]] = []
    busy = threading.Event()

    def handler(batch: list[tuple[int, int]]) -> None:
        got.extend(batch)
        if len(got) >= 2000:
            busy.set()

    ch = lt.channel(handler, maxsize=500)
    accepted = [0, 0, 0]

    def produce(p: int) -> None:
        i = 0
        try:
            while True:
                if ch.put((p, i)):
                    accepted[p] += 1
                i += 1
        except ChannelClosedError:
            pass

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    for t in producers:
        t.start()
    assert busy.wait(10)
    with structlog.testing.capture_logs():
        ch.close(timeout=5)
        for t in producers:
            t.join(5)
    stats = ch.stats()
    assert stats.put == sum(accepted)
    assert stats.handled == len(got)
    assert stats.put == stats.handled + stats.unhandled
    assert (stats.depth, stats.in_flight, stats.failed, stats.dropped) == (0, 0, 0, 0)
    for p in range(3):
        mine = [i for q, i in got if q == p]
        assert mine == list(range(len(mine))), f"producer {p}: not a FIFO prefix"


def test_put_that_lands_after_close_finished_is_counted(lt: LoopThread) -> None:
    """The rare interleaving: a put passed the closed check, then close() finished, then it
    appended. Its item is counted as unhandled (and logged), never left in the deque."""
    ch = lt.channel(noop_batch)
    ch.close(timeout=5)
    # What put() does after its closed check, replayed once the consumer has finished:
    next(ch._accepted)
    ch._items.append(1)
    with structlog.testing.capture_logs() as logs:
        assert ch._settle_late() is True
    stats = ch.stats()
    assert (stats.put, stats.unhandled, stats.depth) == (1, 1, 0)
    assert [log["event"] for log in logs] == ["channel.put_raced_close"]


def test_blocked_producer_released_by_close(lt: LoopThread, recorder: Recorder) -> None:
    """A producer waiting for room gets ChannelClosedError when the channel closes, at once:
    not after the held handler made room."""
    ch = held_full(lt, recorder, "block")
    # The consumer sampled depth 1 when it took item 0; only the full path can raise it now.
    assert ch.stats().high_water == 1
    errors: list[tuple[BaseException, bool]] = []  # (error, was the handler still held?)

    def produce() -> None:
        try:
            ch.put(3)
        except ChannelClosedError as exc:
            errors.append((exc, not recorder.released.is_set()))

    def put_found_the_channel_full() -> bool:
        # ChannelStats.high_water is also sampled on put's full path.
        deadline = time.monotonic() + 5
        while ch.stats().high_water < 2:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    producer = threading.Thread(target=produce)
    producer.start()
    assert put_found_the_channel_full()  # the put is past its closed check, waiting for room
    assert errors == []
    closer = threading.Thread(target=ch.close, kwargs={"timeout": 5})
    closer.start()
    producer.join(5)
    assert not producer.is_alive()
    assert len(errors) == 1
    error, while_held = errors[0]
    assert "put() after close() is refused" in str(error)
    assert while_held  # released by close itself, not by room made by the handler
    recorder.release()
    closer.join(5)
    assert not closer.is_alive()
    assert recorder.items == [0, 1, 2]
    stats = ch.stats()
    assert (stats.put, stats.handled, stats.unhandled, stats.closed) == (3, 3, 0, True)


# ---------------------------------------------------------------- Ctrl-C inside put


class InterruptedCount:
    """Stands in for one of a channel's ``itertools.count`` counters: its first ``next()``
    raises KeyboardInterrupt, as a signal handler would, after counting or before."""

    def __init__(self, real: Any, *, count_first: bool) -> None:
        self.real = real
        self.count_first = count_first
        self.fired = False

    def __iter__(self) -> InterruptedCount:
        return self

    def __next__(self) -> int:
        if not self.fired:
            self.fired = True
            if self.count_first:
                next(self.real)
            raise KeyboardInterrupt
        return int(next(self.real))

    def __repr__(self) -> str:
        return repr(self.real)  # stats() and flush() read the count from it


def interrupt_after_count(ch: Channel[int]) -> None:
    """Ctrl-C after put() counted its item, before it appended it."""
    ch._accepted = InterruptedCount(ch._accepted, count_first=True)  # type: ignore[assignment]


def interrupt_before_wake(ch: Channel[int]) -> None:
    """Ctrl-C after the append, before put() claimed the consumer's park."""

    def wake() -> None:
        del ch._wake_consumer
        raise KeyboardInterrupt

    ch._wake_consumer = wake  # type: ignore[method-assign]


def interrupt_after_claim(ch: Channel[int]) -> None:
    """Ctrl-C after put() claimed the park, before it sent the token."""

    def wake() -> None:
        del ch._wake_consumer
        ch._parked.pop()
        raise KeyboardInterrupt

    ch._wake_consumer = wake  # type: ignore[method-assign]


def interrupt_in_call_soon(ch: Channel[int]) -> None:
    """Ctrl-C inside the loop's call_soon_threadsafe: the wake-up is queued, the loop's
    self-pipe is never written (the loop sleeps on in its selector)."""
    loop = ch._loop

    def write_to_self() -> None:
        del loop._write_to_self  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    loop._write_to_self = write_to_self  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "interrupt",
    [interrupt_after_count, interrupt_before_wake, interrupt_after_claim, interrupt_in_call_soon],
)
def test_ctrl_c_inside_put_does_not_stall_the_channel(
    lt: LoopThread, recorder: Recorder, interrupt: Callable[[Channel[int]], None]
) -> None:
    """Ctrl-C landing inside put() while the consumer is parked: flush() completes, a queued
    item is handled, later puts flow, close(None) returns, stop() reports nothing lost."""
    ch: Channel[int] = lt.channel(recorder)
    assert ch.put(0)
    assert ch.flush(timeout=5)
    lt.run(asyncio.sleep(0), timeout=5)  # the consumer parked in the step that released flush
    assert ch._parked
    assert not ch._active
    interrupt(ch)
    with pytest.raises(KeyboardInterrupt):
        ch.put(1)
    queued = interrupt is not interrupt_after_count
    assert ch.flush(timeout=5)
    assert recorder.items == ([0, 1] if queued else [0])
    assert ch.put(2)
    assert ch.flush(timeout=5)
    assert recorder.items[-1] == 2
    stats = ch.stats()
    assert stats.put == stats.handled + (0 if queued else 1)  # the documented inexactness
    closer = threading.Thread(target=ch.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive()
    assert ch.flush(timeout=0)  # closed having lost nothing, even past a count with no item
    assert lt.stop(timeout=5).items_unhandled == 0


def test_ctrl_c_between_eviction_and_its_count(lt: LoopThread, recorder: Recorder) -> None:
    """Ctrl-C in a "drop_oldest" put after it evicted the oldest item, before it counted the
    eviction: flush() still completes (stats() is one off, as documented)."""
    ch = held_full(lt, recorder, "drop_oldest")
    ch._evicted = InterruptedCount(ch._evicted, count_first=False)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        ch.put(3)
    recorder.release()
    assert ch.flush(timeout=5)
    assert recorder.items == [0, 2]
    stats = ch.stats()
    assert (stats.put, stats.handled, stats.dropped) == (3, 2, 0)


# ---------------------------------------------------------------- validation


def test_bad_options_fail_at_construction(lt: LoopThread) -> None:
    """Unknown policies, bad sizes and a coroutine instead of a handler fail at once."""
    with pytest.raises(ValueError, match="overflow"):
        lt.channel(noop_batch, overflow="sometimes")
    with pytest.raises(ValueError, match="maxsize"):
        lt.channel(noop_batch, maxsize=0)
    with pytest.raises(TypeError, match="batch_size"):
        lt.channel(noop_batch, batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lt.channel\(handle\)"):
        lt.channel(noop_batch([]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        lt.channel(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        lt.channel(noop_batch).put(1, timeout=-1)


def test_channel_on_stopped_loop_refused() -> None:
    """A channel needs a running loop."""
    lt = LoopThread("never-started")
    with pytest.raises(LoopNotRunningError, match="start"):
        lt.channel(noop_batch)


def test_channel_created_as_stop_begins_is_drained_or_refused(lt: LoopThread) -> None:
    """stop() beginning while a channel is created: that stop drains the channel, or the
    creation fails with LoopNotRunningError, and nothing waits forever. Here stop() runs
    a thread creates channels (each with one item) as fast as it can while stop() begins."""
    created: list[Channel[int]] = []
    first = threading.Event()
    refused: list[BaseException] = []

    def create() -> None:
        while True:
            try:
                ch = lt.channel(noop_batch)
            except LoopNotRunningError as exc:
                refused.append(exc)
                return
            created.append(ch)
            first.set()
            try:
                ch.put(1)
            except loopthread.ChannelClosedError:
                pass

    worker = threading.Thread(target=create)
    worker.start()
    assert first.wait(5)
    report = lt.stop(timeout=5)
    worker.join(5)
    assert not worker.is_alive()
    assert report.finished
    assert report.items_unhandled == 0
    assert len(refused) == 1
    for ch in created:
        stats = ch.stats()
        assert ch.closed
        assert stats.handled + stats.unhandled == stats.put - stats.dropped


# ---------------------------------------------------------------- no polling


def voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_idle_channel_does_not_wake_the_loop() -> None:
    """With nothing to do, the loop thread sleeps: at most 2 wake-ups in one second."""
    # The lag monitor's tick is the one timer a LoopThread has; off, an idle loop never wakes.
    with LoopThread("idle-channel", lag_interval=None) as lt:
        ch = lt.channel(noop_batch)
        ch.put(1)
        assert ch.flush(timeout=5)  # the consumer has run and parked
        native_id = lt.thread.native_id
        assert native_id is not None
        before = voluntary_switches(native_id)
        time.sleep(1.0)  # the measurement window itself
        after = voluntary_switches(native_id)
        assert after - before <= 2
        ch.put(2)
        assert ch.flush(timeout=5)


# ---------------------------------------------------------------- fork and exit


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_channel_closed_in_forked_child(lt: LoopThread) -> None:
    """In a forked child the parent's channel refuses puts instead of losing them."""
    ch = lt.channel(noop_batch)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ch.put(1)
            answer = "accepted"
        except ChannelClosedError as exc:
            answer = "fork" if "fork" in str(exc) else repr(exc)
        except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
            answer = repr(exc)
        os.write(write_fd, answer.encode())
        os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 20)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        answer = os.read(read_fd, 4096).decode() if ready else "hung"
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert answer == "fork"
    ch.put(2)
    assert ch.flush(timeout=5)


def test_exit_drains_default_loop_channels() -> None:
    """Items put into a default-loop channel just before exit are all handled by exit."""
    source = """
        import asyncio, logging, sys, loopthread
        logging.getLogger("loopthread").setLevel(logging.DEBUG)  # shows loop_thread.stopped
        logging.getLogger("loopthread").addHandler(logging.StreamHandler(sys.stdout))
        total = 0
        async def handler(batch):
            global total
            await asyncio.sleep(0)
            total += len(batch)
            sys.stdout.write(f"handled {total}\\n")
            sys.stdout.flush()
        ch = loopthread.default().channel(handler, batch_size=100)
        for i in range(20_000):
            ch.put(i)
        print("main returns", flush=True)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    handled = [line for line in proc.stdout.splitlines() if line.startswith("handled ")]
    assert handled[-1] == "handled 20000"
    assert "items_unhandled=0" in proc.stdout
