"""What sync code reaches for beyond calls: plain callables on the loop thread, callers on
other event loops, the user's stop hooks (async context managers: :mod:`loopthread._enter`;
async iterators: :mod:`loopthread._iterate`).

Everything here is built on ``lt.submit`` (the core's one hand-off); nothing touches the
core's internals. The pieces that hold something open on the loop between two sync calls (an
entered context manager, an async iterator being read) keep it inside *one* task, so that
``__aexit__`` and ``aclose()`` run in the task that entered or started it (anyio's cancel
scopes and task groups insist on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from loopthread._core._call import SubmitFuture
from loopthread._core._component import ComponentBase, StopPhase
from loopthread._exceptions import LoopThreadError
from loopthread._log import logger
from loopthread._util import describe
from loopthread._validate import close_awaitables
from loopthread._validate import is_async_callable as _is_async_callable

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["OnStop", "arun", "call_soon", "run_sync"]

T = TypeVar("T")


async def _invoke_sync(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    result = fn(*args)
    if inspect.isawaitable(result):
        close_awaitables([result])
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} returned an awaitable: lt.run_sync() and "
            "lt.call_soon() run plain functions; use lt.run(...) for this one."
        )
    return result


def run_sync(
    lt: LoopThread, fn: Callable[..., T], args: tuple[Any, ...], timeout: float | None
) -> T:
    """``fn(*args)`` on the loop thread; its result. On the loop thread itself: called at once."""
    if not callable(fn):
        raise TypeError(f"lt.run_sync() takes a plain callable; got {type(fn).__name__} {fn!r}.")
    _refuse_async(fn, "lt.run_sync")
    if lt.in_loop_thread():
        return fn(*args)
    return lt.run(_invoke_sync(fn, args), timeout=timeout)


def call_soon(lt: LoopThread, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
    """Schedule ``fn(*args)`` on the loop thread; a ``concurrent.futures.Future`` of its result."""
    if not callable(fn):
        raise TypeError(f"lt.call_soon() takes a plain callable; got {type(fn).__name__} {fn!r}.")
    _refuse_async(fn, "lt.call_soon")
    return lt.submit(_invoke_sync(fn, args))


def _refuse_async(fn: object, api: str) -> None:
    if _is_async_callable(fn):
        raise TypeError(
            f"{api}() takes a plain (sync) function; {getattr(fn, '__qualname__', fn)!r} is "
            "async: use lt.call(fn, *args) or lt.submit(fn(*args))."
        )


async def arun(lt: LoopThread, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on ``lt``'s loop from a coroutine running on another loop.

    Cancelling the caller cancels the work on ``lt`` and waits for its cleanup (at most
    ``lt.cancel_grace``) before the cancellation goes on.
    """
    loop = asyncio.get_running_loop()
    if lt.loop_started and loop is lt.loop:
        close_awaitables([awaitable])
        raise LoopThreadError(
            f"lt.arun() was awaited on the loop of LoopThread {lt.name!r} itself; there, await "
            "the coroutine directly (result = await fetch())."
        )
    future = lt.submit(awaitable)
    over = loop.create_future()

    def tell() -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop closed meanwhile
            loop.call_soon_threadsafe(_set_none, over)

    if isinstance(future, SubmitFuture):
        future.when_ended(tell)
    else:  # pragma: no cover - lt.submit always returns one
        future.add_done_callback(lambda _: tell())
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or not task.cancelling():
            raise  # the work itself was cancelled on lt (it stopped): not our caller
        future.cancel()
        grace = lt.cancel_grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(over), None if grace == float("inf") else grace)
        raise


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OnStop(ComponentBase):
    """``lt.on_stop(async_fn)``: ``await async_fn()`` on the loop when ``lt`` stops, in the
    ``"close"`` phase (after channels drained and calls finished or were cancelled, while the
    loop's other tasks still run, before resources close), bounded by the stop deadline."""

    stop_phase: StopPhase = "close"

    def __init__(self, fn: Callable[[], Awaitable[object]]) -> None:
        if not _is_async_callable(fn):
            close_awaitables([fn])
            raise TypeError(
                "lt.on_stop() takes an async function of no arguments (it is called at stop); "
                f"got {type(fn).__name__} {fn!r}."
            )
        self._fn = fn

    @property
    def name(self) -> str:
        return f"on-stop:{getattr(self._fn, '__qualname__', type(self._fn).__qualname__)}"

    async def on_stop(self, deadline: float) -> None:
        try:
            await self._fn()
        except Exception as exc:  # noqa: BLE001 - a faulty hook is logged; the others run
            logger.error("loop_thread.on_stop_failed", hook=self.name, error=describe(exc))

    def stats(self) -> None:
        return None
