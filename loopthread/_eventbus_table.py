"""The event bus's handler table: who handles which event type, and what they did.

:class:`Handlers` is the table (copy-on-write: ``on()``/``on_any()`` from any thread replace
it, the dispatch reads whichever one is current), its counters and the failure log; each
executor handler has a lane number (one per handler, by equality, however many types it is
registered for). The dispatch that reads it is :mod:`loopthread._eventbus_dispatch`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from inspect import CO_COROUTINE
from types import CoroutineType, FunctionType
from typing import Any

from loopthread._channel._worker import current_job
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._validate import check_choice, is_async_callable

__all__ = ["RUN_IN", "Entry", "Event", "Handler", "Handlers", "checked"]

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[object] | None]


class Entry:
    """One registered handler; ``lane`` is its executor lane's number (None: on the loop).

    ``coroutine``: calling it only makes a coroutine (an ``async def`` function or method),
    so the call needs no context of its own: only the coroutine's steps run its code.
    """

    __slots__ = ("coroutine", "handler", "lane")

    def __init__(self, handler: Handler, lane: int | None) -> None:
        self.handler = handler
        self.lane = lane
        function = getattr(handler, "__func__", handler)  # a bound method's function
        self.coroutine = isinstance(function, FunctionType) and bool(
            function.__code__.co_flags & CO_COROUTINE
        )


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
        # An executor handler -> its lane: by equality, so that a bound method (a new object
        # at each attribute access) registered for several types keeps one lane; by id() if
        # it is unhashable (the table keeps it alive).
        self._lanes: dict[object, int] = {}
        self.lane_handlers: dict[int, Handler] = {}  # lane -> handler; replaced, not changed
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
                key = _lane_key(handler)
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = len(self._lanes) + 1
                    self.lane_handlers = {**self.lane_handlers, lane: handler}
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
        """The lane's channel handler: ``handler`` for each event, each fault isolated, each
        call in a copy of its own of the events' context (in an executor worker). Event by
        event, so that a call given up on at a deadline stops after the event it is in and
        counts no event both handled and unhandled (``current_job``)."""

        def call_each(events: list[Event]) -> None:
            calls = failures = 0
            clean = contextvars.copy_context()  # the events' (a private copy): one per call
            job = current_job()  # None in the lane-less call of a stopping loop
            try:
                for event in events:
                    calls += 1
                    try:
                        result = clean.copy().run(handler, event)
                        if _is_awaitable(result):
                            close = getattr(result, "close", None)
                            if callable(close):
                                close()
                            raise TypeError(
                                "an executor handler (run_in='executor') returned an "
                                "awaitable: pass a plain function, or register an async one "
                                "with run_in='loop'."
                            )
                    except BaseException as exc:  # noqa: BLE001 - isolated, counted, logged
                        failures += 1
                        self.failed(event["type"], handler, exc)
                    if job is not None:
                        job.done += 1
                        if job.stop:  # given up on: the rest is counted as unhandled
                            job.halted = True
                            return
            finally:
                with self._count_lock:
                    self.lane_calls += calls
                    self.lane_failures += failures

        return call_each


def _lane_key(handler: Handler) -> object:
    try:
        hash(handler)
    except TypeError:
        return id(handler)
    return handler


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
