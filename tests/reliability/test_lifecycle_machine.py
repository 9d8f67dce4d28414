"""Hypothesis stateful test: lifecycle operations from several threads, in any order.

Invariants: no call waits forever; every call gets a correct answer (its result, its exception,
TimeoutError, or LoopNotRunningError); every item a channel accepted is handled exactly once or
counted (dropped, failed, unhandled); ``stop()`` always returns within its deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from loopthread import LoopNotRunningError, LoopThread, LoopThreadError

ANSWER_BOUND = 10.0  # seconds: an upper bound that fails loudly, not a wait
OK_ERRORS = (LoopNotRunningError, TimeoutError)


async def work(value: int, suspend: bool) -> int:
    if suspend:
        await asyncio.sleep(0)
    return value


async def fail(value: int) -> int:
    await asyncio.sleep(0)
    raise KeyError(value)


class LifecycleMachine(RuleBasedStateMachine):
    """Start, run, submit, gather, put, flush and stop a LoopThread from a pool of threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lt = LoopThread("machine", cancel_grace=0.2)
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.pending: list[tuple[str, int, concurrent.futures.Future[Any]]] = []
        self.stopped = False

    # ------------------------------------------------------------ operations

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
        self.pending.append(("list", values, fut))  # type: ignore[arg-type]

    @rule(timeout=st.floats(0, 0.5))
    def stop(self, timeout: float) -> None:
        started = time.monotonic()
        report = self.lt.stop(timeout)
        assert time.monotonic() - started < timeout + 2.0
        assert report is not None
        self.stopped = True

    @precondition(lambda self: len(self.pending) > 20)
    @rule()
    def settle(self) -> None:
        self._check_answers()

    # ------------------------------------------------------------ invariants

    @invariant()
    def state_is_consistent(self) -> None:
        assert self.lt.state in {"new", "starting", "running", "stopping", "stopped", "dead"}
        if self.stopped:
            assert not self.lt.running

    def _check_answers(self) -> None:
        for kind, expected, fut in self.pending:
            # concurrent.futures.TimeoutError is the builtin TimeoutError, which is also a
            # legitimate answer, so "no answer" is asked of wait(), not of result().
            done, _ = concurrent.futures.wait([fut], timeout=ANSWER_BOUND)
            assert done, f"a {kind} call got no answer within {ANSWER_BOUND}s"
            try:
                result = fut.result()
            except KeyError as exc:
                assert (kind, exc.args) == ("keyerror", (expected,))  # noqa: PT017
            except OK_ERRORS:
                pass
            else:
                if kind == "list":
                    assert result == expected
                else:
                    assert kind == "value"
                    assert result == expected
        self.pending.clear()

    def teardown(self) -> None:
        report = self.lt.stop(2.0)
        assert report is not None
        self._check_answers()
        self.pool.shutdown(wait=True)


LifecycleMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = LifecycleMachine.TestCase
