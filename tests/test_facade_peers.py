"""Bugs the peers' own test suites found in the facade (anyio's test_from_thread, asgiref's
test_sync), each pinned here through the public API (issue "The whole facade")."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import Any

import pytest
import sniffio

from loopthread import LoopThread, WouldDeadlockError, blocking


async def forever() -> None:
    await asyncio.Event().wait()


async def echo(value: Any) -> Any:
    return value


def test_a_cancelled_submit_future_wakes_wait_first_completed(lt: LoopThread) -> None:
    """``concurrent.futures.wait(..., FIRST_COMPLETED)`` returns when a future is cancelled by
    its caller (it used to stay CANCELLED, never CANCELLED_AND_NOTIFIED: anyio's #575)."""
    slow = lt.submit(forever())
    waiting: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def wait_for_it() -> None:
        waiting.set_result(
            concurrent.futures.wait([slow], timeout=10, return_when="FIRST_COMPLETED")
        )

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    # Cancel once the wait() is registered on the future (it is, once wait() blocks).
    assert slow.cancel()
    done, not_done = waiting.result(timeout=10)
    waiter.join(10)
    assert done == {slow}
    assert not not_done


def test_as_completed_sees_a_cancelled_submit_future(lt: LoopThread) -> None:
    futures = [lt.submit(forever()), lt.submit(echo(1))]
    assert futures[0].cancel()
    seen = list(concurrent.futures.as_completed(futures, timeout=10))
    assert set(seen) == set(futures)


def test_the_callers_sniffio_marker_does_not_leak_into_the_coroutine(lt: LoopThread) -> None:
    """A thread of a trio program (its context says "trio") calling lt.run: code on the loop
    sees asyncio (anyio's #523); the caller's own context keeps its marker."""

    async def detect() -> str:
        return sniffio.current_async_library()

    token = sniffio.current_async_library_cvar.set("trio")
    try:
        assert lt.run(detect(), timeout=10) == "asyncio"
        assert lt.submit(detect()).result(timeout=10) == "asyncio"
        assert sniffio.current_async_library_cvar.get() == "trio"
    finally:
        sniffio.current_async_library_cvar.reset(token)


def test_submit_result_on_the_loop_thread_raises_instead_of_freezing_the_loop(
    lt: LoopThread,
) -> None:
    async def inner() -> str:
        future = lt.submit(echo(1))
        try:
            future.result(timeout=5)
        except WouldDeadlockError as exc:
            return str(exc)
        return "no error"

    message = lt.run(inner(), timeout=10)
    assert "lt.submit(...).result() was called on the loop thread" in message
    assert "asyncio.wrap_future" in message


def test_call_from_the_loop_thread_names_lt_call(lt: LoopThread) -> None:
    async def inner() -> str:
        try:
            lt.call(echo, 1)
        except WouldDeadlockError as exc:
            return str(exc)
        return "no error"

    message = lt.run(inner(), timeout=10)
    assert message.startswith("lt.call() was called from the loop thread")


def test_a_submit_future_cancelled_before_it_starts_never_runs(lt: LoopThread) -> None:
    """The same on every Python: cancelled before the loop took it up, the coroutine never
    runs (3.12+ used to run it to its first await, 3.11 did not)."""
    for _ in range(20):
        ran: list[str] = []
        gate = threading.Event()

        async def block_the_loop(gate: threading.Event = gate) -> None:
            gate.wait(10)  # holds the loop so the next submit waits in the inbox

        async def body(ran: list[str] = ran) -> None:
            ran.append("started")
            try:
                await asyncio.sleep(10)
            finally:
                ran.append("finally")

        blocker = lt.submit(block_the_loop())
        future = lt.submit(body())
        assert future.cancel()
        gate.set()
        blocker.result(timeout=10)
        assert lt.run(echo("after"), timeout=10) == "after"  # the loop has drained the inbox
        assert ran == []


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x * 2


def test_blocking_wraps_an_object_with_an_async_call(lt: LoopThread) -> None:
    double = blocking(loop_thread=lt)(AsyncCallable())
    assert double(21) == 42


def test_blocking_wraps_a_partial_of_an_async_function(lt: LoopThread) -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    add_one = blocking(loop_thread=lt)(functools.partial(add, 1))
    assert add_one(2) == 3


def test_blocking_on_a_plain_function_returning_a_coroutine_gives_the_right_advice() -> None:
    def returns_coroutine() -> Any:
        return echo(1)

    with pytest.raises(TypeError, match=r"loopthread.run\(.*returns_coroutine\(...\)\)"):
        blocking(returns_coroutine)
