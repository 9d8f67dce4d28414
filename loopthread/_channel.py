"""The event channel: synchronous producers push items, one consumer task on the loop handles them.

How an item travels (why it is not one janus ``put``/``get`` per item):

* Items go into a ``collections.deque``. ``append`` and ``popleft`` are single C calls, atomic
  under the GIL, so producers and the consumer never take a lock on the fast path. A janus
  queue moves each item under a ``threading.Lock`` taken on both sides, which turns every item
  into a cross-CPU lock hand-off, and while its consumer is parked every put schedules its own
  ``call_soon_threadsafe`` plus a notifier Task. Measured (perf/bench_channel.py): janus per
  item is 9-16x slower back to back, 2-3.5x with 5 µs of producer work per event.
* janus stays the bridge that wakes the loop, but it carries one *token* per idle-to-busy
  transition of the consumer, not the items. The consumer parks in ``await
  wake.async_q.get()``, so an idle channel costs the loop thread no wake-ups at all (no
  polling anywhere).
* Once awake, the consumer drains up to ``batch_size`` items per handler call without awaiting
  between them: one wake-up serves a burst.
* ``"block"`` backpressure takes a slow path (a ``threading.Condition``) only when the deque is
  full; the consumer notifies it only when producers are waiting.

The bound ``maxsize`` is checked, not reserved: producers racing past the check together may
overshoot it by at most one item each (``stats().high_water`` shows it), and ``"block"`` puts
from the loop thread are admitted past it (``stats().over_limit``). Counters written by
several producer threads are ``itertools.count`` objects (``next()`` is one atomic C call);
the consumer's counters are plain ints written by the loop thread only.

Free-threaded Python (3.13t+): the deque and list operations stay atomic there (per-object
locks), but the wake-up handshakes below (park vs append, ``_closed`` vs park, ``_blocked`` vs
room, flush waiters vs counters) rely on sequential consistency across two objects (store to
one, load of the other), which the GIL gives for free. There, each side's store and load need
a full fence between them, most simply by taking ``_cond`` around both (on the fast path that
is one uncontended lock per put). ``itertools.count`` is
not documented as thread-safe there either: the producer counters would need a lock or
atomics.

All of this module's global state is the registry of live channels, used only to close them in
a forked child (their consumer does not exist there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import janus

from loopthread._exceptions import (
    ChannelClosedError,
    ChannelFullError,
    LoopNotRunningError,
    WouldDeadlockError,
)
from loopthread._log import RateLimiter, logger
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["OVERFLOW_POLICIES", "Channel", "ChannelStats"]

T = TypeVar("T")

# A str, not a Literal: policies often come from configuration; they are checked at runtime.
Overflow = str
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_newest", "drop_oldest", "error")

_CloseReason = Literal["closed", "loop_stopped", "forked"]

_ids = itertools.count(1)
_live: weakref.WeakSet[Channel[Any]] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A snapshot of a channel's counters (plain data; metrics are derived from it).

    Each field is read atomically, the snapshot as a whole is not; once the channel is idle
    (after ``flush()`` or ``close()``) every item given to ``put`` is accounted for exactly once::

        put == handled + failed + dropped + unhandled + depth + in_flight

    Each ``put`` interrupted by Ctrl-C (KeyboardInterrupt) can leave this off by one: between
    counting its item and queueing it, or, with ``"drop_oldest"``, between evicting an item
    and counting the eviction. ``flush()`` and ``close()`` still complete.

    Fields:
        name: the channel's name.
        put: ``put``/``aput`` calls that returned (True: accepted, False: dropped by policy).
        handled: items passed to a handler call that returned normally.
        dropped: items dropped by the overflow policy: refused by ``"drop_newest"``, evicted by
            ``"drop_oldest"``, or a ``"block"`` put whose ``timeout`` expired.
        failed: items passed to a handler call that raised (the error is logged).
        depth: items waiting in the channel now.
        high_water: the largest depth seen (sampled by the consumer and on the full path).
        in_flight: items in the handler call running now.
        unhandled: accepted items the channel could not handle before it closed (deadline
            reached, the loop stopped, or a put raced with ``close()``).
        rejected: ``put`` calls that raised ``ChannelFullError`` (policy ``"error"``).
        over_limit: items admitted past ``maxsize`` because a ``"block"`` put came from the
            loop thread, where waiting would freeze the consumer.
        batches: handler calls made.
        wakeups: idle-to-busy wake-ups of the consumer (each one janus token).
        maxsize: the configured bound.
        overflow: the configured policy.
        closed: True once the channel stopped accepting items.
    """

    name: str
    put: int
    handled: int
    dropped: int
    failed: int
    depth: int
    high_water: int
    in_flight: int = 0
    unhandled: int = 0
    rejected: int = 0
    over_limit: int = 0
    batches: int = 0
    wakeups: int = 0
    maxsize: int = 0
    overflow: str = "block"
    closed: bool = False


def _peek(counter: itertools.count[int]) -> int:
    # itertools.count has no accessor for its next value; its repr is "count(N)".
    return int(repr(counter)[6:-1])


class _FlushWaiter:
    """One ``flush``/``aflush`` caller waiting for the consumer to get past ``target``.

    ``done`` is set when its items are known to have gone through although the counters may
    not show it (an interrupted put can leave a count with no item behind it: see put()).
    """

    __slots__ = ("done", "event", "future", "target")

    def __init__(
        self,
        target: int,
        event: threading.Event | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.target = target
        self.event = event
        self.future = future
        self.done = False

    def wake(self) -> None:
        # Called on the loop thread only, so the future (of this loop) may be set directly.
        if self.event is not None:
            self.event.set()
        elif self.future is not None and not self.future.done():
            self.future.set_result(None)


class Channel(Generic[T]):
    """A bounded, many-producer, one-consumer pipe from any thread into a handler on the loop.

    Create it with :meth:`LoopThread.channel`. ``handler(batch)`` is called on the loop with
    1 to ``batch_size`` items in FIFO order (per producer), one call at a time; it is usually
    ``async def``, a plain function is called directly (it must be quick: it runs on the loop).

    Overflow policies, when ``maxsize`` items are waiting:

    * ``"block"``: ``put`` waits for room (or until its ``timeout``, then returns False).
      From the loop thread itself ``put`` does *not* wait (the consumer that would make room
      runs on that thread): it admits the item past ``maxsize`` and counts it in
      ``stats().over_limit``. ``await ch.aput(item)`` on the loop waits for room without
      blocking the loop (from inside this channel's own handler it also admits past the limit).
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
    ``maxsize``, ``await ch.aclose()`` begins closing and returns. Waiting from work that the
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
    ) -> None:
        if isinstance(handler, CoroutineType):
            handler.close()
            raise TypeError(
                "handler must be the function itself, called with each batch; got a coroutine "
                "object. Pass lt.channel(handle), not lt.channel(handle(...))."
            )
        if not callable(handler):
            raise TypeError(
                "handler must be a callable taking a list of items, such as "
                f"`async def handle(batch): ...`; got {handler!r}."
            )
        self._maxsize = check_positive_int(maxsize, "maxsize")
        self._batch_size = check_positive_int(batch_size, "batch_size")
        self._overflow = check_choice(overflow, "overflow", OVERFLOW_POLICIES)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
        if not loop_thread.running:
            raise LoopNotRunningError(loop_thread._not_running_message())
        self._name = name or f"channel-{next(_ids)}"
        self._lt = loop_thread
        self._handler = handler
        self._pid = os.getpid()
        self._grace = min(loop_thread.cancel_grace, 1.0)

        self._items: deque[T] = deque()
        # The consumer's "parked" flag, as a list so that claiming it is one atomic pop():
        # exactly one waker sends the token for one park (see _consume).
        self._parked: list[None] = []
        self._wake: janus.Queue[None] | None = None  # created on the loop by _start_consumer
        self._waiting = False  # the consumer is inside `await wake.async_q.get()`
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[int]] = set()  # drains started by close()

        self._closed = False
        self._close_reason: _CloseReason = "closed"
        self._finished = False  # the consumer is done; set under _cond
        self._done = threading.Event()
        # The slow paths: producers waiting for room, flush waiters, the close handshake.
        self._cond = threading.Condition(threading.Lock())
        self._blocked = 0  # producers waiting in _cond for room (written under _cond)
        self._flush_waiters: list[_FlushWaiter] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()  # aput on the loop

        # Written by any producer thread: itertools.count, one atomic next() per event.
        self._accepted = itertools.count()
        self._refused = itertools.count()  # drop_newest refusals and block timeouts
        self._evicted = itertools.count()  # drop_oldest evictions
        self._rejected = itertools.count()  # "error" policy raises
        # Written under _cond by producers whose put raced with the end of close().
        self._late_unhandled = 0
        # Written by the loop thread only.
        self._handled = 0
        self._failed = 0
        self._unhandled = 0
        self._in_flight = 0
        self._batches = 0
        self._wakeups = 0
        self._over_limit = 0
        self._high_water = 0
        self._log_limiter = RateLimiter()

        _live.add(self)
        # The drain hook goes in here, before the state is read again, not when the consumer
        # starts: stop() leaves "running" before it collects the hooks, so either it collects
        # this one (and drains this channel within its deadline) or we see that it began.
        loop_thread._add_stop_hook("drain", self._stop_hook)
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
            loop_thread._remove_stop_hook(self._stop_hook)
            if isinstance(exc, LoopNotRunningError):
                raise
            raise LoopNotRunningError(loop_thread._not_running_message()) from exc

    # ------------------------------------------------------------------ producers

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
            and asyncio.current_task() is not self._task
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
        with self._cond:
            # Lost wake-up: we count ourselves in _blocked and then look at the deque, under
            # _cond; the consumer pops and then looks at _blocked, and notifies under _cond.
            # Either it sees us waiting (and its notify cannot slip between our check and our
            # wait, both under _cond), or we see the room it made.
            self._blocked += 1
            try:
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
        # - after the append, or inside _wake_consumer (the park claimed but no token sent,
        #   or the token queued in janus but the loop never told): the consumer stays parked.
        #   _interrupted() has the loop wake it if so.
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

    def _settle_late(self) -> bool:
        # close() began while this put was appending. Until the consumer's last look at the
        # deque (under _cond, with _finished set in the same critical section) the item is
        # still on its way to the handler. After it, nobody will pop it: take whatever was
        # appended late and count it as unhandled, so nothing is lost silently. The put raced
        # with close(), so True (accepted, then counted) is an honest answer.
        with self._cond:
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

    # ------------------------------------------------------------------ flush and close

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
        target = _peek(self._accepted)
        if self._flushed(target):
            return True
        event = threading.Event()
        waiter = _FlushWaiter(target, event=event)
        if self._register(waiter):
            event.wait(timeout)
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
        target = _peek(self._accepted)
        if self._flushed(target):
            return True
        if asyncio.current_task() is self._task:
            raise WouldDeadlockError(
                f"await ch.aflush() inside the handler of channel {self._name!r} would wait "
                "for the handler itself to return. Flush from outside the handler."
            )
        future: asyncio.Future[None] = loop.create_future()
        waiter = _FlushWaiter(target, future=future)
        if self._register(waiter):
            try:
                await asyncio.wait({future}, timeout=timeout)
            finally:
                self._unregister(waiter)
        return waiter.done or self._flushed(target)

    def _register(self, waiter: _FlushWaiter) -> bool:
        """Add ``waiter`` for the consumer to release; False if there is nothing to wait for
        (then ``waiter.done`` says whether its items are known to have gone through)."""
        # Lost wake-ups, both ways round; one of us sees the other each time:
        # - we add the waiter, then re-read the counters; the consumer updates its counters,
        #   then looks at the waiters;
        # - we add the waiter, read the deque, then _waiting; the consumer raises _waiting,
        #   then reads the waiters and the deque (_consume, at the park). An empty deque seen
        #   before a raised _waiting means everything appended so far went through: while
        #   _waiting is up the consumer pops nothing, and it raises it only after handling.
        with self._cond:
            if self._finished:
                return False
            self._flush_waiters.append(waiter)
        if self._gone_through() >= waiter.target or (not self._items and self._waiting):
            waiter.done = True
            self._unregister(waiter)
            return False
        return True

    def _unregister(self, waiter: _FlushWaiter) -> None:
        with self._cond:
            try:
                self._flush_waiters.remove(waiter)
            except ValueError:  # already released by the consumer
                pass

    def _gone_through(self) -> int:
        # Items leave the front of the deque in FIFO order: through the handler (handled or
        # failed) or evicted by drop_oldest. Anything unhandled at close is behind them.
        return self._handled + self._failed + _peek(self._evicted)

    def _flushed(self, target: int) -> bool:
        if self._gone_through() >= target:
            return True
        # A consumer that finished having lost nothing let everything through, even past a
        # count with no item (an interrupted put). Under _cond: _finalize sets _finished and
        # counts what is left in one critical section. (A forked child's copy is finished
        # with nothing counted: its items are the parent's.)
        with self._cond:
            return (
                self._finished
                and self._close_reason != "forked"
                and not (self._unhandled + self._late_unhandled + self._in_flight)
            )

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, handle what is queued, stop the consumer. Idempotent.

        Bounded by ``timeout`` (None: as long as it takes): at the deadline the handler call
        running is cancelled and whatever is left is counted in ``stats().unhandled`` and
        logged. Called on the loop thread, it stops accepting at once and drains in the
        background (use ``await ch.aclose()`` to wait there). While the LoopThread is stopping
        it waits for that stop to drain the channel; once it stopped, it returns at once.

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
        if asyncio.current_task() is self._task:
            self._spawn_drain(deadline)
            return
        await self._drain(deadline)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # _drain finished its count; the caller was cancelled

    def _begin_close(self, reason: _CloseReason) -> None:
        if not self._closed:
            self._close_reason = reason
            self._closed = True
        # Lost wake-up, as for producers: _closed is set before we look at _parked, and the
        # consumer sets _parked before it looks at _closed.
        self._wake_consumer()
        with self._cond:
            self._cond.notify_all()  # producers waiting for room raise ChannelClosedError

    def _spawn_drain(self, deadline: float) -> None:
        if not self._finished:
            task = asyncio.get_running_loop().create_task(self._drain(deadline))
            self._closing.add(task)  # a strong reference until it is done
            task.add_done_callback(self._closing.discard)

    async def _stop_hook(self, deadline: float) -> int:
        """The LoopThread's "drain" stop hook: close, drain by ``deadline``, count the rest."""
        self._begin_close("loop_stopped")
        return await self._drain(deadline)

    async def _drain(self, deadline: float) -> int:
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
            if task is not None and not task.done():
                await asyncio.wait({task}, timeout=_remaining(deadline))
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=self._grace)
        except asyncio.CancelledError:
            # stop() ran out of time: cancel the consumer and report what is left anyway. It
            # gets its grace to count the handler call it was in (a partly handled batch);
            # stop() waits for cancelled drains up to its own cancellation deadline.
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=self._grace)
        return self._finalize()

    def _finish_without_loop(self) -> None:
        # The loop is gone (closed) and with it any consumer: count what is left.
        with self._cond:
            if not self._finished:
                self._finished = True
                self._unhandled += self._take_all()
            waiters, self._flush_waiters = self._flush_waiters, []
            self._cond.notify_all()
        for waiter in waiters:
            if waiter.event is not None:
                waiter.event.set()
        self._done.set()

    # ------------------------------------------------------------------ on the loop thread

    def _start_consumer(self) -> None:
        if self._task is not None or self._finished:
            return
        if self._lt.state not in ("running", "stopping"):
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
        items = self._items
        popleft = items.popleft
        parked = self._parked
        batch_size = self._batch_size
        wake = self._wake
        assert wake is not None
        get = wake.async_q.get
        try:
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
        except asyncio.CancelledError:
            self._begin_close("loop_stopped")
            self._finalize()
            raise
        self._after_finish()

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

    def _handler_failed(self, size: int, exc: BaseException) -> None:
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

    def _release_flush_waiters(self, idle: list[_FlushWaiter] | None = None) -> None:
        """Wake the flush waiters whose items went through: those whose target the consumer
        got past, and those in ``idle`` (read before the consumer found the deque empty)."""
        gone = self._gone_through()
        with self._cond:
            waiters = self._flush_waiters
            ready = [w for w in waiters if w.target <= gone or (idle is not None and w in idle)]
            if not ready:
                return
            self._flush_waiters = [w for w in waiters if w not in ready]
        for waiter in ready:
            waiter.done = True
            waiter.wake()

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

    def _take_all(self) -> int:
        # popleft one by one, not len() then clear(): a producer may append in between.
        taken = 0
        with contextlib.suppress(IndexError):
            while True:
                self._items.popleft()
                taken += 1
        return taken

    def _after_finish(self) -> None:
        if self._done.is_set():  # ran already (or the channel finished without its loop)
            return
        with self._cond:
            waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            waiter.wake()  # each decides from the final counters (_flushed)
        self._release_room_waiters()
        self._lt._remove_stop_hook(self._stop_hook)
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

    def _on_consumer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # pragma: no cover - a bug in the consumer itself
            self._log("channel.consumer_crashed", level="error", exc_info=exc)
            self._begin_close("loop_stopped")
            self._finalize()

    # ------------------------------------------------------------------ observing

    @property
    def name(self) -> str:
        """The name given at creation (or ``channel-N``)."""
        return self._name

    @property
    def closed(self) -> bool:
        """True once the channel stopped accepting items."""
        return self._closed

    def stats(self) -> ChannelStats:
        """A snapshot of the counters; see :class:`ChannelStats` for the accounting identity."""
        refused = _peek(self._refused)
        evicted = _peek(self._evicted)
        return ChannelStats(
            name=self._name,
            put=_peek(self._accepted) + refused,
            handled=self._handled,
            dropped=refused + evicted,
            failed=self._failed,
            depth=len(self._items),
            high_water=self._high_water,
            in_flight=self._in_flight,
            unhandled=self._unhandled + self._late_unhandled,
            rejected=_peek(self._rejected),
            over_limit=self._over_limit,
            batches=self._batches,
            wakeups=self._wakeups,
            maxsize=self._maxsize,
            overflow=self._overflow,
            closed=self._closed,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Channel {self._name!r} {state} depth={len(self._items)} "
            f"handled={self._handled} failed={self._failed}>"
        )

    # ------------------------------------------------------------------ helpers

    def _closed_error(self) -> ChannelClosedError:
        reason = self._close_reason
        if reason == "forked":
            return ChannelClosedError(
                f"channel {self._name!r} was created in process {self._pid} before fork(); "
                "its consumer does not exist in this child. Create a new channel in the child."
            )
        if reason == "loop_stopped":
            return ChannelClosedError(
                f"channel {self._name!r} is closed because its LoopThread {self._lt.name!r} "
                "stopped. Create the channel on a running LoopThread."
            )
        return ChannelClosedError(
            f"channel {self._name!r} is closed: put() after close() is refused. Stop the "
            "producers before closing, or create a new channel."
        )

    def _log(self, event: str, *, level: str = "info", **fields: Any) -> None:
        try:
            getattr(logger, level)(event, channel=self._name, loop_thread=self._lt.name, **fields)
        except Exception:  # noqa: BLE001 - a broken log setup must not break the channel
            pass

    def _after_fork_in_child(self) -> None:
        # The consumer lives in the parent. Its locks may have been held at fork time by a
        # thread that does not exist here, so nothing of the old state is reused.
        self._cond = threading.Condition(threading.Lock())
        self._closed = True
        self._close_reason = "forked"
        self._finished = True
        self._items.clear()
        self._parked.clear()
        self._wake = None
        self._blocked = 0
        self._flush_waiters = []
        self._room_waiters.clear()
        self._done = threading.Event()
        self._done.set()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _after_fork_in_child() -> None:
    for channel in list(_live):
        channel._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
