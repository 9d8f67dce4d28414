"""The wake-up protocol between producers and the parked consumer (park, claim, wake).

The consumer parks by appending to ``_parked`` (a list, so that claiming the park is one
atomic ``pop()``) and lowering ``_active``; a parked consumer is no task at all, nothing on the
loop waits for it. A producer that appended an item and finds ``_parked`` non-empty claims it
and schedules :meth:`~loopthread._channel._consumer.Consumer._on_wake` on the loop with one
``call_soon_threadsafe``: the least any cross-thread wake-up of a parked loop costs. There the
consumer runs again: a plain (sync) handler gets its batch in that very callback, an async one
in a consumer task (eager on Python 3.12+: its first step runs in the callback too). Exactly
one waker claims one park; the lost wake-up argument is in ``Consumer._park``.

No janus on this path. janus's ``sync_q.put`` enters ``with parent._sync_not_full:``, a stdlib
``Condition`` whose ``__enter__`` is a Python frame: a signal (Ctrl-C) raised in a main-thread
producer after the C acquire and before the ``with`` block owns janus's ``_sync_mutex`` leaves
it held, and the loop's next ``async_q.get()`` blocks on that mutex forever (the whole loop,
not only this channel). It also costs a notifier Task and a second loop iteration per wake
(perf/RESULTS.md, "the wake-up, step by step"). The rule here: the loop thread never blocks on
a lock that a caller can leave held.

A producer interrupted by a signal in the middle of this asks the loop to look
(``_interrupted`` → ``_kick``), so the consumer never stays parked with items waiting; a second
signal inside that request can still lose it, so callers about to wait (``flush``, a ``"block"``
put on a full channel) ask again when the consumer is not running (``_ensure_consumer``).
"""

from __future__ import annotations

from threading import get_ident
from typing import TYPE_CHECKING

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
        # We own this park's wake-up: exactly one _on_wake is scheduled for it. A put on the
        # loop thread itself (a coroutine, a handler) needs no self-pipe write.
        try:
            if get_ident() == self._loop_ident:
                self._loop.call_soon(self._on_wake, context=self._wake_ctx)
            else:
                self._loop.call_soon_threadsafe(self._on_wake, context=self._wake_ctx)
        except RuntimeError:  # the loop is closed: no consumer left to wake (on_closed counts)
            pass

    def _interrupted(self) -> None:
        # From the interrupted producer's thread: one loop callback, which looks for itself.
        try:
            self._loop.call_soon_threadsafe(self._kick, context=self._wake_ctx)
        except RuntimeError:  # the loop is closed: no consumer left to wake
            pass

    def _ensure_consumer(self) -> None:
        """From a caller about to wait for the consumer: if it is not running, have the loop
        look. Repairs a wake-up lost to a signal inside ``_interrupted`` itself; when a wake-up
        is merely on its way it costs one spare callback."""
        if self._finished:
            return
        task = self._task  # a consumer task cancelled before its first step: see _on_wake
        if not self._active or (task is not None and task.done()):
            self._interrupted()

    def _kick(self) -> None:
        # On the loop: whatever state the park is in (claimed by an interrupted producer that
        # never scheduled its wake-up, or scheduled but the loop never told), run the consumer
        # if it is not running. A spare kick costs one callback.
        self._on_wake()

    def _on_wake(self) -> None:  # pragma: no cover - overridden by Consumer
        raise NotImplementedError

    def _begin_close(self, reason: CloseReason) -> None:
        if not self._closed:
            self._close_reason = reason
            self._closed = True
        # Lost wake-up, as for producers: _closed is set before we look at _parked, and the
        # consumer sets _parked before it looks at _closed.
        self._wake_consumer()
        with self._mutex:
            self._cond.notify_all()  # producers waiting for room raise ChannelClosedError
