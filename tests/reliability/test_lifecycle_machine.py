"""Hypothesis stateful test: lifecycle, facade and channel operations from several threads,
in any order.

Operations: start, run (from pool threads, with and without timeouts), run a failing
coroutine, submit, gather, stop; open a channel (any overflow policy and size; a handler that
succeeds, suspends, or fails some batches), put from pool threads and from the loop thread
(``lt.run`` of a coroutine that calls ``ch.put``), flush, close.

Invariants:

* no call waits forever: every answer arrives within ``ANSWER_BOUND`` (a bound that fails
  loudly, never a wait), and each is right: the result, the coroutine's own exception,
  ``TimeoutError``, ``LoopNotRunningError``, or for puts ``ChannelClosedError`` /
  ``ChannelFullError``;
* every accepted item is handled exactly once or counted: no item reaches a handler twice,
  none that was not accepted; per channel, ``put == handled + failed + dropped + unhandled``
  once it is closed, with ``handled`` and ``failed`` equal to what the handler saw;
* ``stop()`` returns within its deadline plus the documented 0.25 s floor (plus scheduling
  slack on a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from loopthread import (
    Channel,
    ChannelClosedError,
    ChannelFullError,
    LoopNotRunningError,
    LoopThread,
    LoopThreadError,
)
from tests.reliability._support import ANSWER_BOUND, SLACK, record, scaled

OK_ERRORS = (LoopNotRunningError, TimeoutError)
PUT_ERRORS = (ChannelClosedError, ChannelFullError, LoopNotRunningError)
STOP_FLOOR = 0.25  # documented in LoopThread.stop: the least it waits for the loop thread


async def work(value: int, suspend: bool) -> int:
    if suspend:
        await asyncio.sleep(0)
    return value


async def fail(value: int) -> int:
    await asyncio.sleep(0)
    raise KeyError(value)


async def put_on_loop(channel: Channel[int], item: int) -> bool:
    """``ch.put`` called on the loop thread itself (never blocks there, whatever the policy)."""
    return channel.put(item)


@dataclass
class Tracked:
    """A channel under test and what its handler saw (written on the loop thread only)."""

    channel: Channel[int]
    handled: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    puts: list[tuple[int, concurrent.futures.Future[Any]]] = field(default_factory=list)


def make_handler(tracked_ref: list[Tracked], kind: str) -> Any:
    """A handler that records its batch as handled, or (``fails``) fails batches whose first
    item is a multiple of 3, after recording them as failed."""

    async def handler(batch: list[int]) -> None:
        tracked = tracked_ref[0]
        if kind == "suspends":
            await asyncio.sleep(0)
        if kind == "fails" and batch[0] % 3 == 0:
            tracked.failed.extend(batch)
            raise ValueError("a failing batch")
        tracked.handled.extend(batch)

    return handler


class LifecycleMachine(RuleBasedStateMachine):
    """Start, run, submit, gather, stop a LoopThread, and open, put into, flush and close
    channels on it, from a pool of threads and from the loop thread."""

    def __init__(self) -> None:
        super().__init__()
        self.lt = LoopThread("machine", cancel_grace=0.2, metrics_registry=None)
        self.pool = concurrent.futures.ThreadPoolExecutor(6)
        self.pending: list[tuple[str, Any, concurrent.futures.Future[Any]]] = []
        self.channels: list[Tracked] = []
        self.items = itertools.count()
        self.stopped = False
        self.stops = 0
        self.calls = 0
        self.puts = 0
        self.steps = 0

    # ------------------------------------------------------------ facade operations

    @initialize(started=st.booleans(), overflow=st.sampled_from(["block", "drop_oldest"]))
    def begin(self, started: bool, overflow: str) -> None:
        """Half the runs begin on a running loop with one channel open (so that channel
        operations get most of the steps); the other half begin with a LoopThread not started."""
        if started:
            self.lt.start()
            self.open_channel(overflow, 4, 2, "records")

    @rule()
    def start(self) -> None:
        if self.stopped:
            with pytest.raises(LoopThreadError, match="cannot be restarted"):
                self.lt.start()
        else:
            assert self.lt.start() is self.lt

    @rule(value=st.integers(), suspend=st.booleans(), timeout=st.none() | st.floats(0, 0.05))
    def run_from_thread(self, value: int, suspend: bool, timeout: float | None) -> None:
        fut = self.pool.submit(self.lt.run, work(value, suspend), timeout=timeout)
        self.pending.append(("value", value, fut))

    @rule(value=st.integers())
    def run_failing(self, value: int) -> None:
        fut = self.pool.submit(self.lt.run, fail(value))
        self.pending.append(("keyerror", value, fut))

    @rule(value=st.integers(), suspend=st.booleans())
    def submit(self, value: int, suspend: bool) -> None:
        try:
            fut = self.lt.submit(work(value, suspend))
        except LoopNotRunningError:
            return
        self.pending.append(("value", value, fut))

    @rule(values=st.lists(st.integers(), max_size=5))
    def gather(self, values: list[int]) -> None:
        fut = self.pool.submit(self.lt.gather, *(work(v, True) for v in values))
        self.pending.append(("list", values, fut))

    @precondition(lambda self: self.steps >= 10)  # leave the running loop some steps first
    @rule(timeout=st.floats(0, 0.5))
    def stop(self, timeout: float) -> None:
        started = time.monotonic()
        report = self.lt.stop(timeout)
        elapsed = time.monotonic() - started
        assert elapsed <= max(timeout, STOP_FLOOR) + SLACK, (elapsed, timeout, report)
        assert report is not None
        self.stopped = True
        self.stops += 1

    @precondition(lambda self: len(self.pending) > 20)
    @rule()
    def settle(self) -> None:
        self._check_answers()

    # ------------------------------------------------------------ channel operations

    @rule(
        overflow=st.sampled_from(["block", "drop_newest", "drop_oldest", "error"]),
        maxsize=st.integers(1, 8),
        batch_size=st.integers(1, 4),
        kind=st.sampled_from(["records", "suspends", "fails"]),
    )
    def open_channel(self, overflow: str, maxsize: int, batch_size: int, kind: str) -> None:
        ref: list[Tracked] = []
        try:
            channel: Channel[int] = self.lt.channel(
                make_handler(ref, kind), maxsize=maxsize, overflow=overflow, batch_size=batch_size
            )
        except LoopNotRunningError:
            assert not self.lt.running
            return
        ref.append(Tracked(channel))
        self.channels.append(ref[0])

    @precondition(lambda self: self.channels)
    @rule(
        data=st.data(),
        count=st.integers(1, 12),
        timeout=st.none() | st.floats(0, 0.05),
        from_loop=st.booleans(),
    )
    def put(self, data: st.DataObject, count: int, timeout: float | None, from_loop: bool) -> None:
        self._put(data, count, timeout, from_loop)

    @precondition(lambda self: self.channels)
    @rule(data=st.data(), count=st.integers(1, 30))
    def put_burst_from_threads(self, data: st.DataObject, count: int) -> None:
        self._put(data, count, None, False)

    def _put(self, data: st.DataObject, count: int, timeout: float | None, from_loop: bool) -> None:
        tracked = data.draw(st.sampled_from(self.channels))
        for _ in range(count):
            item = next(self.items)
            if from_loop:
                fut = self.pool.submit(self.lt.run, put_on_loop(tracked.channel, item))
            else:
                fut = self.pool.submit(tracked.channel.put, item, timeout=timeout)
            tracked.puts.append((item, fut))
            self.puts += 1

    @precondition(lambda self: self.channels)
    @rule(data=st.data(), timeout=st.floats(0, 0.2))
    def flush(self, data: st.DataObject, timeout: float) -> None:
        tracked = data.draw(st.sampled_from(self.channels))
        fut = self.pool.submit(tracked.channel.flush, timeout)
        self.pending.append(("bool", None, fut))

    @precondition(lambda self: self.channels)
    @rule(data=st.data(), timeout=st.none() | st.floats(0, 0.2))
    def close(self, data: st.DataObject, timeout: float | None) -> None:
        tracked = data.draw(st.sampled_from(self.channels))
        fut = self.pool.submit(tracked.channel.close, timeout)
        self.pending.append(("none", None, fut))

    # ------------------------------------------------------------ invariants

    @invariant()
    def state_is_consistent(self) -> None:
        self.steps += 1
        assert self.lt.state in {"new", "starting", "running", "stopping", "stopped", "dead"}
        if self.stopped:
            assert not self.lt.running

    @invariant()
    def nothing_handled_twice_or_unaccepted(self) -> None:
        for tracked in self.channels:
            seen = tracked.handled + tracked.failed
            assert len(seen) == len(set(seen)), "an item reached the handler twice"

    def _check_answers(self) -> None:
        for kind, expected, fut in self.pending:
            done, _ = concurrent.futures.wait([fut], timeout=ANSWER_BOUND)
            assert done, f"a {kind} call got no answer within {ANSWER_BOUND}s"
            self.calls += 1
            try:
                result = fut.result()
            except KeyError as exc:
                assert (kind, exc.args) == ("keyerror", (expected,))  # noqa: PT017
            except OK_ERRORS:
                assert kind not in ("bool", "none")  # flush and close never raise these
            else:
                if kind == "bool":
                    assert isinstance(result, bool)
                elif kind == "none":
                    assert result is None
                else:
                    assert kind in ("value", "list")
                    assert result == expected
        self.pending.clear()

    def _check_channels(self) -> None:
        for tracked in self.channels:
            accepted: set[int] = set()
            refused = 0
            for item, fut in tracked.puts:
                done, _ = concurrent.futures.wait([fut], timeout=ANSWER_BOUND)
                assert done, f"a put got no answer within {ANSWER_BOUND}s"
                try:
                    ok = fut.result()
                except PUT_ERRORS:
                    continue
                if ok:
                    accepted.add(item)
                else:
                    refused += 1
            seen = tracked.handled + tracked.failed
            assert set(seen) <= accepted, "a handler got an item that was never accepted"
            stats = tracked.channel.stats()
            assert stats.put == len(accepted) + refused
            assert stats.handled == len(tracked.handled)
            assert stats.failed == len(tracked.failed)
            assert stats.put == (
                stats.handled
                + stats.failed
                + stats.dropped
                + stats.unhandled
                + stats.depth
                + stats.in_flight
            ), stats
            if self.lt.state == "stopped":
                assert stats.closed
                assert stats.depth == stats.in_flight == 0

    def teardown(self) -> None:
        report = self.lt.stop(2.0)
        assert report is not None
        self._check_answers()
        self.pool.shutdown(wait=True)  # every put has its answer now
        if self.lt.loop_started:  # the thread exists only once start() was called
            self.lt.thread.join(ANSWER_BOUND)
        self._check_channels()
        record(
            "state machine (lifecycle + channels)",
            examples=1,
            calls_answered=self.calls,
            puts=self.puts,
            channels=len(self.channels),
            stops=self.stops + 1,
        )


LifecycleMachine.TestCase.settings = settings(
    max_examples=scaled(100, 2_000),
    stateful_step_count=scaled(40, 80),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = LifecycleMachine.TestCase
