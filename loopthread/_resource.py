"""Shared async resources: created once, lazily, on the loop; closed in reverse order at stop().

A connection pool or an HTTP session belongs to the loop it was created on. ``lt.resource()``
hands out a :class:`Resource` whose ``await res.get()`` creates the value on first use (one
creation however many callers race for it) and returns the cached value after that.

Design notes:

* Creation runs in its own Task with an empty ``contextvars.Context`` (a shared object must not
  capture the first caller's context) and callers wait on it through ``asyncio.shield``: a
  caller that gives up does not cancel the creation the others wait for. A failed creation is
  forgotten, so the next ``get()`` tries again.
* One component per LoopThread (stop phase ``"close_last"``) closes every created value, in
  reverse order of creation, after everything that may still use them (enricher shutdowns,
  other components' closes) and before the loop's remaining tasks are cancelled, so a value
  whose ``aclose()`` needs its own background task (a batching writer) still has it; a value
  created by one of those earlier closes is still closed. Each close is bounded, but keeps
  back a small share of the time left for the ones after it, so a hanging close cannot skip
  the others. A loop that dies runs the same close.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from loopthread._core._component import ComponentBase, StopPhase
from loopthread._core._shutdown import CLOSE_FLOOR
from loopthread._exceptions import LoopNotRunningError, LoopThreadError
from loopthread._log import RateLimiter, logger
from loopthread._util import describe
from loopthread._validate import close_awaitables

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["Resource", "check_resource_args"]

T = TypeVar("T")

# Seconds of the stop() budget each close keeps back for every close still to come (capped at
# half of what is left).
_CLOSE_RESERVE = 0.1


class Resource(Generic[T]):
    """A value created once, lazily, on a LoopThread's loop, and closed when it stops.

    Made by :meth:`LoopThread.resource`; ``await res.get()`` returns the value.

    Closing at ``stop()``: ``close(value)`` if ``close`` was given; otherwise the value's
    ``aclose()``, else its ``close()``, called on the loop thread (an awaitable result is
    awaited); a value with neither needs no closing.
    """

    __slots__ = (
        "__weakref__",
        "_close",
        "_closer",
        "_creating",
        "_factory",
        "_failures",
        "_has_value",
        "_limiter",
        "_lt",
        "_name",
        "_value",
    )

    def __init__(
        self,
        lt: LoopThread,
        factory: Callable[[], Awaitable[T]],
        *,
        close: Callable[[T], Awaitable[object] | object] | None = None,
        name: str | None = None,
    ) -> None:
        check_resource_args(factory, close, name, "lt.resource()")
        self._lt = lt
        self._factory = factory
        self._close = close
        self._name = name or getattr(factory, "__qualname__", None) or type(factory).__qualname__
        self._value: T | None = None
        self._has_value = False
        self._creating: asyncio.Task[T] | None = None
        self._failures = 0
        self._limiter = RateLimiter()  # loop thread only
        self._closer = lt.components.attach_once("resources", lambda: _Closer(lt.name))

    @property
    def name(self) -> str:
        """The name given, or the factory's name (used in logs)."""
        return self._name

    @property
    def created(self) -> bool:
        """True while a created value is cached (until it is closed at stop())."""
        return self._has_value

    async def get(self) -> T:
        """Return the value, creating it on first use (concurrent first calls share one creation).

        Raises:
            LoopThreadError: awaited on another event loop than this LoopThread's.
            LoopNotRunningError: the LoopThread stopped and closed its resources.
            BaseException: whatever the factory raised (the next ``get()`` tries again).
        """
        loop = asyncio.get_running_loop()
        if self._lt.pid != os.getpid():
            raise LoopThreadError(
                f"Resource {self._name!r} belongs to LoopThread {self._lt.name!r} of process "
                f"{self._lt.pid}; this is process {os.getpid()}, a forked child, where that "
                "loop does not run and its value must not be used. Declare the resource with "
                "loopthread.resource(make) instead: one value per process, created on that "
                "process's default loop (or create the LoopThread and its resources in the "
                "child)."
            )
        if self._lt.state == "new" or loop is not self._lt.loop:
            raise LoopThreadError(
                f"Resource {self._name!r} belongs to LoopThread {self._lt.name!r}; "
                "res.get() was awaited on another event loop (values such as connection pools "
                "are bound to the loop that made them). Await it in a coroutine that runs on "
                "that LoopThread: lt.run(use(res)), or lt.submit(...)."
            )
        if self._has_value:
            return self._value  # type: ignore[return-value]
        if self._closer.closed:
            raise LoopNotRunningError(
                f"Resource {self._name!r} was closed because LoopThread {self._lt.name!r} "
                "stopped; create a new LoopThread and resource."
            )
        task = self._creating
        if task is None:
            task = loop.create_task(
                self._create(),
                name=f"loopthread-create-{self._name}",
                context=contextvars.Context(),
            )
            task.add_done_callback(_retrieve)
            self._creating = task
        return await asyncio.shield(task)

    async def _create(self) -> T:
        try:
            awaitable = self._factory()
            if not inspect.isawaitable(awaitable):
                raise TypeError(
                    f"the factory of resource {self._name!r} returned "
                    f"{type(awaitable).__name__}, not an awaitable: pass an async function, "
                    "e.g. async def make(): return aiohttp.ClientSession()."
                )
            value = await awaitable
        except BaseException as exc:
            self._creating = None
            self._failures += 1
            suppressed = self._limiter.allow("create")
            if suppressed is not None and not isinstance(exc, asyncio.CancelledError):
                _log(
                    "warning",
                    "resource.create_failed",
                    resource=self._name,
                    error=describe(exc),
                    failures=self._failures,
                    suppressed=suppressed,
                )
            raise
        self._value = value
        self._has_value = True
        self._creating = None
        self._closer.created.append(self)
        return value

    async def _close_value(self) -> None:
        value = self._value
        self._value = None
        self._has_value = False
        if self._close is not None:
            result: object = self._close(value)  # type: ignore[arg-type]
        else:
            method = getattr(value, "aclose", None)
            if not callable(method):
                method = getattr(value, "close", None)
            if not callable(method):
                return
            result = method()
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        state = "created" if self._has_value else "closed" if self._closer.closed else "not created"
        return f"<Resource {self._name!r} {state} on {self._lt.name!r}>"


class _Closer(ComponentBase):
    """Closes one LoopThread's resources at stop(), newest first. Loop thread only."""

    __slots__ = ("closed", "created", "lt_name")

    stop_phase: StopPhase = "close_last"

    def __init__(self, lt_name: str) -> None:
        self.lt_name = lt_name
        self.created: list[Resource[Any]] = []  # in order of creation
        self.closed = False

    @property
    def name(self) -> str:
        """``resources``."""
        return "resources"

    def stats(self) -> int:
        """How many created values are waiting to be closed."""
        return len(self.created)

    async def on_stop(self, deadline: float) -> None:
        """Close every created value, newest first, each bounded (see the module docstring)."""
        self.closed = True
        interrupted: asyncio.CancelledError | None = None
        created = self.created
        loop = asyncio.get_running_loop()
        while created:
            resource = created.pop()
            remaining = deadline - time.monotonic()
            # Keep back a share for every close still to come: none is skipped.
            budget = max(CLOSE_FLOOR, remaining - min(remaining / 2, _CLOSE_RESERVE * len(created)))
            # Each close in its own task: one that ignores its cancellation (swallows
            # CancelledError) is abandoned at its budget instead of holding up the others.
            task = loop.create_task(
                resource._close_value(), name=f"loopthread-close-{resource.name}"
            )
            try:
                await asyncio.wait({task}, timeout=None if budget == float("inf") else budget)
            except asyncio.CancelledError as exc:
                # stop()'s own deadline: note it, close the others anyway, then re-raise.
                interrupted = exc
                task.cancel()
                _log("warning", "resource.close_interrupted", resource=resource.name)
                continue
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=CLOSE_FLOOR)
                _log(
                    "warning",
                    "resource.close_timed_out",
                    resource=resource.name,
                    loop_thread=self.lt_name,
                    budget=budget,
                    abandoned=not task.done(),  # it ignored its cancellation
                )
                continue
            error = None if task.cancelled() else task.exception()
            if error is not None:  # one failing close must not skip the others
                _log(
                    "warning",
                    "resource.close_failed",
                    resource=resource.name,
                    loop_thread=self.lt_name,
                    error=describe(error),
                )
        if interrupted is not None:
            raise interrupted

    def on_closed(self) -> int:
        """The loop is gone: nothing more can be created."""
        self.closed = True
        return 0

    def after_fork_in_child(self) -> None:
        """The created values belong to the parent's loop."""
        self.created = []


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every waiter may have given up: mark the exception as seen so asyncio does not log it
    # again ("Task exception was never retrieved"); create_failed already did.
    if not task.cancelled():
        task.exception()


def _log(level: str, event: str, **fields: Any) -> None:
    try:
        getattr(logger, level)(event, **fields)
    except Exception:  # noqa: BLE001 - a broken log setup must not break the lifecycle
        pass


def check_resource_args(
    factory: object, close: object, name: object, api: str = "lt.resource()"
) -> None:
    """Raise TypeError, with the fix, for arguments that ``Resource`` (or ``api``) refuses."""
    if not callable(factory):
        close_awaitables([factory])
        hint = (
            f" It is a coroutine: pass the async function itself, {api[:-2]}(make_pool)."
            if inspect.iscoroutine(factory)
            else ""
        )
        raise TypeError(
            f"{api} takes an async function that creates the value; got "
            f"{type(factory).__name__}.{hint}"
        )
    if close is not None and not callable(close):
        raise TypeError(
            f"close must be a callable taking the value (e.g. an async function), or None "
            f"to use the value's aclose()/close(); got {close!r}."
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
