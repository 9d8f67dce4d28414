"""The event channel: synchronous producers push items, one consumer task on the loop handles them.

How an item travels (why it is not one janus ``put``/``get`` per item):

* Items go into a ``collections.deque``. ``append`` and ``popleft`` are single C calls, atomic
  under the GIL, so producers and the consumer never take a lock on the fast path. A janus
  queue moves each item under a ``threading.Lock`` taken on both sides, which turns every item
  into a cross-CPU lock hand-off, and while its consumer is parked every put schedules its own
  ``call_soon_threadsafe`` plus a notifier Task. Measured (perf/bench_channel.py): janus per
  item is 9-16x slower back to back, 2-3.5x with 5 µs of producer work per event.
* The idle-to-busy wake-up of the parked consumer is one ``loop.call_soon_threadsafe`` by the
  producer that claims the park (``_wake``); a sync handler gets its batch in that very
  callback, an async one in a consumer task (eager on 3.12+). An idle channel costs the loop
  thread no wake-ups at all (no polling anywhere, no task waiting). janus is not on this path:
  its sync side takes a ``threading.Condition`` with a Python-level ``__enter__``, which a
  signal in a main-thread producer can leave held, and then the loop's ``get()`` blocks on it
  forever; it also costs a second loop iteration per wake-up (see ``_wake``).
* Once awake, the consumer drains up to ``batch_size`` items per handler call without awaiting
  between them: one wake-up serves a burst.
* ``"block"`` backpressure takes a slow path (a ``threading.Condition`` over the channel's C
  ``RLock``) only when the deque is full; the consumer notifies it only when producers are
  waiting. The loop thread takes that lock only as ``with self._mutex:``, which no caller can
  leave held, and the events it sets for waiting callers are latches whose ``set()`` never
  blocks (``_latch``): the loop thread never blocks on a lock a caller can leave held.

The bound ``maxsize`` is checked, not reserved: producers racing past the check together may
overshoot it by at most one item each (``stats().high_water`` shows it), and ``"block"`` puts
from the loop thread (or from an executor handler the consumer waits for) are admitted past
it (``stats().over_limit``). Counters written by several threads are ``itertools.count``
objects (``next()`` is one atomic C call); the consumer's counters are plain ints written by
the loop thread only.

Free-threaded Python (3.13t+): the deque and list operations stay atomic there (per-object
locks), but the wake-up handshakes below (park vs append, ``_closed`` vs park, ``_blocked`` vs
room, flush waiters vs counters) rely on sequential consistency across two objects (store to
one, load of the other), which the GIL gives for free. There, each side's store and load need
a full fence between them, most simply by taking ``_mutex`` around both (on the fast path that
is one uncontended lock per put). ``itertools.count`` is
not documented as thread-safe there either: the producer counters would need a lock or
atomics.

A channel is a component of its LoopThread (stop phase ``"drain"``): ``stop()`` drains it
within its deadline, and the LoopThread tells it when its loop is gone (``on_closed``) and
about ``fork()``. This module keeps no global state but the counter that names channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loopthread._channel._base import (
    OVERFLOW_POLICIES,
    CloseReason,
    FlushWaiter,
    Overflow,
    T,
    new_id,
)
from loopthread._channel._checks import check_drain_after, check_handler, looks_async
from loopthread._channel._modes import CONTEXT_MODES, RUN_IN, adapt, snapshots
from loopthread._channel._producer import Producer
from loopthread._channel._worker import in_handler_fed_by
from loopthread._core._component import StopPhase
from loopthread._exceptions import (
    LoopNotRunningError,
)
from loopthread._log import RateLimiter
from loopthread._util import Latch
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread


__all__ = ["Channel"]


class Channel(Producer[T]):
    """A bounded, many-producer, one-consumer pipe from any thread into a handler on the loop.

    Create it with :meth:`LoopThread.channel`. ``handler(batch)`` is called on the loop with
    1 to ``batch_size`` items in FIFO order (per producer), one call at a time; it is usually
    ``async def``, a plain function is called directly (it must be quick: it runs on the loop).

    Where and in which context (see ``loopthread._channel._modes``):

    * ``run_in="executor"``: a plain (sync) handler runs in the LoopThread's executor, one call
      at a time, in order; the loop goes on meanwhile. An async handler is a TypeError.
    * ``context="empty"`` (default): the handler runs in a context of the channel's own,
      created empty (never the creator's: a batch comes from many producers).
      ``context="producer"``: each ``put`` carries a copy of the caller's ``contextvars``, and
      the handler is called once per run of consecutive items whose contexts hold the same
      variables, in a fresh copy of that context (``batch`` is then the run's items): what a
      call sets is seen by no other call, not even one for the same producer's next items.
      One run may hold items of several producers whose variables were equal. A run that
      raises counts its own items as failed.

    Overflow policies, when ``maxsize`` items are waiting:

    * ``"block"``: ``put`` waits for room (or until its ``timeout``, then returns False).
      From the loop thread itself ``put`` does *not* wait (the consumer that would make room
      runs on that thread): it admits the item past ``maxsize`` and counts it in
      ``stats().over_limit``. So does a ``put`` from this channel's own executor handler
      (``run_in="executor"``), or from the executor handler of a channel that drains after
      this one (``drain_after=``: fed by this channel's handler, which may be waiting for
      room there). ``await ch.aput(item)`` on the loop waits for room without blocking the
      loop (from inside this channel's own handler it also admits past the limit).
    * ``"drop_newest"``: the new item is refused (``put`` returns False).
    * ``"drop_oldest"``: the oldest waiting item is evicted to make room (``put`` returns True).
    * ``"error"``: ``put`` raises ``ChannelFullError``.

    ``LoopThread.stop()`` closes and drains every channel of that loop within its deadline and
    counts what it could not handle in ``ShutdownReport.items_unhandled``. A handler call it
    cancels counts its items as unhandled, except those the handler deleted from ``batch``
    before re-raising ``CancelledError`` (a handler that works item by item, like the event
    bus, does so to count those it finished as handled).

    Waiting on the channel from inside its own handler call is caught where it can be:
    ``await ch.aflush()`` raises ``WouldDeadlockError``, ``put``/``aput`` admit past
    ``maxsize``, ``await ch.aclose()`` begins closing and returns; in its executor handler,
    ``ch.flush()`` raises ``WouldDeadlockError``, ``put`` admits past ``maxsize`` and
    ``ch.close()`` begins closing and returns. Waiting from work that the
    handler awaits in another task or thread cannot be told apart from an ordinary caller and
    waits until its timeout: ``ch.flush()`` in an executor job the handler awaits, or
    ``ch.aput()`` on a full ``"block"`` channel inside ``asyncio.wait_for``/``gather``/a
    TaskGroup in the handler.
    """

    def __init__(
        self,
        loop_thread: LoopThread,
        handler: Callable[[list[T]], Awaitable[object] | None],
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 256,
        name: str | None = None,
        context: str = "empty",
        run_in: str = "loop",
        drain_after: Channel[Any] | None = None,
    ) -> None:
        self._maxsize = check_positive_int(maxsize, "maxsize")
        self._batch_size = check_positive_int(batch_size, "batch_size")
        self._overflow = check_choice(overflow, "overflow", OVERFLOW_POLICIES)
        context = check_choice(context, "context", CONTEXT_MODES)
        run_in = check_choice(run_in, "run_in", RUN_IN)
        is_async = check_handler(handler, run_in)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
        check_drain_after(drain_after, loop_thread)
        if not loop_thread.running:
            raise LoopNotRunningError(loop_thread._not_running_message())
        self._name = name or f"channel-{new_id()}"
        self._lt = loop_thread
        self._handler = adapt(self, handler, is_async=is_async, context=context, run_in=run_in)
        self._capture = snapshots() if context == "producer" else None
        self._drain_after = drain_after
        self._handler_task = None
        self._pid = os.getpid()
        self._grace = min(loop_thread.cancel_grace, 1.0)

        self._items: deque[T] = deque()
        # The consumer's "parked" flag, as a list so that claiming it is one atomic pop():
        # exactly one waker schedules the wake-up for one park (see _wake, Consumer._park).
        self._parked: list[None] = []
        # A consumer is running (a task, or _on_wake calling a sync handler). Up from here:
        # _start_consumer is on its way to the loop and will look at the deque.
        self._active = True
        # The handler looks sync: _on_wake calls it itself (until it returns an awaitable).
        self._inline = not looks_async(self._handler)
        self._streaming = False  # woken soon after its park: lingers before the next one
        self._parked_at = 0.0  # time.monotonic() of the last park after a batch
        self._park_batches = 0  # _batches at that park
        self._loop = loop_thread.loop
        self._loop_ident = loop_thread.thread.ident  # in_loop_thread(), one call less per wake
        # The consumer's (and with context="empty" the handler's) context: empty, never the
        # creator's (see _modes).
        self._ctx = contextvars.Context()
        # The wake-up callbacks' own context (given, so a producer copies none), never the
        # handler's: an eager consumer task started from a callback enters _ctx itself.
        self._wake_ctx = contextvars.Context()
        self._consumer_started = False
        self._task: asyncio.Task[None] | None = None  # the consumer task, if one runs
        self._task_name = f"loopthread-channel-{self._name}"
        self._handoff: tuple[list[T], int, Awaitable[object]] | None = None
        self._ended: asyncio.Future[None] | None = None  # done once the consumer finished
        self._closing: set[asyncio.Task[int]] = set()  # drains started by close()

        self._closed = False
        self._close_reason: CloseReason = "closed"
        self._finished = False  # the consumer is done; set under _mutex
        self._done = Latch()  # set by the loop thread: must never block (see _latch)
        # The slow paths (producers waiting for room, flush waiters, the close handshake)
        # take _mutex, a C RLock, always as `with self._mutex:` (a C __enter__: a signal
        # cannot leak it); _cond over it is for wait/notify only (see Producer._put_full).
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._blocked = 0  # producers waiting in _cond for room (written under _mutex)
        self._flush_waiters: list[FlushWaiter] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()  # aput on the loop

        # Written by any producer thread: itertools.count, one atomic next() per event.
        self._accepted = itertools.count()
        self._refused = itertools.count()  # drop_newest refusals and block timeouts
        self._evicted = itertools.count()  # drop_oldest evictions
        self._rejected = itertools.count()  # "error" policy raises
        # "block" puts admitted past maxsize: on the loop thread, or in an executor handler
        # that the consumer waits for (see Producer._put_full).
        self._over_limit = itertools.count()
        # Written under _mutex by producers whose put raced with the end of close().
        self._late_unhandled = 0
        # Written by the loop thread only.
        self._handled = 0
        self._failed = 0
        self._unhandled = 0
        self._in_flight = 0
        self._batches = 0
        self._wakeups = 0
        self._high_water = 0
        self._log_limiter = RateLimiter()

        self._stop_requested = False  # the consumer is being cancelled by us, not user code
        # Attached here, before the state is read again, not when the consumer starts: stop()
        # seals the components after it leaves "running", so either it drains this channel
        # within its deadline, or attach() (or the check below) sees that it began.
        loop_thread.components.attach(self)
        try:
            if not loop_thread.running:
                raise LoopNotRunningError(loop_thread._not_running_message())
            if loop_thread.in_loop_thread():
                self._start_consumer()
            else:
                loop_thread.loop.call_soon_threadsafe(self._start_consumer)
        except RuntimeError as exc:  # stop() began, or the loop closed, since the first check
            self._close_reason = "loop_stopped"
            self._closed = True
            self._finish_without_loop()
            loop_thread.components.detach(self)
            if isinstance(exc, LoopNotRunningError):
                raise
            raise LoopNotRunningError(loop_thread._not_running_message()) from exc

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, handle what is queued, stop the consumer. Idempotent.

        Bounded by ``timeout`` (None: as long as it takes): at the deadline the handler call
        running is cancelled (one in the executor is given half the grace to finish the item
        it is in) and whatever is left is counted in ``stats().unhandled`` and logged. Called
        on the loop thread, it stops accepting at once and drains in the background (use
        ``await ch.aclose()`` to wait there); so it does inside the channel's own executor
        handler (the drain waits for that call to return) or that of a channel that drains
        after this one. While the LoopThread is stopping it waits for that stop to drain the
        channel; once it stopped, it returns at once.

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        self._begin_close("closed")
        if self._finished:
            return
        if self._lt.in_loop_thread():
            self._spawn_drain(deadline)
            return
        state = self._lt.state
        if in_handler_fed_by(self):
            # The drain waits for the very handler call we are in: begin it and return. (While
            # stopping, stop() drains this channel already.)
            if state == "running":
                with contextlib.suppress(RuntimeError):  # the loop closed: nothing to drain
                    self._lt.loop.call_soon_threadsafe(self._spawn_drain, deadline)
            return
        if state == "running":
            try:
                # A callback, not run_coroutine_threadsafe: if the loop closes before running
                # it, no coroutine object is left behind un-awaited.
                self._lt.loop.call_soon_threadsafe(self._spawn_drain, deadline)
            except RuntimeError:  # the loop is closed; its consumer (if any) finished with it
                self._finish_without_loop()
                return
        elif state != "stopping":
            # Stopped or dead: no stop() is left to drain us, and a callback may never run.
            # A closed loop took its consumer with it; an abandoned (blocked) one may never
            # run again, so do not wait for it.
            if self._lt.loop.is_closed():
                self._finish_without_loop()
            return
        # While stopping, stop() drains this channel through the hook added at creation,
        # within its own deadline; a drain scheduled now could land after loop.stop() and
        # never run. The same holds if stop() began after the state was read above.
        wait = None if timeout is None else timeout + self._grace + 0.5
        if not self._done.wait(wait):
            self._log(
                "channel.close_timed_out",
                level="error",
                hint="the loop thread is blocked (a handler or coroutine that does not await)",
            )

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - mirrors close()
        """``close`` for coroutines: awaits the drain instead of blocking.

        Inside this channel's own handler it cannot wait (the drain waits for that very
        handler call to return): there it stops accepting, starts the drain in the background
        like ``close()`` on the loop thread, and returns; the consumer handles what is queued
        once the handler returns.

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        if not self._lt.in_loop_thread():
            await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)
            return
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        self._begin_close("closed")
        if self._in_own_handler():
            self._spawn_drain(deadline)
            return
        await self._drain(deadline)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # _drain finished its count; the caller was cancelled

    # ------------------------------------------------------------------ as a component

    stop_phase: StopPhase = "drain"

    async def on_stop(self, deadline: float) -> None:
        """The LoopThread's stop, drain phase: close, drain by ``deadline``, count the rest.

        A channel fed by another one's handler (``drain_after``) stays open until that one
        finished: what it hands over during its own drain is still taken."""
        if self._drain_after is not None:
            await self._drain_after._finished_by(deadline)
        self._begin_close("loop_stopped")
        await self._drain(deadline, for_stop=True)

    def on_closed(self) -> int:
        """The loop is gone: count what is left, wake every waiter; return the unhandled."""
        if not self._closed:
            self._close_reason = "loop_stopped"
            self._closed = True
        self._finish_without_loop()
        with self._mutex:
            return self._unhandled + self._late_unhandled + self._in_flight

    def after_fork_in_child(self) -> None:
        """The consumer lives in the parent: close, keep nothing of the old state."""
        self._after_fork_in_child()

    def _after_fork_in_child(self) -> None:
        # The consumer lives in the parent. Its locks may have been held at fork time by a
        # thread that does not exist here, so nothing of the old state is reused.
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._closed = True
        self._close_reason = "forked"
        self._finished = True
        self._items.clear()
        self._parked.clear()
        self._task = None
        self._handoff = None
        self._ended = None
        self._blocked = 0
        self._flush_waiters = []
        self._room_waiters.clear()
        self._done = Latch()
        self._done.set()
