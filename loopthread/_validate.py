"""Checks at the API boundary: wrong input fails at once, with the right call in the message.

A coroutine that is refused is closed here, so the user never also sees a
"coroutine ... was never awaited" warning on top of the real error.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from collections.abc import Awaitable, Coroutine, Iterable
from types import CoroutineType
from typing import Any, TypeVar

from loopthread._exceptions import LoopThreadError

T = TypeVar("T")


def close_awaitables(items: Iterable[object]) -> None:
    """Close every coroutine in ``items`` (the others need nothing)."""
    for item in items:
        if isinstance(item, CoroutineType):
            item.close()


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _callable_name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "fn"


def as_coroutine(
    awaitable: Awaitable[T], api: str, loop: asyncio.AbstractEventLoop | None = None
) -> Coroutine[Any, Any, T]:
    """Return ``awaitable`` as a coroutine, or raise ``TypeError`` saying what to pass instead.

    ``api`` is the call as the user wrote it (``"lt.run"``), used in the message; ``loop`` the
    loop it will run on (an asyncio Future of another loop is refused).

    Raises:
        TypeError: ``awaitable`` is not awaitable.
        LoopThreadError: an asyncio Future or Task that belongs to another event loop.
    """
    if type(awaitable) is CoroutineType:  # the hot path: one type check
        return awaitable
    if (
        isinstance(awaitable, asyncio.Future)
        and loop is not None
        and awaitable.get_loop() is not loop
    ):
        raise LoopThreadError(
            f"{api}() got an asyncio Future or Task of another event loop; a future belongs "
            f"to the loop that created it. Pass the coroutine itself ({api}(fetch())), or "
            "await the future on its own loop."
        )
    if inspect.isawaitable(awaitable):
        return _await(awaitable)
    if callable(awaitable):
        name = _callable_name(awaitable)
        if inspect.iscoroutinefunction(awaitable) or inspect.iscoroutinefunction(
            getattr(awaitable, "__call__", None)  # noqa: B004 - async __call__ objects
        ):
            raise TypeError(
                f"{api}() takes an awaitable, not the async function {name} itself: "
                f"did you mean {api}({name}())?"
            )
        raise TypeError(
            f"{api}() takes an awaitable such as a coroutine; got the callable {name}. "
            f"Call it to get the coroutine ({api}({name}(...))), or use lt.call() for an "
            "async function with arguments."
        )
    hint = ""
    if hasattr(awaitable, "result") and hasattr(awaitable, "add_done_callback"):
        hint = " A concurrent.futures.Future is not awaitable: call its .result() instead."
    raise TypeError(
        f"{api}() takes an awaitable such as fetch(); got {_describe(awaitable)}.{hint}"
    )


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """Validate a timeout in seconds; ``None`` and ``inf`` both mean "wait as long as it takes".

    Raises:
        TypeError: not a real number.
        ValueError: negative or NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None; got {_describe(timeout)}. "
            f"Pass e.g. {name}=2.5, or {name}=None to wait without a limit."
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"{name} must be >= 0 seconds or None; got {timeout!r}. "
            f"Pass {name}=None to wait without a limit."
        )
    if math.isinf(timeout) or timeout > threading.TIMEOUT_MAX:
        # Beyond what any wait accepts (~292 years): the same as no limit, not OverflowError.
        return None
    return float(timeout)


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Validate an integer option such as ``maxsize`` or ``executor_workers``.

    Raises:
        TypeError: not an int.
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {_describe(value)}.")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against its allowed values.

    Raises:
        ValueError: ``value`` is not one of ``choices``.
    """
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")
    assert isinstance(value, str)
    return value


def is_async_callable(obj: object) -> bool:
    """An ``async def`` function, a partial of one, or an object with an async ``__call__``."""
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the method itself is asked about
    return callable(obj) and not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def check_interval(value: float | None, name: str) -> float | None:
    """Validate a period in seconds that must be > 0, or None (off).

    Raises:
        TypeError: not a real number or None.
        ValueError: zero, negative, NaN or infinite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None; got {type(value).__name__} {value!r}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be > 0 seconds; got {value!r}. Pass {name}=None to turn it off."
        )
    return float(value)
