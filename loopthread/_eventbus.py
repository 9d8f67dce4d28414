"""The event bus: worker threads report typed events, handlers react to them.

A bus is one :class:`~loopthread.Channel` of event dicts plus a table of handlers per event
type (and catch-all handlers). Legacy code that used to poll a queue from an event thread gets
a :class:`Reporter` (``reporter.report("progress", {"done": 3})``, or
``reporter.publish(event)`` for a ready-made event dict); the loop wakes only when there are
events. Handlers run on the loop, or in the executor (``run_in="executor"``, one call at a time
per handler, in order), each event in the ``contextvars`` of the code that reported it. The
dispatch and the executor lanes are in :mod:`loopthread._eventbus_dispatch`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loopthread._bind import Binding
from loopthread._channel._modes import running_in_executor_for
from loopthread._eventbus_dispatch import Event, Handler, Handlers, Route, checked
from loopthread._eventbus_report import EventBusStats, Reporter, event_of
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError, WouldDeadlockError
from loopthread._process import fork_safe_lock
from loopthread._util import INF, remaining
from loopthread._validate import (
    check_choice,
    check_positive_int,
    check_timeout,
)

if TYPE_CHECKING:
    from loopthread._channel import Channel, Overflow
    from loopthread._loopthread import LoopThread

__all__ = ["EventBus", "EventBusStats", "Reporter"]


class EventBus:
    """Typed events from any thread to handlers on the loop (or in its executor).

    ``bus.on(event_type, handler)`` registers a handler for one type, ``bus.on_any(handler)``
    one for every event (after the typed handlers of that event); several run in the order
    registered, each with its own shallow copy of the event dict. ``bus.reporter()`` hands out
    a :class:`Reporter` for worker threads; ``bus.publish(event)`` queues a ready-made event
    dict. Handlers may be registered at any time, from any thread: they see the events
    dispatched after that.

    Handlers may be ``async def`` or plain functions. By default (``run_in="loop"``) both run
    on the loop thread, so a plain handler must be quick. ``run_in="executor"`` runs a plain
    handler in the LoopThread's executor instead (blocking I/O, a plugin you do not control):
    one call at a time per handler, in event order; the loop and the other handlers go on
    meanwhile (a handler that falls ``maxsize`` events behind holds the bus back: its queue
    is bounded). Every handler runs in a copy of the ``contextvars`` of the code that reported
    the event (a request id set by the producer thread), never another event's. A handler that
    raises is logged and counted; the other handlers of the event and the bus go on. Events
    of a type with no handler are counted (``stats().unknown``) and ignored.

    ``flush()`` waits for executor handlers too; ``close()`` and ``LoopThread.stop()`` drain
    them within their deadline, and what they could not handle is counted (``stats().lanes``,
    ``ShutdownReport.items_unhandled``); a stuck executor handler does not hang ``stop()``.

    Args:
        loop_thread: the LoopThread to run on. None: ``loopthread.default()``, looked up at the
            first event (so a bus created at import time starts no thread); if the default
            loop is later replaced (after ``fork()``, or after it was stopped), the next
            event moves the bus to the new one.
        maxsize: events that may wait before the overflow policy applies (and the most that
            each executor handler may have waiting).
        overflow: ``"block"``, ``"drop_newest"``, ``"drop_oldest"`` or ``"error"``; see
            :class:`loopthread.Channel`.

    Raises:
        TypeError, ValueError: a bad option.
    """

    def __init__(
        self,
        loop_thread: LoopThread | None = None,
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
    ) -> None:
        from loopthread._channel import OVERFLOW_POLICIES
        from loopthread._loopthread import LoopThread

        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        self._loop_thread = loop_thread
        self._maxsize = check_positive_int(maxsize, "maxsize")
        self._overflow = check_choice(overflow, "overflow", OVERFLOW_POLICIES)
        self._lock = fork_safe_lock()
        self._name = f"event-bus-{next(_ids)}"  # one metrics series per bus
        self._handlers = Handlers()
        self._route: Route | None = None  # the channel and lanes on the loop bound last
        self._binding: Binding[Channel[Event]] = Binding(loop_thread, self._open_on)
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()  # close() on the loop thread

    def on(self, event_type: str, handler: Handler, *, run_in: str = "loop") -> None:
        """Call ``handler(event)`` for every event of ``event_type``.

        ``run_in="loop"`` (default): on the loop thread (async or quick sync handlers);
        ``"executor"``: a plain function, in the loop's executor, one call at a time.

        Raises:
            TypeError: ``event_type`` is not a str, ``handler`` is not callable, or it is
                async with ``run_in="executor"``.
            ValueError: ``run_in`` is not ``"loop"`` or ``"executor"``.
        """
        if not isinstance(event_type, str):
            raise TypeError(f"event_type must be a str; got {event_type!r}.")
        handler = checked(handler, run_in, f"bus.on({event_type!r}, ")
        self._handlers.add(event_type, handler, run_in)

    def on_any(self, handler: Handler, *, run_in: str = "loop") -> None:
        """Call ``handler(event)`` for every event, whatever its type, after the event's typed
        handlers (a registry whose handlers come and go at run time, a recorder, a bridge).

        Raises:
            TypeError: ``handler`` is not callable, or it is async with ``run_in="executor"``.
            ValueError: ``run_in`` is not ``"loop"`` or ``"executor"``.
        """
        self._handlers.add(None, checked(handler, run_in, "bus.on_any("), run_in)

    def publish(self, event: Mapping[str, Any]) -> bool:
        """Queue a ready-made event: a mapping whose ``"type"`` is a str.

        The bus keeps a shallow copy (``dict(event)``): the caller may change or reuse its
        mapping afterwards (values are shared, as with ``report``). Queued, dropped and
        back-pressure as :meth:`Reporter.report`; the handlers run in a copy of the caller's
        ``contextvars``.

        Raises:
            TypeError: ``event`` is not a mapping, or its ``"type"`` is not a str.
            ValueError: ``event`` has no ``"type"`` key.
            ChannelClosedError: the bus was closed.
            ChannelFullError: the bus is full and its policy is ``"error"``.
            LoopNotRunningError: the bus's explicit ``loop_thread`` is not running.
        """
        return self._put(event_of(event))

    def reporter(self) -> Reporter:
        """A thread-safe :class:`Reporter` to hand to worker threads."""
        return Reporter(self)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event queued before this call went through its handlers (those
        in the executor included); False if ``timeout`` expired first.

        Raises:
            WouldDeadlockError: called from the loop thread (use ``await bus.aflush()``), or
                from inside one of this bus's executor handlers.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        route = self._route
        if route is None:
            return True
        lanes = route.lanes
        if any(running_in_executor_for(lane) for lane in lanes):
            raise WouldDeadlockError(
                f"bus.flush() was called inside an executor handler of {self._name}: it would "
                "wait for that very call. Flush from outside the handlers."
            )
        deadline = INF if timeout is None else time.monotonic() + timeout
        if not route.channel.flush(timeout):
            return False
        # Everything queued before the flush was dispatched: the executor lanes have it now.
        return all(lane.flush(_left(deadline)) for lane in route.lanes)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors flush()
        """``flush`` for coroutines.

        Raises:
            WouldDeadlockError: awaited inside one of this bus's handlers.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        route = self._route
        if route is None:
            return True
        deadline = INF if timeout is None else time.monotonic() + timeout
        if not await route.channel.aflush(timeout):
            return False
        for lane in route.lanes:
            if not await lane.aflush(_left(deadline)):
                return False
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting events, run the handlers for those queued, stop. Idempotent.

        The executor handlers' lanes are closed once the bus's channel drained; all within
        ``timeout`` (see :meth:`loopthread.Channel.close` for the deadline). Called on the
        loop thread it stops accepting at once and drains in the background.

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        with self._lock:
            self._closed = True
        route = self._route
        if route is None:
            return
        route.channel.close(timeout)  # on the loop thread: closed now, drained in the background
        if route.lt.in_loop_thread():
            deadline = INF if timeout is None else time.monotonic() + timeout
            task = asyncio.get_running_loop().create_task(self._close_lanes(route, deadline))
            self._closing.add(task)  # a strong reference until it is done
            task.add_done_callback(self._closing.discard)
            return
        deadline = INF if timeout is None else time.monotonic() + timeout
        for lane in route.lanes:
            lane.close(_left(deadline))

    def stats(self) -> EventBusStats:
        """A snapshot of the bus's counters."""
        route = self._route
        handlers = self._handlers
        return EventBusStats(
            channel=None if route is None else route.channel.stats(),
            events=handlers.events,
            unknown=handlers.unknown,
            handler_calls=handlers.calls + handlers.lane_calls,
            handler_failures=handlers.failures + handlers.lane_failures,
            lanes=() if route is None else tuple(lane.stats() for lane in route.lanes),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        handlers = self._handlers
        return (
            f"<EventBus {state} types={handlers.types} events={handlers.events} "
            f"unknown={handlers.unknown} failures={handlers.failures + handlers.lane_failures}>"
        )

    # ------------------------------------------------------------------ internals

    @property
    def name(self) -> str:
        """``event-bus-N``: names the bus's channel in logs and metrics."""
        return self._name

    async def _close_lanes(self, route: Route, deadline: float) -> None:
        # After the bus's channel drained: what it dispatches meanwhile still reaches them.
        await route.channel.aclose(_left(deadline))
        for lane in route.lanes:
            await lane.aclose(_left(deadline))

    def _put(self, event: Event) -> bool:
        channel = self._live_channel()
        try:
            return channel.put(event)
        except ChannelClosedError:
            if self._closed or self._loop_thread is not None:
                raise
            # The default loop this channel lived on stopped (or this is a forked child):
            # move to the current default loop.
            return self._live_channel().put(event)

    def _live_channel(self) -> Channel[Event]:
        if self._closed:
            used = self._binding.value
            if used is not None:
                return used  # its put() raises the channel's own ChannelClosedError
            raise ChannelClosedError(
                "this EventBus is closed: report() after bus.close() is refused. Stop the "
                "workers before closing the bus, or create a new EventBus."
            )
        channel = self._binding.get()
        if channel is None and self._binding.value is not None:
            return self._binding.value  # closed: its put() says why (stopped, forked)
        if channel is None and self._loop_thread is not None and self._binding.bound_to is None:
            raise LoopNotRunningError(self._loop_thread._not_running_message())
        if channel is None:
            raise ChannelClosedError(
                "this EventBus has no running loop to deliver to (its LoopThread stopped, or "
                "the interpreter is exiting)."
            )
        return channel

    def _open_on(self, lt: LoopThread) -> Channel[Event]:
        route = Route(
            self._handlers, lt, name=self._name, maxsize=self._maxsize, overflow=self._overflow
        )
        self._route = route
        return route.channel


def _left(deadline: float) -> float | None:
    return None if deadline == INF else remaining(deadline)


_ids = itertools.count(1)
