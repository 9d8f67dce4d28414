"""loopthread.run and the @loopthread.blocking decorator."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

import loopthread
from loopthread import LoopThread, WouldDeadlockError

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")


@loopthread.blocking
async def add(a: int, b: int = 0) -> int:
    """Add two numbers on the loop."""
    await asyncio.sleep(0)
    return a + b


def test_blocking_runs_on_default_loop() -> None:
    """@blocking turns an async def into a plain function running on default()."""
    assert add(1, b=2) == 3
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers on the loop."


def test_blocking_with_options(lt: LoopThread) -> None:
    """@blocking(timeout=..., loop_thread=lt) runs on lt and enforces the timeout."""

    @loopthread.blocking(timeout=0.05, loop_thread=lt)
    async def hang() -> None:
        await asyncio.Event().wait()

    @loopthread.blocking(loop_thread=lt)
    async def where() -> str:
        import threading

        return threading.current_thread().name

    assert where() == "test-loop"
    with pytest.raises(TimeoutError):
        hang()


def test_blocking_sees_callers_context() -> None:
    """The caller's contextvars are visible inside the decorated coroutine."""

    @loopthread.blocking
    async def who() -> str:
        return user.get()

    token = user.set("ada")
    try:
        assert who() == "ada"
    finally:
        user.reset(token)


def test_blocking_from_loop_thread_raises(lt: LoopThread) -> None:
    """Calling the blocking wrapper from the loop thread says to await the original."""

    @loopthread.blocking(loop_thread=lt)
    async def inner() -> int:
        return 1

    async def outer() -> str:
        try:
            inner()
        except WouldDeadlockError as exc:
            return str(exc)
        return "no error"

    message = lt.run(outer())
    assert "await" in message
    assert "__wrapped__" in message


def test_blocking_rejects_plain_functions() -> None:
    """@blocking on a plain function is a TypeError that says to call it directly."""
    with pytest.raises(TypeError, match="call it directly"):

        @loopthread.blocking  # type: ignore[arg-type]
        def plain() -> int:
            return 1


def test_blocking_rejects_bad_options() -> None:
    """Bad decorator options fail at decoration time."""
    with pytest.raises(ValueError, match="timeout"):
        loopthread.blocking(timeout=-1)
    with pytest.raises(TypeError, match="loop_thread"):
        loopthread.blocking(loop_thread="default")  # type: ignore[call-overload]


def test_module_run() -> None:
    """loopthread.run() returns the result from the default loop."""
    assert loopthread.run(asyncio.sleep(0, "v")) == "v"
    with pytest.raises(TimeoutError):
        loopthread.run(asyncio.Event().wait(), timeout=0.01)
