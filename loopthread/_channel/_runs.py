"""What the adapted handlers of ``_modes`` (on the loop) and ``_worker`` (in the executor)
share: the runs of a ``context="producer"`` batch, the partial failure, the awaitable checks."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Iterator
from types import CoroutineType
from typing import Any, TypeGuard

__all__ = ["PartialFailure", "awaitable_refused", "is_awaitable", "runs"]


class PartialFailure(Exception):
    """Raised by an adapted handler when some of its runs failed: ``failed`` items of the
    batch failed (``error`` is the first run's exception), the others were handled."""

    def __init__(self, failed: int, error: BaseException) -> None:
        super().__init__(f"{failed} item(s) failed: {error!r}")
        self.failed = failed
        self.error = error


def is_awaitable(result: object) -> TypeGuard[Awaitable[object]]:
    """True for what a handler returns to be awaited (a coroutine, a future, ...)."""
    return result is not None and (type(result) is CoroutineType or hasattr(result, "__await__"))


def runs(batch: list[Any]) -> Iterator[tuple[contextvars.Context, list[Any]]]:
    """Consecutive ``(item, context)`` pairs of ``batch`` grouped by equal contexts.

    ``==`` on two contexts of one thread whose variables did not change is an identity check
    of their (shared) mapping: O(1)."""
    it = iter(batch)
    item, ctx = next(it)
    items = [item]
    for item, other in it:
        if other is ctx or other == ctx:
            items.append(item)
        else:
            yield ctx, items
            ctx, items = other, [item]
    yield ctx, items


def awaitable_refused(result: object) -> TypeError:
    """The error for an awaitable returned where a plain function's result was expected (the
    awaitable is closed: no "never awaited" warning)."""
    close = getattr(result, "close", None)
    if callable(close):
        close()  # a coroutine never awaited: no RuntimeWarning
    return TypeError(
        "the channel's handler returned an awaitable where a plain function was expected "
        "(run_in='executor', or a context='producer' handler that does not look async): "
        "declare it `async def` and run it on the loop (run_in='loop')."
    )
