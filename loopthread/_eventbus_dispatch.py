"""The event bus's loop side: the dispatch of each event and the executor lanes.

:class:`Route` is one bus on one LoopThread: its channel (``context="producer"``, so each
event is dispatched in the context of the code that reported it) and one lane per executor
handler. A bus that follows the default loop gets a new Route on each new loop. The handler
table it reads is :mod:`loopthread._eventbus_table`.

An executor handler's lane is a channel of its own (``run_in="executor"``,
``context="producer"``): the dispatch hands it the event on the loop (``aput``, so a full lane
holds the dispatch back and, through it, the bus's producers); the lane calls the handler in
the executor, one call at a time, in order, in a copy of the event's context; ``flush()``,
``close()`` and ``stop()`` wait for it like for the bus's own channel, and stop() drains a
lane only once the bus's channel finished (``drain_after``). A blocked executor handler holds
back its own lane, never the loop nor the other handlers (until its lane is full). Because the
bus's channel may be waiting for room in a lane, a handler in it that publishes into its own
bus is admitted past ``maxsize``, and one that closes the bus does not wait for the drain
(see ``in_handler_fed_by``).

Lanes are opened as soon as both the handler and the Route exist (``on()`` or the Route's
creation, whichever comes second), not at the first event: a LoopThread that began stopping
opens no channel, and its drain must still reach every executor handler. One registered while
the loop stops has no lane: the dispatch then calls it in the executor itself, waiting for
each call (in order, one at a time).

Contexts: the bus's channel calls the dispatch in a private copy of a run's context (see
``_modes``), and no user code runs in that copy itself: each handler call gets a copy of its
own (``clean.copy()``), so a variable a handler sets reaches neither the other handlers of the
event nor later events. An async handler's coroutine runs in the Task of the run, as it is
(a Task per call would double what an async handler costs); one that sets a variable there
makes the rest of the run step each coroutine in a copy of its own (:func:`_in_context`).
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from loopthread._channel import Channel
from loopthread._channel._worker import run_as_handler_of
from loopthread._eventbus_table import Entry, Event, Handlers
from loopthread._exceptions import LoopNotRunningError
from loopthread._process import fork_safe_lock

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["Route"]


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
        self._lock = fork_safe_lock()  # opening lanes: on() and the loop may race for one
        self._lanes: dict[int, Channel[Event]] = {}  # by lane number
        # What other threads read (flush, close, stats): replaced, never changed in place (a
        # dict iterated while a lane is added raises without the GIL).
        self.lanes: tuple[Channel[Event], ...] = ()
        self._sealed = False  # the bus closed its lanes: it opens no more
        self.channel: Channel[Event] = Channel(
            lt, self._dispatch, maxsize=maxsize, overflow=overflow, name=name, context="producer"
        )

    def open_lanes(self) -> None:
        """Open the lane of every executor handler registered so far; any thread. Once the
        LoopThread began stopping it opens none (see the module docstring)."""
        for number in self._handlers.lane_handlers:
            if number not in self._lanes:
                self._open(number)

    def seal(self) -> tuple[Channel[Event], ...]:
        """Open no more lanes; return those open (for the bus to close)."""
        with self._lock:
            self._sealed = True
            return self.lanes

    def _open(self, number: int) -> Channel[Event] | None:
        """Lane ``number``, opened if it is not yet; None if it cannot be (stopping, sealed)."""
        with self._lock:
            lane = self._lanes.get(number)
            if lane is not None or self._sealed:
                return lane
            try:
                lane = Channel(
                    self.lt,
                    self._handlers.lane_handler(self._handlers.lane_handlers[number]),
                    maxsize=self._maxsize,
                    name=f"{self._name}/executor-{number}",
                    context="producer",
                    run_in="executor",
                    drain_after=self.channel,
                )
            except LoopNotRunningError:
                return None
            self._lanes[number] = lane
            self.lanes = (*self.lanes, lane)
            return lane

    def _dispatch(self, batch: list[Event]) -> Awaitable[None] | None:
        # The bus's channel handler, called with a run of events reported in one context, in
        # a private copy of it. A plain function: handlers that return nothing to await cost
        # no Task; the first awaitable (an async handler, a full lane) hands the rest of the
        # run to _resume. Each handler call runs in a copy of `clean` (see the docstring).
        handlers = self._handlers
        table, fallback = handlers.table, handlers.fallback
        clean = contextvars.copy_context()
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
                        if entry.coroutine:  # runs no code of its own: _resume steps it
                            return self._resume(batch, position, index, entries, entry.handler(own))
                        pending = clean.copy().run(entry.handler, own)
                        if pending is None or not (
                            type(pending) is CoroutineType or hasattr(pending, "__await__")
                        ):
                            continue  # an awaitable runs in _resume's Task, as the run began
                    else:
                        pending = self._call(entry, own, clean)
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
        # This Task's context, a private copy of the run's, as no handler has touched it. An
        # async handler's coroutine runs in the Task's context itself (no Task per call): if
        # one sets a variable there, the rest of the run is `dirty` and each coroutine after
        # it is stepped in a copy of `clean` of its own (_in_context).
        clean = contextvars.copy_context()
        dirty = False
        size = len(batch)
        while True:
            event = batch[position]
            if pending is None:  # handler `index` of this event is still to be called
                entry = entries[index]
                own = event if index == len(entries) - 1 else dict(event)
                try:
                    pending = self._call(entry, own, clean, dirty)
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
                if not dirty:
                    dirty = contextvars.copy_context() != clean  # O(1) while unchanged
                # Handlers registered while this one ran see the events dispatched after it.
                table, fallback = handlers.table, handlers.fallback
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

    def _call(
        self, entry: Entry, event: Event, clean: contextvars.Context, dirty: bool = False
    ) -> Awaitable[object] | None:
        """Hand ``event`` to one handler, in a copy of ``clean``; return what must be awaited
        (None: done). ``dirty``: the calling Task's context is not ``clean`` any more (see
        _resume), so nothing may run in it.

        Raises:
            whatever the handler raises.
        """
        if entry.lane is not None:
            return self._to_lane(entry, event, clean, dirty)
        self._handlers.calls += 1
        if entry.coroutine:  # calling it runs none of its code: no context needed for that
            coroutine: Coroutine[Any, Any, object] = entry.handler(event)  # type: ignore[assignment]
            return _in_context(coroutine, clean.copy()) if dirty else coroutine
        context = clean.copy()
        result = context.run(entry.handler, event)
        if result is None:
            return None
        if type(result) is CoroutineType:
            return _in_context(result, context) if dirty else result
        return result if hasattr(result, "__await__") else None

    def _to_lane(
        self, entry: Entry, event: Event, clean: contextvars.Context, dirty: bool
    ) -> Awaitable[object] | None:
        """Put ``event`` into ``entry``'s lane on the loop, in this event's context (the lane
        keeps it with the event); what to await if the lane is full or cannot be opened."""
        assert entry.lane is not None
        lane = self._lanes.get(entry.lane)
        if lane is None:
            lane = self._open(entry.lane)
        if lane is None:  # the LoopThread stops: no lane can be opened any more
            return self._in_worker(entry, event, clean)
        if lane.depth >= self._maxsize:  # full: wait for room rather than go past it
            room = lane.aput(event)
            return _in_context(room, clean.copy()) if dirty else room
        if dirty:
            clean.copy().run(lane.put, event)
        else:
            lane.put(event)
        return None

    def _in_worker(
        self, entry: Entry, event: Event, clean: contextvars.Context
    ) -> Awaitable[object]:
        """Executor handler ``entry`` for ``event`` without a lane: in the executor now, the
        dispatch waiting for it (as part of the bus's channel's handler call, for the checks
        of flush, put and close made inside it)."""
        call = self._handlers.lane_handler(entry.handler)
        context = clean.copy()
        return self.lt.loop.run_in_executor(
            None, context.run, run_as_handler_of, self.channel, call, [event]
        )

    def _failed(self, event: Event, entry: Entry, exc: BaseException) -> None:
        self._handlers.failures += 1
        self._handlers.failed(event["type"], entry.handler, exc)


@types.coroutine
def _in_context(
    coro: Coroutine[Any, Any, object], context: contextvars.Context
) -> Generator[Any, Any, object]:
    """Await ``coro`` with each of its steps run in ``context``, not in the awaiting Task's.

    What a Task does for its own coroutine (``context.run(coro.send, ...)`` per step), without
    a Task per handler call: what the futures it waits on are, how it is cancelled and
    ``asyncio.current_task()`` stay the awaiting Task's.
    """
    send, throw = coro.send, coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                step = context.run(send, value)
            else:
                step, error = context.run(throw, error), None
        except StopIteration as stop:
            return stop.value
        try:
            value = yield step
        except GeneratorExit:
            context.run(coro.close)
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown into the coroutine, as a Task does
            value, error = None, exc
