"""The consumer: drains the deque into the handler in batches, on the loop.

It is not one long-lived task. While the channel is idle the consumer is parked and nothing on
the loop waits for it; the producer that claims the park schedules :meth:`Consumer._on_wake`
(one ``call_soon_threadsafe``), and the consumer runs from there:

* a plain (sync) handler is called in that callback, for one batch: the idle-to-busy wake-up
  of a sync handler costs exactly what a bare ``call_soon_threadsafe`` costs, plus the
  handler;
* a consumer task takes over when there is more than one batch, when the handler returned an
  awaitable (an async handler: the task awaits it), or when the channel is closing. On Python
  3.12+ the task starts eagerly (``eager_start=True``): its first step, and with it an async
  handler that does not suspend, runs in the same callback, with ``asyncio.current_task()``
  the consumer task; on 3.11 it runs one loop iteration later.

At most one of them runs at a time (``_active``), so batches never run concurrently and each
producer's items reach the handler in its order. The task ends when it parks.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from types import CoroutineType
from typing import TYPE_CHECKING

from loopthread._channel._base import T
from loopthread._channel._drain import Drain

if TYPE_CHECKING:
    pass


__all__ = ["Consumer"]

# A batch the consumer task must finish: the batch, its size when handed to the handler, and
# the awaitable the handler returned (the handler was called in _on_wake).
Handoff = tuple[list[T], int, Awaitable[object]]


#: A wake-up that comes sooner than this after the park is a stream (a producer putting
#: faster than the consumer parks), not an idle-to-busy transition: the consumer then lingers
#: before parking again (see Consumer._linger).
STREAM_GAP = 50e-6
#: How long it lingers. Items put meanwhile wait this long (rounded up to the selector's
#: resolution: 1 ms with epoll) and cost no wake-up; a linger that finds fewer than two items
#: ends the stream.
LINGER = 0.0005


def _is_awaitable(result: object) -> bool:
    return result is not None and (type(result) is CoroutineType or hasattr(result, "__await__"))


class Consumer(Drain[T]):
    """The consumer: a callback, then a task when needed."""

    def _start_consumer(self) -> None:
        if self._consumer_started or self._finished:
            return
        if self._lt.state not in ("running", "stopping", "dead"):
            self._begin_close("loop_stopped")
            self._finalize()
            return
        # On the loop. (The drain hook was added at creation; a stop() under way drains this
        # consumer too.) Its context, _ctx, is the channel's own (empty, never the creator's),
        # kept for every handler call (inline or in a consumer task), one at a time.
        self._consumer_started = True
        self._ended = self._loop.create_future()
        # _active is up since creation: puts made before this ran claimed no park; the first
        # task looks at the deque.
        self._spawn(None)

    def _on_wake(self) -> None:
        """On the loop: the wake-up a producer scheduled when it claimed the park (or a kick).

        Becomes the consumer unless one is running. A spare call (the consumer is running or
        finished; another wake-up took this park) returns at once.
        """
        if self._finished or not self._consumer_started:
            return
        if self._active:
            task = self._task
            if task is None or not task.done():
                return  # running: in a task, or inline (then _task is None)
            # Active, yet its task is done without having parked or finished: a task cancelled
            # before its first step (user code cancelling every task, on 3.11 where a task
            # starts one iteration after its creation) never ran a line. Start another; it
            # takes over the batch handed to the dead one, if any (_handoff).
        # A kick may find the park unclaimed: take it back, so that no later put schedules a
        # wake-up for a consumer that is running. A producer's pop() racing this one either
        # gets the park (its wake-up will be a spare) or not (it returns): we look at the
        # deque after this.
        self._parked.clear()
        self._active = True
        self._wakeups += 1
        # A stream: woken with items soon after parking (a spare kick finds none: no linger).
        self._streaming = bool(self._items) and time.monotonic() - self._parked_at < STREAM_GAP
        try:
            if self._inline and not self._closed and self._handoff is None:
                self._task = None  # the consumer runs here, in no task
                self._consume_inline()
            else:
                self._spawn(None)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - a bug of ours
            self._crashed(exc)

    def _consume_inline(self) -> None:
        """One batch through a sync handler, here in the wake-up callback; accounted as the
        task accounts it. The task takes over for more, for an awaitable, or for the close."""
        items = self._items
        depth = len(items)
        if depth:
            self._high_water = max(self._high_water, depth)
            batch: list[T] = []
            take = batch.append
            popleft = items.popleft
            try:
                for _ in range(depth if depth < self._batch_size else self._batch_size):
                    take(popleft())
            except IndexError:  # drop_oldest producers evicted some meanwhile
                pass
            if batch:
                size = len(batch)
                if self._blocked or self._room_waiters:
                    self._make_room(size)
                self._in_flight = size
                try:
                    result = self._ctx.run(self._handler, batch)
                except BaseException as exc:  # noqa: BLE001 - a handler's fault never kills the channel
                    self._handler_failed(size, exc)
                else:
                    if result is not None and _is_awaitable(result):
                        # A plain function that returned an awaitable (or an object whose
                        # __call__ is async): the task awaits it, _in_flight still counted.
                        # Later wake-ups go straight to the task.
                        self._inline = False
                        self._spawn((batch, size, result))
                        return
                    # Out of flight before counted: a reader that sees the count (flush)
                    # must not see it in flight too (without the GIL, in either order).
                    self._in_flight = 0
                    self._handled += size
                self._in_flight = 0
                self._batches += 1
                if self._finished:  # finalized from inside the handler
                    return
                if self._flush_waiters:
                    self._release_flush_waiters()
            if self._streaming and not (items or self._closed):
                self._loop.call_later(LINGER, self._linger, context=self._wake_ctx)
                return
        if items or self._closed or self._park():
            self._spawn(None)

    def _linger(self) -> None:
        """``LINGER`` after a batch of a stream (see ``STREAM_GAP``), before parking: what
        producers put meanwhile is handled without a wake-up of its own (they found the
        consumer active: no claim, no self-pipe write). A producer that holds the GIL (Python
        work between its puts) gets it while the loop thread waits here; without this, each
        park was woken again a few µs later and took the GIL back from the producer: batches
        of 1 item, one wake-up per event, -20% throughput with 5 µs of work per event. It
        costs nothing on the idle-to-busy path: the batch that woke us already ran, and a
        wake-up that comes after an idle spell (``STREAM_GAP``) does not linger."""
        if self._finished:
            return
        self._streaming = len(self._items) > 1
        try:
            if self._items and self._inline and not self._closed:
                self._consume_inline()
            elif self._items or self._closed or self._park():
                self._spawn(None)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - a bug of ours
            self._crashed(exc)

    def _spawn(self, handoff: Handoff[T] | None) -> None:
        """Start a consumer task (``_active`` is up: no other consumer runs)."""
        if handoff is not None:
            self._handoff = handoff  # the task takes it at its first step
        coro = self._consume()
        if sys.version_info >= (3, 12):
            # Eager: the first step runs now, in this callback; no loop iteration in between.
            task = asyncio.Task(
                coro, loop=self._loop, name=self._task_name, context=self._ctx, eager_start=True
            )
        else:
            task = self._loop.create_task(coro, name=self._task_name, context=self._ctx)
        self._task = task

    def _park(self) -> bool:
        """Park the consumer; True if it must go on instead (it took the park back)."""
        # Lost wake-up: we set _parked, then look at the deque (and _closed); a producer
        # appends, then looks at _parked. Under the GIL these steps are sequentially
        # consistent, so one of us sees the other: either we see the item and take the park
        # back, or the producer sees the park and schedules _on_wake. If we both do, exactly
        # one of our pop() calls gets the park: when the producer's wins, its wake-up is on
        # the way and runs the consumer again (it is prompt).
        # _active goes down before we read the flush waiters and the deque (see _register);
        # we pop nothing while it is down.
        parked = self._parked
        # The start of an idle spell, for the stream test of _on_wake: only after a batch (a
        # consumer that parks having handled nothing was not keeping up with anyone).
        if self._batches != self._park_batches:
            self._park_batches = self._batches
            self._parked_at = time.monotonic()
        else:
            self._parked_at = 0.0
        parked.append(None)
        self._active = False
        flushing = list(self._flush_waiters) if self._flush_waiters else None
        if self._items or self._closed:
            try:
                parked.pop()
            except IndexError:  # a producer claimed it: its wake-up is on the way
                return False
            self._active = True
            return True
        if flushing:
            # Everything appended before these flushes began has gone through, even if an
            # interrupted put left the count ahead of the items (see _admit).
            self._release_flush_waiters(flushing)
        return False

    async def _consume(self) -> None:
        # Eager or not, from here on asyncio.current_task() is the consumer task (the
        # in-handler checks of aflush/aput/aclose compare with _task).
        self._task = asyncio.current_task()
        handoff, self._handoff = self._handoff, None
        try:
            while True:
                try:
                    finished = await self._consume_items(handoff)
                except asyncio.CancelledError:
                    handoff = None  # _handler_raised counted it
                    task = asyncio.current_task()
                    if self._stop_requested or task is None:
                        self._begin_close("loop_stopped")
                        self._finalize()
                        raise
                    # User code cancelled every task (a common cleanup idiom): the channel is
                    # not theirs to stop; it keeps its items and goes on (its handler call was
                    # counted).
                    task.uncancel()
                    continue
                if finished:
                    self._after_finish()
                return  # parked (or finished): this task ends
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - a bug of ours
            self._crashed(exc)

    async def _consume_items(self, handoff: Handoff[T] | None) -> bool:
        """Drain until parked (False) or finished (True)."""
        items = self._items
        popleft = items.popleft
        batch_size = self._batch_size
        lingered = not self._streaming  # a stream lingers before it parks (see _linger)
        if handoff is not None:
            await self._handle(*handoff)
            if self._finished:
                return True
            if self._flush_waiters:
                self._release_flush_waiters()
        while True:
            depth = len(items)
            if depth:
                self._high_water = max(self._high_water, depth)
                batch: list[T] = []
                take = batch.append
                try:
                    for _ in range(depth if depth < batch_size else batch_size):
                        take(popleft())
                except IndexError:  # drop_oldest producers evicted some meanwhile
                    if not batch:
                        continue
                size = len(batch)
                if self._blocked or self._room_waiters:
                    self._make_room(size)
                # The handler call, inline (not a coroutine of its own: one frame less per batch).
                self._in_flight = size
                try:
                    result = self._handler(batch)
                    if result is not None and _is_awaitable(result):
                        await result
                except BaseException as exc:  # noqa: BLE001 - a handler's fault never kills the channel
                    self._handler_raised(batch, size, exc)
                else:
                    # Out of flight before counted: a reader that sees the count (flush)
                    # must not see it in flight too (without the GIL, in either order).
                    self._in_flight = 0
                    self._handled += size
                self._in_flight = 0
                self._batches += 1
                if self._finished:  # finalized while the handler ran (stop deadline)
                    return True
                if self._flush_waiters:
                    self._release_flush_waiters()
                if size == batch_size:
                    await asyncio.sleep(0)  # a steady stream must not starve the loop
                lingered = not self._streaming
                continue
            if self._closed:
                with self._mutex:
                    if not items:
                        # Our last look; producers that append after it see _finished in
                        # _settle_late and count their item themselves.
                        self._finished = True
                        return True
                continue
            if not lingered:  # a stream: linger before parking, as in _linger
                lingered = True
                await asyncio.sleep(LINGER)
                self._streaming = len(items) > 1
                continue
            if not self._park():
                return False

    async def _handle(self, batch: list[T], size: int, pending: Awaitable[object]) -> None:
        """The rest of a handler call made in _on_wake: ``pending``, the awaitable it returned."""
        self._in_flight = size
        try:
            await pending
        except BaseException as exc:  # noqa: BLE001 - a handler's fault never kills the channel
            self._handler_raised(batch, size, exc)
        else:
            self._in_flight = 0
            self._handled += size
        self._in_flight = 0
        self._batches += 1

    def _handler_raised(self, batch: list[T], size: int, exc: BaseException) -> None:
        """Account for a handler call that raised ``exc``; re-raise it if it is the consumer
        task's own cancellation (stop(), or user code cancelling every task)."""
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Items the handler deleted from the batch before re-raising were finished.
                left = min(len(batch), size)
                self._in_flight = 0
                self._handled += size - left
                self._unhandled += left
                raise exc
        self._handler_failed(size, exc)  # a fault, or the handler's own cancellation

    def _make_room(self, freed: int) -> None:
        if self._blocked:
            with self._mutex:
                # All, not `freed`: a producer interrupted inside Condition.wait (after it
                # queued its waiter lock, before its `try`) leaves a stale waiter that a
                # notify(n) would count; each woken producer re-checks the room anyway.
                self._cond.notify_all()
        self._release_room_waiters(freed)
