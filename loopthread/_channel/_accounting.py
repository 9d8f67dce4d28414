"""The accounting of a channel: what went through, what is left, and who waits for it.

Every item given to ``put`` is accounted for exactly once once the channel is idle::

    put == handled + failed + dropped + unhandled + depth + in_flight

``flush()`` waits on that accounting (a signal from the consumer, never a poll), and the end of
a channel (``_finalize`` on the loop, ``_finish_without_loop`` from any thread once the loop is
gone) counts what is left and wakes every waiter.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from loopthread._channel._base import (
    FlushWaiter,
    T,
    peek,
)
from loopthread._channel._modes import PartialFailure, running_in_executor_for
from loopthread._channel._wake import WakeProtocol
from loopthread._exceptions import (
    WouldDeadlockError,
)
from loopthread._util import Latch
from loopthread._validate import check_timeout

if TYPE_CHECKING:
    pass


__all__ = ["Accounting"]


class Accounting(WakeProtocol[T]):
    """Counting, flushing and finishing."""

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every item put before this call was handled, failed or evicted.

        Returns True once they were (an item whose handler call raised is ``stats().failed``;
        one evicted by ``"drop_oldest"`` is ``stats().dropped``), False if ``timeout`` expired
        first or the channel closed without handling them. Waits on a signal from the
        consumer, never polls.

        Raises:
            WouldDeadlockError: called from the loop thread; use ``await ch.aflush()``.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        if self._lt.in_loop_thread():
            raise WouldDeadlockError(
                f"ch.flush() was called on the loop thread of channel {self._name!r}, whose "
                "consumer runs on that thread: it would wait for itself. In a coroutine use "
                "`await ch.aflush()`."
            )
        if running_in_executor_for(self):
            raise WouldDeadlockError(
                f"ch.flush() was called inside the executor handler of channel {self._name!r}:"
                " it would wait for that very call to return. Flush from outside the handler."
            )
        target = peek(self._accepted)
        if self._flushed(target):
            return True
        latch = Latch()  # set by the loop thread, which must never block on it (see _latch)
        waiter = FlushWaiter(target, event=latch)
        if self._register(waiter):
            try:
                self._ensure_consumer()
                latch.wait(timeout)
            finally:
                self._unregister(waiter)
        return waiter.done or self._flushed(target)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors flush()
        """``flush`` for coroutines: awaits instead of blocking.

        On this channel's loop it waits without blocking the loop; on another event loop the
        blocking ``flush`` runs in that loop's default executor.

        Raises:
            WouldDeadlockError: awaited inside this channel's own handler (it would wait for
                itself).
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        if not self._lt.in_loop_thread():
            return await loop.run_in_executor(None, self.flush, timeout)
        target = peek(self._accepted)
        if self._flushed(target):
            return True
        if self._in_own_handler():
            raise WouldDeadlockError(
                f"await ch.aflush() inside the handler of channel {self._name!r} would wait "
                "for the handler itself to return. Flush from outside the handler."
            )
        future: asyncio.Future[None] = loop.create_future()
        waiter = FlushWaiter(target, future=future)
        if self._register(waiter):
            if not self._active:  # a wake-up lost to a signal in a producer (see _ensure_consumer)
                loop.call_soon(self._kick, context=self._wake_ctx)
            try:
                await asyncio.wait({future}, timeout=timeout)
            finally:
                self._unregister(waiter)
        return waiter.done or self._flushed(target)

    def _register(self, waiter: FlushWaiter) -> bool:
        """Add ``waiter`` for the consumer to release; False if there is nothing to wait for
        (then ``waiter.done`` says whether its items are known to have gone through)."""
        # Lost wake-ups, both ways round; one of us sees the other each time:
        # - we add the waiter, then re-read the counters; the consumer updates its counters,
        #   then looks at the waiters;
        # - we add the waiter, read the deque, then _active; the consumer lowers _active, then
        #   reads the waiters and the deque (_park). An empty deque seen before a lowered
        #   _active means everything appended so far went through: while _active is down the
        #   consumer pops nothing, and it lowers it only after handling.
        with self._mutex:
            if self._finished:
                return False
            self._flush_waiters.append(waiter)
        if self._gone_through() >= waiter.target or (not self._items and not self._active):
            waiter.done = True
            self._unregister(waiter)
            return False
        return True

    def _unregister(self, waiter: FlushWaiter) -> None:
        with self._mutex:
            try:
                self._flush_waiters.remove(waiter)
            except ValueError:  # already released by the consumer
                pass

    def _gone_through(self) -> int:
        # Items leave the front of the deque in FIFO order: through the handler (handled or
        # failed) or evicted by drop_oldest. Anything unhandled at close is behind them.
        return self._handled + self._failed + peek(self._evicted)

    def _flushed(self, target: int) -> bool:
        if self._gone_through() >= target:
            return True
        # A consumer that finished having lost nothing let everything through, even past a
        # count with no item (an interrupted put). Under _mutex: _finalize sets _finished and
        # counts what is left in one critical section. (A forked child's copy is finished
        # with nothing counted: its items are the parent's.)
        with self._mutex:
            return (
                self._finished
                and self._close_reason != "forked"
                and not (self._unhandled + self._late_unhandled + self._in_flight)
            )

    def _settle_late(self) -> bool:
        # close() began while this put was appending. Until the consumer's last look at the
        # deque (under _mutex, with _finished set in the same critical section) the item is
        # still on its way to the handler. After it, nobody will pop it: take whatever was
        # appended late and count it as unhandled, so nothing is lost silently. The put raced
        # with close(), so True (accepted, then counted) is an honest answer.
        with self._mutex:
            if not self._finished:
                return True
            left = self._take_all()
            self._late_unhandled += left
        if left:
            self._log(
                "channel.put_raced_close",
                level="warning",
                unhandled=left,
                hint="put() ran concurrently with close() or stop(); stop producers first",
            )
        return True

    def _release_flush_waiters(self, idle: list[FlushWaiter] | None = None) -> None:
        """Wake the flush waiters whose items went through: those whose target the consumer
        got past, and those in ``idle`` (read before the consumer found the deque empty)."""
        gone = self._gone_through()
        with self._mutex:
            waiters = self._flush_waiters
            ready = [w for w in waiters if w.target <= gone or (idle is not None and w in idle)]
            if not ready:
                return
            self._flush_waiters = [w for w in waiters if w not in ready]
        for waiter in ready:
            waiter.done = True
            waiter.wake()

    def _finish_without_loop(self) -> None:
        # The loop is gone (closed) and with it any consumer: count what is left.
        with self._mutex:
            if not self._finished:
                self._finished = True
                self._unhandled += self._take_all()
            waiters, self._flush_waiters = self._flush_waiters, []
            self._cond.notify_all()  # the Condition over _mutex: wait/notify only
        for waiter in waiters:
            if waiter.event is not None:
                waiter.event.set()
        self._done.set()

    def _handler_failed(self, size: int, exc: BaseException) -> None:
        self._in_flight = 0  # out of flight before counted (see Consumer)
        if isinstance(exc, PartialFailure):  # some runs of a context="producer" batch failed
            self._handled += size - exc.failed
            size, exc = exc.failed, exc.error
        self._failed += size
        suppressed = self._log_limiter.allow("handler_failed")
        if suppressed is not None:
            self._log(
                "channel.handler_failed",
                level="error",
                items=size,
                failed_total=self._failed,
                suppressed=suppressed,
                exc_info=exc,
            )
