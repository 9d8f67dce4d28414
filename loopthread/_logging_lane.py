"""LoopHandler's lane into its channel: what the overflow policy may drop, the protected lane
for records at or above ``protect_level``, and the summaries of what was dropped.

How each policy keeps protected records (``protect_level``, default ERROR) while the channel is
full, without a lock on the fast path and without touching the channel's internals:

* ``"block"``: nothing is ever dropped; the channel's own policy, nothing else.
* ``"drop_newest"`` and ``"error"``: the channel is opened with ``"block"``; a record below
  ``protect_level`` is put with ``timeout=0`` (refused at once when the channel is full), a
  protected one waits for room as with ``"block"`` (from the loop thread it is admitted past
  ``maxsize``). Order is kept: a protected record is never overtaken by a later one.
* ``"drop_oldest"``: the channel evicts the oldest waiting item when a new one arrives. A
  protected record travels in a :class:`_Held` box watched by a weakref: when the channel
  evicts it, the box dies and its guard moves the record to ``rescued``; the consumer writes
  rescued records first in its next batch. The channel evicts from the front, so everything
  still waiting (and that next batch) is younger than a rescued record: order is kept too.
  A producer of protected records waits while ``maxsize`` of them await rescue (a flood of
  protected records into a stuck consumer must not grow without bound).

Dropped records are counted by level (caller side, per-thread cells) and by the channel
(``drop_oldest`` evictions). The consumer turns them into one WARNING record per
``interval`` seconds ("dropped 1,234 INFO records in the last 10 s"), written through the
wrapped handlers before the batch it comes with; ``flush()`` and ``close()`` write the one
still owed. Nothing polls: a summary waits for the next batch, flush or close.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

from loopthread._exceptions import ChannelFullError
from loopthread._handlers import Entry, split
from loopthread._logging_counters import Cell, Counts
from loopthread._process import fork_safe_lock

if TYPE_CHECKING:
    from loopthread._channel import Channel

__all__ = ["Item", "Lane", "Pair", "check_protect_level"]

Pair = tuple[logging.LogRecord, contextvars.Context]
Item = Any  # an Entry, or a _Held (a protected record in a drop_oldest channel)


class _Held:
    """A protected record in a ``drop_oldest`` channel (a tuple cannot be weakly referenced)."""

    __slots__ = ("__weakref__", "ctx", "guard", "record")

    def __init__(self, record: logging.LogRecord, ctx: contextvars.Context) -> None:
        self.record = record
        self.ctx = ctx
        self.guard: _Guard | None = None


class _Guard(weakref.ref):  # type: ignore[type-arg]
    """Fires when its :class:`_Held` dies without the consumer having seen it (evicted)."""

    __slots__ = ("ctx", "record")

    record: logging.LogRecord | None
    ctx: contextvars.Context | None


def check_protect_level(value: object) -> int | None:
    """``protect_level`` as a level number (None: nothing is protected).

    Raises:
        TypeError, ValueError: not a level number, a known level name, or None.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            "protect_level takes a logging level (logging.ERROR, 'ERROR') or None (protect "
            f"nothing); got {value!r}."
        )
    if isinstance(value, str):
        number = logging.getLevelName(value.upper())
        if not isinstance(number, int):
            raise ValueError(
                f"protect_level {value!r} is not a logging level name; use e.g. 'ERROR' or "
                "logging.ERROR, or None to protect nothing."
            )
        return number
    return value


class Lane:
    """How records enter one LoopHandler's channel; what was dropped; the summaries."""

    def __init__(
        self,
        *,
        overflow: str,
        protect_level: int | None,
        maxsize: int,
        interval: float | None,
        counts: Counts,
        describe: Callable[[], str],
        on_loop: Callable[[], bool],
    ) -> None:
        self.overflow = overflow
        self.protect = math.inf if protect_level is None else protect_level
        protecting = protect_level is not None and overflow != "block"
        # The policy the channel is opened with, and how put() applies the user's.
        self.mode = (
            "plain" if not protecting else "oldest" if overflow == "drop_oldest" else "refuse"
        )
        self.channel_overflow = "block" if self.mode == "refuse" else overflow
        self.loop_ident: int | None = None  # the channel's loop thread (set when it opens)
        self.plain = self.mode == "plain"
        self._maxsize = maxsize
        self._interval = interval
        self._counts = counts
        self._describe = describe  # the handler's label, for the summary
        self._on_loop = on_loop  # True in the loop thread of the handler's channel
        self._watch_evictions = self.channel_overflow == "drop_oldest"
        # Drops since the last summary: set by producers without a lock (a lost race only
        # means the next batch, flush or close writes the summary).
        self.pending = False
        self._window_start: float | None = None
        self._last_summary = -math.inf
        self._summary_lock = fork_safe_lock()
        self._reported_levels: dict[int, int] = {}
        self._reported_evicted = 0
        self._reported_rescued = 0
        self._evicted_channel: object = None
        # drop_oldest: protected records the channel evicted, oldest first.
        self.rescued: deque[Pair] = deque()
        self._guards: set[_Guard] = set()
        self._room = threading.Condition(fork_safe_lock())
        self._room_waiters = 0

    # ------------------------------------------------------------------ producers

    def put(
        self, channel: Channel[Item], item: Entry, levelno: int, *, protected: bool = False
    ) -> bool:
        """Put ``item`` as the policy says; False when it was dropped (count it with
        :meth:`dropped`). ``protected``: treat it as at ``protect_level`` (a summary).

        Raises:
            ChannelFullError: the ``"error"`` policy refused a record below protect_level.
            ChannelClosedError, LoopNotRunningError: as ``Channel.put``.
        """
        mode = self.mode
        if protected or levelno >= self.protect:
            if mode == "oldest":
                return self._put_held(channel, item)
            return channel.put(item)  # "refuse" mode: a "block" channel, it waits for room
        if mode == "plain":
            return channel.put(item)
        # "refuse" mode, below protect_level: refused at once when full. On its own loop
        # thread a "block" channel admits past maxsize (waiting there would stall it): ask.
        if get_ident() == self.loop_ident and channel.stats().depth >= self._maxsize:
            accepted = False
        else:
            accepted = channel.put(item, timeout=0)
        if accepted:
            return True
        if self.overflow == "error":
            raise ChannelFullError(
                f"LoopHandler {self._describe()}: the queue is full ({self._maxsize:,} records "
                "waiting) and its overflow policy is 'error'; the record was dropped. Raise "
                "maxsize, or choose overflow='block', 'drop_newest' or 'drop_oldest'."
            )
        return False

    def dropped(self, cell: Cell, levelno: int) -> None:
        """Count one record dropped by the policy (in the current thread's cell)."""
        cell.dropped += 1
        cell.levels[levelno] = cell.levels.get(levelno, 0) + 1
        if not self.pending:
            self._window_start = time.monotonic()
            self.pending = True

    def _put_held(self, channel: Channel[Item], item: Entry) -> bool:
        record, ctx = split(item)
        if ctx is None:  # (never: every queued record has its context)
            ctx = contextvars.Context()
        if len(self.rescued) >= self._maxsize and not self._on_loop():
            with self._room:
                self._room_waiters += 1
                try:
                    while len(self.rescued) >= self._maxsize and not channel.closed:
                        # Woken by the consumer once it wrote them; the bound only re-checks
                        # a channel closed by its loop's stop() (no consumer left to wake us).
                        self._room.wait(1.0)
                finally:
                    self._room_waiters -= 1
        held = _Held(record, ctx)
        guard = _Guard(held, self._rescue)
        guard.record = record
        guard.ctx = ctx
        held.guard = guard
        self._guards.add(guard)
        return channel.put(held)

    def _rescue(self, guard: _Guard) -> None:
        # Runs in whichever thread dropped the last reference to the box: a producer whose
        # put evicted it. Lock-free: a deque append and a set discard.
        self._guards.discard(guard)
        record, ctx = guard.record, guard.ctx
        if record is not None and ctx is not None:
            guard.record = guard.ctx = None
            self.rescued.append((record, ctx))

    # ------------------------------------------------------------------ the consumer

    def unpack(self, items: list[Item]) -> list[Entry]:
        """The batch's entries: rescued records first, boxes opened."""
        if self.mode != "oldest":
            return items
        out: list[Entry] = []
        rescued = self.rescued
        if rescued:
            cell = self._counts.cell()
            while rescued:
                out.append(rescued.popleft())
                cell.rescued += 1
            if self._room_waiters:
                # Never wait on the loop thread for a lock a caller holds (and could leave held):
                # a producer that misses this wake-up re-checks within its 1 s bound.
                room = self._room
                if room.acquire(blocking=False):
                    try:
                        room.notify_all()
                    finally:
                        room.release()
        for item in items:
            if type(item) is _Held:
                guard = item.guard
                if guard is not None:  # seen: disarm, so that its death is not an eviction
                    item.guard = None
                    guard.record = guard.ctx = None
                    self._guards.discard(guard)
                out.append((item.record, item.ctx))
            else:
                out.append(item)
        return out

    def leftovers(self) -> list[Pair]:
        """Rescued records no batch will write (the channel closed): the caller writes them."""
        out: list[Pair] = []
        while self.rescued:
            out.append(self.rescued.popleft())
        with self._room:
            self._room.notify_all()
        return out

    def owes(self) -> bool:
        """A summary may be owed (something was dropped, or evictions are watched)."""
        return self._interval is not None and (self.pending or self._watch_evictions)

    def summary(self, channel: object, *, force: bool = False) -> Pair | None:
        """The summary owed now (one per ``interval``; ``force``: whatever is owed), or None."""
        interval = self._interval
        if interval is None or not (self.pending or self._watch_evictions):
            return None
        now = time.monotonic()
        if not force and now - self._last_summary < interval:
            return None
        with self._summary_lock:
            return self._take(channel, now)

    def _take(self, channel: object, now: float) -> Pair | None:
        started = self._window_start
        was_pending, self.pending = self.pending, False  # before reading: a drop after sets it
        levels: dict[int, int] = {}
        watch = self._watch_evictions and channel is not None
        if was_pending or started is not None or watch:
            totals = self._counts.totals()
            for level, total in totals.levels.items():
                new = total - self._reported_levels.get(level, 0)
                if new > 0:
                    levels[level] = new
            self._reported_levels = totals.levels
        evicted = 0
        if watch:
            stats = getattr(channel, "stats", None)
            now_evicted = int(stats().dropped) if callable(stats) else 0
            if channel is not self._evicted_channel:  # a new channel (after fork, a new loop)
                self._evicted_channel, self._reported_evicted = channel, 0
            # Protected records the channel evicted were rescued, not dropped.
            evicted = (
                now_evicted - self._reported_evicted - (totals.rescued - self._reported_rescued)
            )
            self._reported_evicted = now_evicted
            self._reported_rescued = totals.rescued
            if evicted > 0 and started is None:
                started = self._last_summary if self._last_summary > -math.inf else now
        if not levels and evicted <= 0:
            return None
        self._window_start = None
        self._last_summary = now
        self._counts.cell().summaries += 1
        return self._record(levels, max(evicted, 0), now - (started or now)), contextvars.Context()

    def _record(self, levels: dict[int, int], evicted: int, seconds: float) -> logging.LogRecord:
        phrases = []
        if levels:
            counted = [
                f"{n:,} {logging.getLevelName(level)}"
                for level, n in sorted(levels.items(), reverse=True)
            ]
            phrases.append(_and(counted) + " records")
        if evicted:
            below = (
                ""
                if self.protect == math.inf
                else f" below {logging.getLevelName(int(self.protect))}"
            )
            phrases.append(f"{evicted:,} of the oldest waiting records{below}")
        span = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"
        message = (
            f"dropped {_and(phrases)} in the last {span} s (LoopHandler {self._describe()}, "
            f"overflow={self.overflow!r}, maxsize={self._maxsize:,})"
        )
        record = logging.LogRecord(
            "loopthread.logging", logging.WARNING, __file__, 0, message, None, None, "LoopHandler"
        )
        record.loopthread_event = "loop_handler.dropped"
        record.loopthread_dropped = {
            **{str(logging.getLevelName(level)): n for level, n in levels.items()},
            **({"evicted": evicted} if evicted else {}),
        }
        return record


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
