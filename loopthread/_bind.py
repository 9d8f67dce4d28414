"""Use this LoopThread, or the current process's default: written once, for every component
that follows ``loopthread.default()`` across fork, stop and death (log handlers, structlog's
offload, the event bus).

A :class:`Binding` opens its value (a channel: anything with ``closed``) on the LoopThread it
was given, or on whatever ``default()`` is now, and opens it again when that loop is replaced.
``default()`` (which may start a loop and wait for it) is called before the lock is taken,
never under it, so a log record emitted while a new default loop starts cannot deadlock
against that start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from loopthread import _process
from loopthread._default import default
from loopthread._exceptions import LoopNotRunningError

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["Binding"]


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...


V = TypeVar("V", bound=_Closable)


class Binding(Generic[V]):
    """A value opened on a LoopThread, followed across the default loop's replacements."""

    __slots__ = ("_bound", "_lock", "_loop_thread", "_open", "_value")

    def __init__(self, loop_thread: LoopThread | None, open_on: Callable[[LoopThread], V]) -> None:
        self._loop_thread = loop_thread
        self._open = open_on
        self._lock = _process.fork_safe_lock()
        self._value: V | None = None
        self._bound: LoopThread | None = None

    @property
    def value(self) -> V | None:
        """The value opened last (None before the first :meth:`get`)."""
        return self._value

    @property
    def bound_to(self) -> LoopThread | None:
        """The LoopThread the value was opened on."""
        return self._bound

    def get(self) -> V | None:
        """The live value, opened (again) if needed; None when no loop can take it."""
        value, bound = self._value, self._bound
        if value is not None and bound is not None and bound.running and not value.closed:
            return value  # the hot path: no lock
        lt = self._loop_thread
        if lt is None:
            try:
                lt = default()
            except LoopNotRunningError:
                return None  # interpreter exit
        if not lt.running:
            # The user's own loop is gone, or default() returned the default loop while it
            # stops (we run on it): what is bound to it still works if it is alive.
            return value if bound is lt and value is not None and not value.closed else None
        with self._lock:  # one value, however many threads race for the first one
            value = self._value
            if value is not None and self._bound is lt and not value.closed:
                return value
            try:
                value = self._open(lt)
            except LoopNotRunningError:
                return None
            self._value, self._bound = value, lt
            return value

    def forget(self) -> V | None:
        """Drop the value (closing it is the caller's job); return it."""
        with self._lock:
            value, self._value = self._value, None
            return value
