"""The end of a channel's consumer: the drain at close and stop, and the finish."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from loopthread._channel._accounting import Accounting
from loopthread._channel._base import (
    T,
    remaining,
)
from loopthread._core._shutdown import is_stop_cut

if TYPE_CHECKING:
    pass


__all__ = ["Drain"]


class Drain(Accounting[T]):
    """Draining and finishing the consumer (on the loop)."""

    def _start_consumer(self) -> None:  # pragma: no cover - overridden by Consumer
        raise NotImplementedError

    def _release_room_waiters(self, count: int | None = None) -> None:
        """Wake up to ``count`` ``aput`` callers waiting for room on the loop (None: all)."""
        waiters = self._room_waiters
        while waiters and count != 0:
            room = waiters.popleft()
            if not room.done():
                room.set_result(None)
                if count is not None:
                    count -= 1

    def _crashed(self, exc: BaseException) -> None:  # pragma: no cover - a bug in the consumer
        self._log("channel.consumer_crashed", level="error", exc_info=exc)
        self._begin_close("loop_stopped")
        self._finalize()

    async def _drain(self, deadline: float, *, for_stop: bool = False) -> int:
        """On the loop: let the consumer drain until ``deadline``, then cancel it; return the
        number of accepted items that were not handled. Never raises CancelledError: a
        cancelled drain (stop() ran out of time) still returns its count."""
        self._start_consumer()
        self._release_room_waiters()
        # _begin_close woke the consumer only if it claimed the park. A producer interrupted by
        # a signal may hold the claim without having scheduled the wake-up, or have queued it
        # without the loop being told; its _interrupted() callback may not have run yet.
        self._kick()
        ended = self._ended
        try:
            while True:
                try:
                    if ended is not None and not ended.done():
                        await asyncio.wait({ended}, timeout=remaining(deadline))
                        if not ended.done():
                            self._cancel_consumer()
                            await asyncio.wait({ended}, timeout=self._grace)
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
            self._cancel_consumer()
            if ended is not None and not ended.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({ended}, timeout=self._grace)
        return self._finalize()

    async def _finished_by(self, deadline: float) -> None:
        """On the loop: wait until this channel's consumer finished (its drain is another
        component's) or ``deadline``. stop()'s cut ends the wait; user code cancelling every
        task does not."""
        self._start_consumer()
        ended = self._ended
        while ended is not None and not ended.done():
            try:
                await asyncio.wait({ended}, timeout=remaining(deadline))
                return
            except asyncio.CancelledError as exc:
                me = asyncio.current_task()
                if is_stop_cut(exc) or me is None:
                    return  # the caller's drain sees the deadline passed and cuts its own
                me.uncancel()

    def _cancel_consumer(self) -> None:
        self._stop_requested = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def _spawn_drain(self, deadline: float) -> None:
        if not self._finished:
            task = asyncio.get_running_loop().create_task(self._drain(deadline))
            self._closing.add(task)  # a strong reference until it is done
            task.add_done_callback(self._closing.discard)

    def _after_finish(self) -> None:
        if self._done.is_set():  # ran already (or the channel finished without its loop)
            return
        with self._mutex:
            waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            waiter.wake()  # each decides from the final counters (_flushed)
        self._release_room_waiters()
        self._lt.components.detach(self)
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(None)
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
        handoff, self._handoff = self._handoff, None
        if handoff is not None:  # handed to a task that was cancelled before it ran
            _batch, size, pending = handoff
            close = getattr(pending, "close", None)
            if callable(close):
                close()  # a coroutine never awaited: no RuntimeWarning
            self._in_flight = 0
            self._unhandled += size
        with self._mutex:
            if not self._finished:
                self._finished = True
                self._unhandled += self._take_all()
            self._cond.notify_all()
        self._after_finish()
        return self._unhandled + self._late_unhandled + self._in_flight
