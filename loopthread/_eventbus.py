"""The event bus: worker threads report typed events, handlers on the loop react to them.

A bus is one :class:`~loopthread.Channel` of event dicts plus a table of handlers per event
type. Legacy code that used to poll a queue from an event thread gets a :class:`Reporter`
(``reporter.report("progress", {"done": 3})``); the loop wakes only when there are events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from loopthread._bind import Binding
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._channel import Channel, ChannelStats, Overflow
    from loopthread._loopthread import LoopThread

__all__ = ["EventBus", "EventBusStats", "Reporter"]

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[object] | None]


@dataclass(frozen=True, slots=True)
class EventBusStats:
    """A snapshot of an event bus's counters.

    Attributes:
        channel: the stats of the bus's channel (None until the first ``report``).
        events: events that had at least one handler.
        unknown: events whose type had no handler (counted and ignored).
        handler_calls: handler calls made.
        handler_failures: handler calls that raised (each logged; the others still ran).
    """

    channel: ChannelStats | None
    events: int
    unknown: int
    handler_calls: int
    handler_failures: int


class Reporter:
    """What a worker thread holds to report events to an :class:`EventBus`; thread-safe.

    Get one with :meth:`EventBus.reporter`.
    """

    __slots__ = ("_bus",)

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def report(self, event_type: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue the event ``{"type": event_type, **data}`` for the bus's handlers.

        The dict is built here, so the caller may reuse or change ``data`` afterwards.
        Returns True when queued, False when the bus's overflow policy dropped it; with
        ``"block"`` (the default) it waits for room while the bus is full.

        Raises:
            TypeError: ``event_type`` is not a str, or ``data`` is not a mapping.
            ValueError: ``data`` has a ``"type"`` key (the event type goes in ``event_type``).
            ChannelClosedError: the bus was closed.
            ChannelFullError: the bus is full and its policy is ``"error"``.
            LoopNotRunningError: the bus's explicit ``loop_thread`` is not running.
        """
        if not isinstance(event_type, str):
            raise TypeError(
                f"event_type must be a str such as 'progress'; got {type(event_type).__name__} "
                f"{event_type!r}."
            )
        if data is None:
            event: Event = {"type": event_type}
        else:
            try:
                if "type" in data:
                    raise ValueError(
                        f"data must not have a 'type' key (got {data['type']!r}): the event "
                        f"type is the first argument, report({event_type!r}, data)."
                    )
                event = {"type": event_type, **data}
            except TypeError:
                raise TypeError(
                    f"data must be a mapping such as {{'done': 3}}; got {type(data).__name__}."
                ) from None
        return self._bus._put(event)

    def __repr__(self) -> str:
        return f"<Reporter of {self._bus!r}>"


class EventBus:
    """Typed events from any thread to handlers on the loop, through one channel.

    ``bus.on(event_type, handler)`` registers a handler (several per type run in the order
    registered; each gets its own shallow copy of the event dict); ``bus.reporter()`` hands out
    a :class:`Reporter` for worker threads. Handlers may be ``async def`` or plain functions;
    both run on the loop thread, so a plain handler must be quick (no blocking I/O: use an async
    handler and ``await loop.run_in_executor(None, fn)``). A handler that raises is logged and
    counted; the other handlers of the event and the bus go on. Events of a type with no
    handler are counted (``stats().unknown``) and ignored.

    Args:
        loop_thread: the LoopThread to run on. None: ``loopthread.default()``, looked up at the
            first ``report`` (so a bus created at import time starts no thread); if the default
            loop is later replaced (after ``fork()``, or after it was stopped), the next
            ``report`` moves the bus to the new one.
        maxsize: events that may wait before the overflow policy applies.
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
        self._binding: Binding[Channel[Event]] = Binding(loop_thread, self._open_on)
        self._closed = False
        # Copy-on-write: on() replaces the dict, the loop reads whichever one is current.
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        # Written on the loop thread only.
        self._events = 0
        self._unknown = 0
        self._calls = 0
        self._failures = 0
        self._log_limiter = RateLimiter()

    def on(self, event_type: str, handler: Handler) -> None:
        """Call ``handler(event)`` on the loop for every event of ``event_type``.

        Raises:
            TypeError: ``event_type`` is not a str, or ``handler`` is not callable.
        """
        if not isinstance(event_type, str):
            raise TypeError(f"event_type must be a str; got {event_type!r}.")
        if isinstance(handler, CoroutineType):
            handler.close()
            raise TypeError(
                "handler must be the function itself; got a coroutine object. "
                "Pass bus.on('progress', handle), not bus.on('progress', handle(...))."
            )
        if not callable(handler):
            raise TypeError(f"handler must be callable, taking the event dict; got {handler!r}.")
        with self._lock:
            handlers = dict(self._handlers)
            handlers[event_type] = (*handlers.get(event_type, ()), handler)
            self._handlers = handlers

    def reporter(self) -> Reporter:
        """A thread-safe :class:`Reporter` to hand to worker threads."""
        return Reporter(self)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event reported before this call went through its handlers.

        Raises:
            WouldDeadlockError: called from the loop thread; use ``await bus.aflush()``.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        channel = self._binding.value
        return True if channel is None else channel.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors flush()
        """``flush`` for coroutines.

        Raises:
            WouldDeadlockError: awaited inside one of this bus's handlers.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        channel = self._binding.value
        return True if channel is None else await channel.aflush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting events, run the handlers for those queued, stop. Idempotent.

        See :meth:`loopthread.Channel.close` for the deadline.

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        with self._lock:
            self._closed = True
        channel = self._binding.value
        if channel is not None:
            channel.close(timeout)

    def stats(self) -> EventBusStats:
        """A snapshot of the bus's counters."""
        channel = self._binding.value
        return EventBusStats(
            channel=None if channel is None else channel.stats(),
            events=self._events,
            unknown=self._unknown,
            handler_calls=self._calls,
            handler_failures=self._failures,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<EventBus {state} types={len(self._handlers)} events={self._events} "
            f"unknown={self._unknown} failures={self._failures}>"
        )

    # ------------------------------------------------------------------ internals

    @property
    def name(self) -> str:
        """``event-bus-N``: names the bus's channel in logs and metrics."""
        return self._name

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
        return lt.channel(
            self._dispatch, maxsize=self._maxsize, overflow=self._overflow, name=self._name
        )

    async def _dispatch(self, batch: list[Event]) -> None:
        table = self._handlers
        for position, event in enumerate(batch):
            handlers = table.get(event["type"])
            if not handlers:
                self._unknown += 1
                continue
            self._events += 1
            last = len(handlers) - 1
            for index, handler in enumerate(handlers):
                self._calls += 1
                try:
                    result = handler(event if index == last else dict(event))
                    if result is not None and (
                        type(result) is CoroutineType or hasattr(result, "__await__")
                    ):
                        await result
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # The bus is being stopped. The events before this one went through
                        # their handlers: taken out of the batch, the channel counts them as
                        # handled, and the rest (this one included) as unhandled.
                        del batch[:position]
                        raise
                    self._handler_failed(event, handler, exc)
                except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                    self._handler_failed(event, handler, exc)

    def _handler_failed(self, event: Event, handler: Handler, exc: BaseException) -> None:
        self._failures += 1
        name = getattr(handler, "__qualname__", repr(handler))
        suppressed = self._log_limiter.allow((event["type"], name))
        if suppressed is None:
            return
        try:
            logger.error(
                "event_bus.handler_failed",
                event_type=event["type"],
                handler=name,
                suppressed=suppressed,
                exc_info=exc,
            )
        except Exception:  # noqa: BLE001 - a broken log setup must not break the bus
            pass


_ids = itertools.count(1)
