"""The event bus's loop side: the handler table, the dispatch of each event, the executor lanes.

* :class:`Handlers` is the table (copy-on-write: ``on()``/``on_any()`` from any thread replace
  it, the dispatch reads whichever one is current), the counters and the failure log.
* :class:`Route` is one bus on one LoopThread: its channel (``context="producer"``, so each
  event is dispatched in the context of the code that reported it) and one lane per executor
  handler. A bus that follows the default loop gets a new Route on each new loop.

An executor handler's lane is a channel of its own (``run_in="executor"``,
``context="producer"``): the dispatch hands it the event on the loop (``aput``, so a full lane
holds the dispatch back and, through it, the bus's producers); the lane calls the handler in
the executor, one call at a time, in order, in a copy of the event's context; ``flush()``,
``close()`` and ``stop()`` wait for it like for the bus's own channel, and stop() drains a
lane only once the bus's channel finished (``drain_after``). A blocked executor handler holds
back its own lane, never the loop nor the other handlers (until its lane is full).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from loopthread._channel import Channel
from loopthread._exceptions import LoopNotRunningError
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._validate import check_choice, is_async_callable

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["RUN_IN", "Event", "Handler", "Handlers", "Route", "checked"]

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[object] | None]


class Entry:
    """One registered handler; ``lane`` is its executor lane's number (None: on the loop)."""

    __slots__ = ("handler", "lane")

    def __init__(self, handler: Handler, lane: int | None) -> None:
        self.handler = handler
        self.lane = lane


def _is_awaitable(result: object) -> bool:
    return result is not None and (type(result) is CoroutineType or hasattr(result, "__await__"))


class Handlers:
    """The handlers of one bus and what they did (counters survive a move to a new loop)."""

    def __init__(self) -> None:
        self._lock = fork_safe_lock()
        # Typed handlers, then the catch-all ones, per type; `fallback` for the other types.
        self.table: dict[str, tuple[Entry, ...]] = {}
        self.fallback: tuple[Entry, ...] = ()
        self._typed: dict[str, tuple[Entry, ...]] = {}
        self._lanes: dict[int, int] = {}  # id(handler) -> its lane (the table keeps it alive)
        # Written on the loop thread only.
        self.events = 0
        self.unknown = 0
        self.calls = 0
        self.failures = 0
        # Written by executor workers (one lane call at a time each), under _count_lock.
        self._count_lock = fork_safe_lock()
        self.lane_calls = 0
        self.lane_failures = 0
        self._limiter = RateLimiter()

    def add(self, event_type: str | None, handler: Handler, run_in: str) -> None:
        """Register ``handler`` for ``event_type`` (None: every event)."""
        with self._lock:
            lane = None
            if run_in == "executor":  # one lane per handler, however many types it has
                lane = self._lanes.setdefault(id(handler), len(self._lanes) + 1)
            entry = Entry(handler, lane)
            if event_type is None:
                self.fallback = (*self.fallback, entry)
            else:
                self._typed = {**self._typed, event_type: (*self._typed.get(event_type, ()), entry)}
            # One lookup per event on the loop: the catch-all handlers come after the typed ones.
            self.table = {t: (*entries, *self.fallback) for t, entries in self._typed.items()}

    @property
    def types(self) -> int:
        """Event types with a handler of their own."""
        return len(self._typed)

    def failed(self, event_type: object, handler: Handler, exc: BaseException) -> None:
        """Log a handler's failure, rate-limited per (type, handler); never raises. Any thread."""
        name = getattr(handler, "__qualname__", None) or repr(handler)
        with self._count_lock:
            suppressed = self._limiter.allow((event_type, name))
        if suppressed is None:
            return
        try:
            logger.error(
                "event_bus.handler_failed",
                event_type=event_type,
                handler=name,
                suppressed=suppressed,
                exc_info=exc,
            )
        except Exception:  # noqa: BLE001 - a broken log setup must not break the bus
            pass

    def lane_handler(self, handler: Handler) -> Callable[[list[Event]], None]:
        """The lane's channel handler: ``handler`` for each event, each fault isolated (in an
        executor worker, in the events' context)."""

        def call_each(events: list[Event]) -> None:
            failures = 0
            for event in events:
                try:
                    result = handler(event)
                    if _is_awaitable(result):
                        close = getattr(result, "close", None)
                        if callable(close):
                            close()
                        raise TypeError(
                            "an executor handler (run_in='executor') returned an awaitable: "
                            "pass a plain function, or register an async one with "
                            "run_in='loop'."
                        )
                except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                    failures += 1
                    self.failed(event["type"], handler, exc)
            with self._count_lock:
                self.lane_calls += len(events)
                self.lane_failures += failures

        return call_each


class Route:
    """One bus on one LoopThread: its channel and its executor handlers' lanes."""

    def __init__(
        self,
        handlers: Handlers,
        lt: LoopThread,
        *,
        name: str,
        maxsize: int,
        overflow: str,
    ) -> None:
        self._handlers = handlers
        self.lt = lt
        self._name = name
        self._maxsize = maxsize
        self._lanes: dict[int, Channel[Event]] = {}  # by lane number; the loop thread's own
        # What other threads read (flush, close, stats): replaced, never changed in place (a
        # dict iterated while the loop adds a lane raises without the GIL).
        self.lanes: tuple[Channel[Event], ...] = ()
        self.channel: Channel[Event] = Channel(
            lt, self._dispatch, maxsize=maxsize, overflow=overflow, name=name, context="producer"
        )

    def _lane(self, entry: Entry) -> Channel[Event]:
        """On the loop: the lane of ``entry``, opened on first use.

        Raises:
            LoopNotRunningError: the LoopThread began stopping before this lane was opened.
        """
        assert entry.lane is not None
        lane = self._lanes.get(entry.lane)
        if lane is None:
            lane = Channel(
                self.lt,
                self._handlers.lane_handler(entry.handler),
                maxsize=self._maxsize,
                name=f"{self._name}/executor-{entry.lane}",
                context="producer",
                run_in="executor",
                drain_after=self.channel,
            )
            self._lanes[entry.lane] = lane
            self.lanes = (*self.lanes, lane)
        return lane

    def _dispatch(self, batch: list[Event]) -> Awaitable[None] | None:
        # The bus's channel handler, called with a run of events reported in one context, in
        # it. A plain function: handlers that return nothing to await cost no Task; the first
        # awaitable (an async handler, a full lane) hands the rest of the run to _resume.
        handlers = self._handlers
        table, fallback = handlers.table, handlers.fallback
        for position, event in enumerate(batch):
            entries = table.get(event["type"], fallback)
            if not entries:
                handlers.unknown += 1
                continue
            handlers.events += 1
            last = len(entries) - 1
            for index, entry in enumerate(entries):
                own = event if index == last else dict(event)  # each handler its own copy
                try:
                    if entry.lane is None:  # _call, inline: the common case, once per handler
                        handlers.calls += 1
                        pending = entry.handler(own)
                        if pending is None or not (
                            type(pending) is CoroutineType or hasattr(pending, "__await__")
                        ):
                            continue
                    else:
                        pending = self._call(entry, own)
                        if pending is None:
                            continue
                except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                    self._failed(event, entry, exc)
                    continue
                return self._resume(batch, position, index, entries, pending)
        return None

    async def _resume(
        self,
        batch: list[Event],
        position: int,
        index: int,
        entries: tuple[Entry, ...],
        pending: Awaitable[object] | None,
    ) -> None:
        """The rest of a run, from handler ``index`` of event ``position`` (``pending``: what
        it returned), awaiting what handlers return."""
        handlers = self._handlers
        table, fallback = handlers.table, handlers.fallback
        size = len(batch)
        while True:
            event = batch[position]
            if pending is None:  # handler `index` of this event is still to be called
                entry = entries[index]
                try:
                    pending = self._call(entry, event if index == len(entries) - 1 else dict(event))
                except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                    self._failed(event, entry, exc)
            if pending is not None:
                try:
                    await pending
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # The bus is being stopped. The events before this one went through
                        # their handlers: taken out of the batch, the channel counts them as
                        # handled, and the rest (this one included) as unhandled.
                        del batch[:position]
                        raise
                    self._failed(event, entries[index], exc)
                except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                    self._failed(event, entries[index], exc)
                pending = None
            index += 1
            while index == len(entries):  # the next event that has handlers
                position += 1
                if position == size:
                    return
                entries = table.get(batch[position]["type"], fallback)
                index = 0
                if entries:
                    handlers.events += 1
                else:
                    handlers.unknown += 1

    def _call(self, entry: Entry, event: Event) -> Awaitable[object] | None:
        """Hand ``event`` to one handler; return what must be awaited (None: done).

        Raises:
            whatever the handler raises; LoopNotRunningError if its lane cannot be opened.
        """
        if entry.lane is not None:
            # Put on the loop, in this event's context: the lane keeps that context with it.
            lane = self._lane(entry)
            if lane.depth >= self._maxsize:  # full: wait for room rather than go past it
                return lane.aput(event)
            lane.put(event)
            return None
        self._handlers.calls += 1
        result = entry.handler(event)
        if result is not None and (type(result) is CoroutineType or hasattr(result, "__await__")):
            return result
        return None

    def _failed(self, event: Event, entry: Entry, exc: BaseException) -> None:
        if entry.lane is not None and isinstance(exc, LoopNotRunningError):
            exc = LoopNotRunningError(
                f"the event did not reach executor handler {entry.handler!r}: its lane "
                f"could not be opened ({exc})"
            )
        self._handlers.failures += 1
        self._handlers.failed(event["type"], entry.handler, exc)


RUN_IN: tuple[str, ...] = ("loop", "executor")


def checked(handler: Handler, run_in: str, call: str) -> Handler:
    """``handler``, checked for ``on``/``on_any`` (``call`` starts the right call).

    Raises:
        TypeError, ValueError: see EventBus.on.
    """
    run_in = check_choice(run_in, "run_in", RUN_IN)
    if isinstance(handler, CoroutineType):
        handler.close()
        raise TypeError(
            "handler must be the function itself; got a coroutine object. "
            f"Pass {call}handle), not {call}handle(...))."
        )
    if not callable(handler):
        raise TypeError(f"handler must be callable, taking the event dict; got {handler!r}.")
    if run_in == "executor" and is_async_callable(handler):
        raise TypeError(
            f"handler {handler!r} is async: run_in='executor' runs a plain function in the "
            f"executor. Register it to run on the loop ({call}handler)), or pass a plain "
            "function."
        )
    return handler
