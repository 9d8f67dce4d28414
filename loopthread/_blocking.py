"""The module-level facade: ``loopthread.run`` and the ``@loopthread.blocking`` decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from loopthread._default import default
from loopthread._exceptions import WouldDeadlockError
from loopthread._loopthread import LoopThread
from loopthread._validate import check_timeout
from loopthread._validate import is_async_callable as _is_async_callable

__all__ = ["blocking", "run"]

T = TypeVar("T")
P = ParamSpec("P")


def run(awaitable: Awaitable[T], /, *, timeout: float | None = None) -> T:
    """Run ``awaitable`` on the process-wide default loop and block for its result.

    Same contract as :meth:`LoopThread.run`.
    """
    return default().run(awaitable, timeout=timeout)


class _Decorator(Protocol):
    """What ``blocking(timeout=..., loop_thread=...)`` returns."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, AsyncIterator[T]], /) -> Callable[P, Iterator[T]]: ...


@overload
def blocking(fn: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, T]: ...  # pragma: no cover


@overload
def blocking(
    fn: Callable[P, AsyncIterator[T]], /
) -> Callable[P, Iterator[T]]: ...  # pragma: no cover


@overload
def blocking(
    *, timeout: float | None = None, loop_thread: LoopThread | None = None
) -> _Decorator: ...  # pragma: no cover


def blocking(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    timeout: float | None = None,
    loop_thread: LoopThread | None = None,
) -> Any:
    """Turn an ``async def`` function into a plain blocking function (an ``async def``
    generator function into one that returns a plain iterator: see ``LoopThread.iterate``).

    ``@blocking`` runs it on ``loopthread.default()``; ``@blocking(timeout=2, loop_thread=lt)``
    on ``lt`` with a timeout. The loop is looked up at call time, so decorating at import time
    starts nothing (and stays right across ``fork()``). The original stays reachable as
    ``wrapper.__wrapped__`` for async callers.

    Raises:
        TypeError: the decorated object is not an ``async def`` function.
        ValueError: ``timeout`` is negative.
    """
    checked_timeout = check_timeout(timeout)
    if loop_thread is not None and not isinstance(loop_thread, LoopThread):
        raise TypeError(
            f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
        )

    def decorate(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        if inspect.isasyncgenfunction(func):
            return _iterating(func, checked_timeout, loop_thread)  # type: ignore[return-value]
        if not _is_async_callable(func):
            name = getattr(func, "__qualname__", None) or type(func).__qualname__
            if not callable(func):
                advice = f"it is not callable at all ({type(func).__name__})"
            else:
                advice = (
                    "it is a plain function. If it returns a coroutine or other awaitable, run "
                    f"that with loopthread.run({name}(...)) or make it `async def`; if it is "
                    "synchronous, call it directly: it needs no wrapper"
                )
            raise TypeError(
                f"@loopthread.blocking wraps an `async def` function (or an object whose "
                f"__call__ is `async def`); {name} is not one: {advice}."
            )

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            lt = loop_thread if loop_thread is not None else default()
            if lt.in_loop_thread():
                name = getattr(func, "__qualname__", type(func).__qualname__)
                raise WouldDeadlockError(
                    f"{name}() is a blocking wrapper and was called on the loop thread; in "
                    f"async code await the original: await {name}.__wrapped__(...)."
                )
            return lt.run(func(*args, **kwargs), timeout=checked_timeout)

        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate


def _iterating(
    func: Callable[..., AsyncIterator[Any]], timeout: float | None, loop_thread: LoopThread | None
) -> Callable[..., Iterator[Any]]:
    """``@blocking`` on an ``async def`` generator function: a function returning a plain
    iterator (``lt.iterate``; ``timeout`` bounds the wait for each item)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        lt = loop_thread if loop_thread is not None else default()
        return lt.iterate(func(*args, **kwargs), timeout=timeout)

    return wrapper
