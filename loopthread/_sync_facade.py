"""Typed sync facades of async classes, for library authors who ship a sync client.

Python's type system cannot turn a class's ``async def`` methods into blocking ones by itself
(synchronicity generates stub files for that; asyncer and anyio wrap one function at a time).
So the facade is declared, one line per method, and each line is fully typed::

    class Client:                                   # the async SDK
        async def get(self, url: str) -> bytes: ...
        def stream(self, url: str) -> AsyncIterator[bytes]: ...
        async def __aenter__(self) -> Client: ...
        async def __aexit__(self, *exc: object) -> None: ...

    class SyncClient(loopthread.SyncFacade[Client]):
        get = loopthread.sync_method(Client.get)            # (url: str) -> bytes
        stream = loopthread.sync_iterator(Client.stream)    # (url: str) -> Iterator[bytes]

    with SyncClient(Client()) as client:           # __aenter__/__aexit__ on the loop
        body = client.get("https://example.org")   # mypy checks url: str and the bytes

The methods run on the facade's LoopThread (``loopthread.default()`` unless one is given),
looked up at call time, so a facade made at import works across ``fork()``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from loopthread._exceptions import LoopThreadError
from loopthread._validate import check_timeout

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["SyncFacade", "sync_iterator", "sync_method"]

A = TypeVar("A")
P = ParamSpec("P")
T = TypeVar("T")


class SyncFacade(Generic[A]):
    """Base class of a sync facade over one async object (``facade.async_obj``).

    Used as a context manager, it enters and exits the async object's own async context (if
    it has one) on the loop, in one task, as ``async with`` would.
    """

    def __init__(self, async_obj: A, /, *, loop_thread: LoopThread | None = None) -> None:
        from loopthread._loopthread import LoopThread

        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        self.async_obj = async_obj
        self._loop_thread = loop_thread
        self._entered: AbstractContextManager[Any] | None = None

    @classmethod
    def open(
        cls,
        factory: Callable[[], Awaitable[A]] | Callable[[], A],
        /,
        *,
        loop_thread: LoopThread | None = None,
    ) -> Self:
        """Make the async object on the loop (``factory()``, awaited if it returns an
        awaitable: for clients that need a running loop to be created) and wrap it."""
        lt = loop_thread if loop_thread is not None else _default()
        return cls(lt.run(_make(factory)), loop_thread=loop_thread)

    @property
    def loop_thread(self) -> LoopThread:
        """The LoopThread the methods run on (the default loop, looked up now, if none)."""
        return self._loop_thread if self._loop_thread is not None else _default()

    def __enter__(self) -> Self:
        if self._entered is not None:
            raise LoopThreadError(
                f"this {type(self).__name__} is entered already (its async object's context is "
                "open); use one `with` per facade, or make another facade."
            )
        if hasattr(type(self.async_obj), "__aenter__"):
            entered: AbstractContextManager[Any] = self.loop_thread.enter(self.async_obj)  # type: ignore[arg-type]
            entered.__enter__()
            self._entered = entered
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        entered, self._entered = self._entered, None
        if entered is None:
            return None
        return entered.__exit__(exc_type, exc, tb)


class sync_method(Generic[A, P, T]):
    """``name = sync_method(AsyncClass.name)``: the async method as a blocking one, typed."""

    def __init__(
        self,
        method: Callable[Concatenate[A, P], Awaitable[T]],
        /,
        *,
        timeout: float | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(method):
            raise TypeError(
                "sync_method() takes an `async def` method of the async class, e.g. "
                f"sync_method(Client.get); got {method!r}. For an async generator method use "
                "sync_iterator()."
            )
        self._method = method
        self._timeout = check_timeout(timeout)
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, obj: SyncFacade[A], owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, obj: SyncFacade[A] | None, owner: type[Any]) -> Self | Callable[P, T]:
        if obj is None:
            return self
        method, timeout = self._method, self._timeout

        def bound(*args: P.args, **kwargs: P.kwargs) -> T:
            return obj.loop_thread.run(method(obj.async_obj, *args, **kwargs), timeout=timeout)

        bound.__name__ = getattr(method, "__name__", "method")
        bound.__doc__ = method.__doc__
        return bound


class sync_iterator(Generic[A, P, T]):
    """``name = sync_iterator(AsyncClass.name)``: a method returning an async iterator (an
    async generator method) as one returning a plain iterator (see ``LoopThread.iterate``)."""

    def __init__(
        self,
        method: Callable[Concatenate[A, P], AsyncIterator[T]],
        /,
        *,
        timeout: float | None = None,
        read_ahead: int = 64,
    ) -> None:
        if not callable(method):
            raise TypeError(f"sync_iterator() takes a method of the async class; got {method!r}.")
        self._method = method
        self._timeout = check_timeout(timeout)
        self._read_ahead = read_ahead
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, obj: SyncFacade[A], owner: type[Any]) -> Callable[P, Iterator[T]]: ...

    def __get__(
        self, obj: SyncFacade[A] | None, owner: type[Any]
    ) -> Self | Callable[P, Iterator[T]]:
        if obj is None:
            return self
        method = self._method

        def bound(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            return obj.loop_thread.iterate(
                method(obj.async_obj, *args, **kwargs),
                timeout=self._timeout,
                read_ahead=self._read_ahead,
            )

        bound.__name__ = getattr(method, "__name__", "method")
        return bound


async def _make(factory: Callable[[], Awaitable[A]] | Callable[[], A]) -> A:
    made = factory()
    if inspect.isawaitable(made):
        return await made
    return made


def _default() -> LoopThread:
    from loopthread._default import default

    return default()
