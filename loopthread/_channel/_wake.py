"""The wake-up protocol between producers and the parked consumer (park, claim, token).

The consumer parks in ``await wake.async_q.get()`` after appending to ``_parked`` (a list, so
that claiming the park is one atomic ``pop()``); a producer that appended an item and finds
``_parked`` non-empty claims it and sends one janus token. Exactly one waker sends the token
for one park; the lost wake-up argument is in ``Consumer._consume_items``. A producer
interrupted by a signal in the middle of this asks the loop to look (``_interrupted`` →
``_kick``), so the consumer never stays parked with items waiting.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import janus

from loopthread._channel._base import (
    ChannelBase,
    CloseReason,
    T,
)

if TYPE_CHECKING:
    pass


__all__ = ["WakeProtocol"]


class WakeProtocol(ChannelBase[T]):
    """Waking the consumer from any thread."""

    def _wake_consumer(self) -> None:
        try:
            self._parked.pop()
        except IndexError:  # another producer claimed this park, or the consumer took it back
            return
        wake = self._wake
        if wake is None:  # pragma: no cover - a parked consumer has its queue
            return
        try:
            wake.sync_q.put_nowait(None)
        except janus.SyncQueueShutDown:  # the consumer finished; nothing left to wake
            pass

    def _interrupted(self) -> None:
        # From the interrupted producer's thread: one loop callback, which looks for itself.
        with contextlib.suppress(RuntimeError):  # the loop is closed: no consumer left to wake
            self._lt.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        # On the loop, so the consumer is suspended; _waiting up means it is in `await get()`.
        # Send a token whether or not one is queued: a token queued by an interrupted janus
        # put may never have been announced to the loop. A spare token costs one loop step.
        wake = self._wake
        if self._waiting and wake is not None:
            with contextlib.suppress(janus.AsyncQueueShutDown):
                wake.async_q.put_nowait(None)

    def _begin_close(self, reason: CloseReason) -> None:
        if not self._closed:
            self._close_reason = reason
            self._closed = True
        # Lost wake-up, as for producers: _closed is set before we look at _parked, and the
        # consumer sets _parked before it looks at _closed.
        self._wake_consumer()
        with self._cond:
            self._cond.notify_all()  # producers waiting for room raise ChannelClosedError
