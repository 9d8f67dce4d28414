"""The producer side: ``put`` from any thread, ``aput`` on a loop, and the overflow policies.

The fast path takes no lock (a ``deque.append`` is atomic); ``"block"`` takes the slow path, a
``threading.Condition`` over the channel's C ``RLock``, only when the deque is full.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from loopthread._channel._base import (
    T,
)
from loopthread._channel._consumer import Consumer
from loopthread._exceptions import (
    ChannelFullError,
)
from loopthread._util import interrupt_behind
from loopthread._validate import check_timeout

if TYPE_CHECKING:
    pass


__all__ = ["Producer"]


class Producer(Consumer[T]):
    """put, aput and admission."""

    def put(self, item: T, *, timeout: float | None = None) -> bool:
        """Hand ``item`` to the channel from any thread; never waits unless the policy says so.

        Returns True when the item was accepted (it will be handled, or counted in ``stats()``
        as failed, dropped or unhandled), False when the overflow policy dropped it.
        ``timeout`` bounds the wait of the ``"block"`` policy (None: as long as it takes).

        Raises:
            ChannelClosedError: the channel was closed (or its loop stopped).
            ChannelFullError: the channel is full and its policy is ``"error"``.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._closed:
            raise self._closed_error()
        capture = self._capture
        if capture is not None:  # context="producer": the caller's context travels with it
            item = (item, capture())  # type: ignore[assignment]
        items = self._items
        if len(items) >= self._maxsize:
            return self._put_full(item, timeout)
        # Inline copy of _admit (a call costs ~20% of a put); see there for the order.
        try:
            next(self._accepted)
            items.append(item)
            if self._parked:
                self._wake_consumer()
        except BaseException:
            self._interrupted()
            raise
        if self._closed:
            return self._settle_late()
        return True

    async def aput(self, item: T) -> bool:
        """``put`` for coroutines: with ``"block"`` it awaits room instead of blocking a thread.

        On this channel's loop it waits without blocking the loop (inside this channel's own
        handler it admits the item past ``maxsize``, since waiting there would wait for itself);
        on another event loop the blocking ``put`` runs in that loop's default executor.

        Raises:
            ChannelClosedError: the channel was closed (or its loop stopped).
            ChannelFullError: the channel is full and its policy is ``"error"``.
        """
        if (
            self._overflow == "block"
            and len(self._items) >= self._maxsize
            and not self._closed
            and not self._in_own_handler()
        ):
            loop = asyncio.get_running_loop()
            if not self._lt.in_loop_thread():
                return await loop.run_in_executor(None, self.put, item)
            while len(self._items) >= self._maxsize and not self._closed:
                room = loop.create_future()
                self._room_waiters.append(room)
                try:
                    await room
                finally:
                    if not room.done():
                        room.cancel()
        return self.put(item)

    def _put_full(self, item: T, timeout: float | None) -> bool:
        self._high_water = max(self._high_water, len(self._items))
        overflow = self._overflow
        if overflow == "drop_newest":
            next(self._refused)
            return False
        if overflow == "drop_oldest":
            # Ctrl-C between these two steps loses the item uncounted: stats() stays one off,
            # flush() still completes (see _admit).
            try:
                self._items.popleft()
            except IndexError:  # the consumer emptied it meanwhile: room enough
                pass
            else:
                next(self._evicted)
            return self._admit(item)
        if overflow == "error":
            next(self._rejected)
            raise ChannelFullError(
                f"channel {self._name!r} is full ({self._maxsize} items waiting) and its "
                'overflow policy is "error". Handle ChannelFullError, raise maxsize, or choose '
                'overflow="block", "drop_newest" or "drop_oldest".'
            )
        if self._lt.in_loop_thread():
            # Waiting here would freeze the loop, and with it the consumer that makes room.
            self._over_limit += 1
            return self._admit(item)
        deadline = None if timeout is None else time.monotonic() + timeout
        items = self._items
        maxsize = self._maxsize
        # A full channel with no consumer running: its wake-up may have been lost to a signal.
        self._ensure_consumer()
        try:
            # `with self._mutex`, the C RLock itself: its __enter__ is one C call, so a signal
            # cannot land between taking it and owning the block (Condition.__enter__ is a
            # Python frame: it can, and the consumer's next `with` would then block the loop
            # thread for good). The Condition over it is used for wait/notify only.
            with self._mutex:
                # Lost wake-up: we count ourselves in _blocked and then look at the deque,
                # under _mutex; the consumer pops and then looks at _blocked, and notifies under
                # _mutex. Either it sees us waiting (and its notify cannot slip between our
                # check and our wait, both under _mutex), or we see the room it made.
                try:
                    self._blocked += 1
                    while len(items) >= maxsize and not self._closed:
                        if deadline is None:
                            self._cond.wait()
                            continue
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            next(self._refused)
                            return False
                        self._cond.wait(remaining)
                finally:
                    self._blocked -= 1
        except RuntimeError as exc:
            # A signal inside Condition.wait between its release of _mutex and the `try` that
            # takes it back: the wait raised the signal's exception with _mutex released, and
            # our `with` then failed to release it again. The caller gets the signal's own
            # exception (an RLock refuses a stray release instead of releasing another
            # thread's hold, as a plain Lock would).
            interrupt = interrupt_behind(exc)
            if interrupt is None:
                raise
            raise interrupt from None
        if self._closed:
            raise self._closed_error()
        return self._admit(item)

    def _admit(self, item: T) -> bool:
        # The order: count, append, then look at the park flag. Counting first makes flush()'s
        # target (the count) cover every item in the deque when flush() starts; appending
        # before looking at the park flag is our half of the lost wake-up handshake (_consume).
        # Ctrl-C (KeyboardInterrupt from a signal handler) can land between any two steps:
        # - after the count, before the append: a count with no item. flush() does not rely
        #   on the counters alone (the consumer finding the deque empty also completes it),
        #   but stats() stays one off;
        # - after the append, or inside _wake_consumer (the park claimed but no wake-up
        #   scheduled, or the callback queued but the loop's self-pipe never written): the
        #   consumer stays parked. _interrupted() has the loop look if so (and a caller that
        #   then waits asks again: _ensure_consumer).
        try:
            next(self._accepted)
            self._items.append(item)
            if self._parked:
                self._wake_consumer()
        except BaseException:
            self._interrupted()
            raise
        if self._closed:
            return self._settle_late()
        return True
