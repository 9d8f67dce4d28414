"""The checks of a channel's handler and options at creation, each failure saying what to do
instead."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from loopthread._channel._base import ChannelBase
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["check_drain_after", "check_handler", "looks_async"]


def check_handler(handler: object, run_in: str) -> bool:
    """Check ``handler`` for ``run_in`` (a checked value); return whether it looks async.

    Raises:
        TypeError: not a callable (a coroutine object: the call instead of the function), or
            an async one with ``run_in="executor"``.
    """
    if isinstance(handler, CoroutineType):
        handler.close()
        raise TypeError(
            "handler must be the function itself, called with each batch; got a coroutine "
            "object. Pass lt.channel(handle), not lt.channel(handle(...))."
        )
    if not callable(handler):
        raise TypeError(
            "handler must be a callable taking a list of items, such as "
            f"`async def handle(batch): ...`; got {handler!r}."
        )
    is_async = looks_async(handler)
    if is_async and run_in == "executor":
        raise TypeError(
            f"handler {describe(handler)} is async: run_in='executor' runs a plain function "
            "in the executor. Run it on the loop (run_in='loop', the default), or pass a "
            "plain function (an async handler can `await loop.run_in_executor(...)` itself)."
        )
    return is_async


def check_drain_after(drain_after: object, loop_thread: LoopThread) -> None:
    """Check a channel's ``drain_after=``: None, or a channel of the same LoopThread (stop()
    awaits its end on that loop).

    Raises:
        TypeError: not a channel.
        ValueError: a channel of another LoopThread.
    """
    if drain_after is None:
        return
    if not isinstance(drain_after, ChannelBase):
        raise TypeError(f"drain_after must be a Channel or None; got {drain_after!r}.")
    if drain_after._lt is not loop_thread:
        raise ValueError(
            f"drain_after must be a channel of this LoopThread ({loop_thread.name!r}); "
            f"{drain_after.name!r} is on {drain_after._lt.name!r}, whose stop() is not "
            "this one's. Create the upstream channel on the same LoopThread, or drop "
            "drain_after."
        )


def looks_async(handler: Callable[..., Any]) -> bool:
    """True for an ``async def`` handler (a function, a method, a partial, or an object whose
    ``__call__`` is one). A miss is harmless: a plain function that returns an awaitable is
    found out at its first call (Consumer._consume_inline)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - the method, not callable()
    return inspect.iscoroutinefunction(call)
