"""The deadlines of one enricher's calls: one timer for all of them, not one per call.

Design notes (why it is built this way):

* ``asyncio.timeout_at`` per call costs a ``Timeout``, a ``TimerHandle`` pushed onto the loop's
  heap and cancelled again (a cancelled handle stays in the heap until it is popped or the
  heap is rebuilt), about 5 µs and three GC-tracked objects per call: a third of what a
  log record enriched by an enricher that awaits costs on the loop (perf/RESULTS.md,
  bench_logging). Every call of one enricher has the same timeout, so deadlines arrive in the
  order the calls begin: a FIFO of the calls in flight is already sorted, and one
  ``TimerHandle``, armed for the oldest call's deadline, serves them all.
* A call that ends leaves the FIFO at once when it is the oldest (calls of one enricher mostly
  end in the order they began), else when the ones before it end or the timer pops it. So the
  FIFO holds the calls in flight and, behind a slow one, those that ended after it began; it
  is compacted when those outnumber the calls in flight, so a call stuck until its deadline
  cannot make it grow without bound.
* The timer expires what ``asyncio.Timeout`` would: it cancels the task of every call whose
  deadline passed, and the call itself (:meth:`Deadlines.expired`) tells its own expiry from
  any other cancellation of that task, with ``Task.uncancel()`` and the count of cancellations
  taken when the call was armed, as ``asyncio.Timeout.__aexit__`` does. The timer is re-armed
  only when it fires (for the new oldest call), never per call.
* Loop thread only, no lock: every call of an enricher runs on its chain's loop. A chain bound
  to a new loop (after fork, a replaced default loop) gets new ``Deadlines``; what the old
  loop held is dropped with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Call", "Deadlines"]


class Call:
    """A call that can be put under a deadline (:meth:`Deadlines.arm` sets these)."""

    __slots__ = ("cancelling", "deadline", "deadlines", "ended", "expired", "task")

    deadlines: Deadlines
    task: asyncio.Task[Any]
    deadline: float
    cancelling: int  # cancellations of its task already requested when it was armed
    expired: bool
    ended: bool

    def settle(self) -> bool | None:
        """:meth:`Deadlines.settle` for this call."""
        return self.deadlines.settle(self)


class Deadlines:
    """The calls of one enricher in flight on one loop, oldest first, and the one timer."""

    __slots__ = ("_calls", "_ended", "_handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: deque[Call] = deque()
        self._ended = 0  # calls in _calls that ended
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, call: Call, task: asyncio.Task[Any], deadline: float) -> None:
        """Put ``call``, run by ``task``, under ``deadline`` (``loop.time()`` seconds)."""
        call.deadlines = self
        call.task = task
        call.deadline = deadline
        call.cancelling = task.cancelling()
        call.expired = call.ended = False
        self._calls.append(call)
        if self._handle is None:
            self._handle = self.loop.call_at(deadline, self._fire, deadline)

    def settle(self, call: Call) -> bool | None:
        """``call`` ended (returned, raised, or was cancelled): take it out, and say whether
        it ended by its deadline. Once per call.

        True: its deadline passed (a CancelledError it raised was the timer's). None: the
        deadline passed, but its task was cancelled from elsewhere too, so a CancelledError is
        that cancellation and must propagate. False: the deadline did not pass.
        """
        if call.expired:  # the timer took it out; its cancellation is withdrawn, as
            # asyncio.Timeout.__aexit__ withdraws its own
            return True if call.task.uncancel() <= call.cancelling else None
        call.ended = True
        calls = self._calls
        if calls[0] is call:
            calls.popleft()
            while calls and calls[0].ended:
                calls.popleft()
                self._ended -= 1
        else:
            self._ended += 1
            if self._ended > 64 and self._ended > len(calls) // 2:
                self._compact()
        if not calls and self._handle is not None:
            self._handle.cancel()  # nothing left to expire: no wake-up for nothing
            self._handle = None
        return False

    def _fire(self, when: float) -> None:
        # The loop runs a handle once its time is within its clock's resolution: every call
        # whose deadline is ``when`` or earlier is due now.
        self._handle = None
        calls = self._calls
        while calls:
            call = calls[0]
            if call.ended:
                calls.popleft()
                self._ended -= 1
                continue
            if call.deadline > when:
                self._handle = self.loop.call_at(call.deadline, self._fire, call.deadline)
                return
            calls.popleft()
            call.expired = True
            call.task.cancel()

    def _compact(self) -> None:
        self._calls = deque(call for call in self._calls if not call.ended)
        self._ended = 0
