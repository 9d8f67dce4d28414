"""The consumer: one task on the loop that drains the deque into the handler in batches."""

from __future__ import annotations

import asyncio
import contextlib
from types import CoroutineType
from typing import TYPE_CHECKING

import janus

from loopthread._channel._accounting import Accounting
from loopthread._channel._base import (
    T,
    remaining,
)
from loopthread._core._shutdown import is_stop_cut

if TYPE_CHECKING:
    pass


__all__ = ["Consumer"]


class Consumer(Accounting[T]):
    """The consumer task and the drain at close and stop."""

    def _start_consumer(self) -> None:
        if self._task is not None or self._finished:
            return
        if self._lt.state not in ("running", "stopping", "dead"):
            self._begin_close("loop_stopped")
            self._finalize()
            return
        # janus binds to the running loop; created here, on it. (The drain hook was added at
        # creation; a stop() under way drains this consumer too.)
        self._wake = janus.Queue()
        self._task = asyncio.get_running_loop().create_task(
            self._consume(), name=f"loopthread-channel-{self._name}"
        )
        self._task.add_done_callback(self._on_consumer_done)

    async def _consume(self) -> None:
        while True:
            try:
                await self._consume_items()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stop_requested or task is None:
                    self._begin_close("loop_stopped")
                    self._finalize()
                    raise
                # User code cancelled every task (a common cleanup idiom): the channel is not
                # theirs to stop; it keeps its items and goes on (its handler call was counted).
                task.uncancel()
                self._parked.clear()
                continue
            self._after_finish()
            return

    async def _consume_items(self) -> None:
        items = self._items
        popleft = items.popleft
        parked = self._parked
        batch_size = self._batch_size
        wake = self._wake
        assert wake is not None
        get = wake.async_q.get
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
                if self._blocked or self._room_waiters:
                    self._make_room(len(batch))
                await self._handle(batch)
                if self._finished:  # finalized while the handler ran (stop deadline)
                    break
                if self._flush_waiters:
                    self._release_flush_waiters()
                if len(batch) == batch_size:
                    await asyncio.sleep(0)  # a steady stream must not starve the loop
                continue
            if self._closed:
                with self._cond:
                    if not items:
                        # Our last look; producers that append after it see _finished in
                        # _settle_late and count their item themselves.
                        self._finished = True
                        break
                continue
            # Park. Lost wake-up: we set _parked, then look at the deque (and _closed); a
            # producer appends, then looks at _parked. Under the GIL these steps are
            # sequentially consistent, so one of us sees the other: either we see the item
            # and take the park back, or the producer sees the park and sends a token. If
            # we both do, exactly one of our pop() calls gets the park: when the producer's
            # wins, its token is on the way and we must consume it (it is prompt).
            # _waiting goes up before we read the flush waiters and the deque (see
            # _register); we pop nothing while it is up.
            parked.append(None)
            self._waiting = True
            flushing = list(self._flush_waiters) if self._flush_waiters else None
            if items or self._closed:
                try:
                    parked.pop()
                except IndexError:
                    pass
                else:
                    self._waiting = False
                    continue
            elif flushing:
                # Everything appended before these flushes began has gone through, even
                # if an interrupted put left the count ahead of the items (see _admit).
                self._release_flush_waiters(flushing)
            try:
                await get()
            finally:
                self._waiting = False
            # A spare token (see _kick) can wake us with our park still unclaimed; a stale
            # flag would make some later put send a token for nothing.
            parked.clear()
            self._wakeups += 1

    async def _handle(self, batch: list[T]) -> None:
        size = len(batch)
        self._in_flight = size
        try:
            result = self._handler(batch)
            if result is not None and (
                type(result) is CoroutineType or hasattr(result, "__await__")
            ):
                await result
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Items the handler deleted from the batch before re-raising were finished.
                left = min(len(batch), size)
                self._in_flight = 0
                self._handled += size - left
                self._unhandled += left
                raise
            self._handler_failed(size, exc)  # the handler's own cancellation, not ours
        except BaseException as exc:  # noqa: BLE001 - a handler's fault never kills the channel
            self._handler_failed(size, exc)
        else:
            self._handled += size
        self._in_flight = 0
        self._batches += 1

    def _make_room(self, freed: int) -> None:
        if self._blocked:
            with self._cond:
                self._cond.notify(freed)
        self._release_room_waiters(freed)

    def _release_room_waiters(self, count: int | None = None) -> None:
        """Wake up to ``count`` ``aput`` callers waiting for room on the loop (None: all)."""
        waiters = self._room_waiters
        while waiters and count != 0:
            room = waiters.popleft()
            if not room.done():
                room.set_result(None)
                if count is not None:
                    count -= 1

    def _on_consumer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # pragma: no cover - a bug in the consumer itself
            self._log("channel.consumer_crashed", level="error", exc_info=exc)
            self._begin_close("loop_stopped")
            self._finalize()

    async def _drain(self, deadline: float, *, for_stop: bool = False) -> int:
        """On the loop: let the consumer drain until ``deadline``, then cancel it; return the
        number of accepted items that were not handled. Never raises CancelledError: a
        cancelled drain (stop() ran out of time) still returns its count."""
        self._start_consumer()
        self._release_room_waiters()
        # _begin_close sent a token only if it claimed the park. A producer interrupted by
        # Ctrl-C may hold the claim without having sent one, or have queued one that the loop
        # was never told about; its _interrupted() callback may not have run yet.
        self._kick()
        task = self._task
        try:
            while True:
                try:
                    if task is not None and not task.done():
                        await asyncio.wait({task}, timeout=remaining(deadline))
                        if not task.done():
                            self._cancel_consumer(task)
                            await asyncio.wait({task}, timeout=self._grace)
                    break
                except asyncio.CancelledError as exc:
                    me = asyncio.current_task()
                    if not for_stop or is_stop_cut(exc) or me is None:
                        raise
                    # User code cancelled every task (stop()'s drain among them): the drain
                    # is not theirs to cut; only stop()'s own deadline is.
                    me.uncancel()
        except asyncio.CancelledError:
            # stop() ran out of time: cancel the consumer and report what is left anyway. It
            # gets its grace to count the handler call it was in (a partly handled batch);
            # stop() waits for cancelled drains up to its own cancellation deadline.
            if task is not None:
                self._cancel_consumer(task)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=self._grace)
        return self._finalize()

    def _cancel_consumer(self, task: asyncio.Task[None]) -> None:
        self._stop_requested = True
        task.cancel()

    def _spawn_drain(self, deadline: float) -> None:
        if not self._finished:
            task = asyncio.get_running_loop().create_task(self._drain(deadline))
            self._closing.add(task)  # a strong reference until it is done
            task.add_done_callback(self._closing.discard)

    def _after_finish(self) -> None:
        if self._done.is_set():  # ran already (or the channel finished without its loop)
            return
        with self._cond:
            waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            waiter.wake()  # each decides from the final counters (_flushed)
        self._release_room_waiters()
        self._lt.components.detach(self)
        if self._wake is not None:
            # Not close(): that drops what is queued. Only tokens are queued here, but the
            # documented way out is shutdown(), after which producers' puts raise ShutDown.
            self._wake.shutdown()
        self._done.set()
        lost = self._unhandled + self._in_flight
        if lost:
            self._log(
                "channel.closed_with_unhandled",
                level="warning",
                unhandled=lost,
                handled=self._handled,
                reason=self._close_reason,
            )

    def _finalize(self) -> int:
        """On the loop: mark the consumer done, count what is left; return what was not
        handled (idempotent)."""
        with self._cond:
            if not self._finished:
                self._finished = True
                self._unhandled += self._take_all()
            self._cond.notify_all()
        self._after_finish()
        return self._unhandled + self._late_unhandled + self._in_flight
