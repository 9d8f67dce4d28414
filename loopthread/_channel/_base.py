"""The state a channel's parts share, its stats and messages."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from loopthread._core._component import ComponentBase
from loopthread._exceptions import (
    ChannelClosedError,
)
from loopthread._log import RateLimiter, logger
from loopthread._stats import ChannelStats
from loopthread._util import Latch

if TYPE_CHECKING:
    from loopthread._channel._api import Channel
    from loopthread._loopthread import LoopThread


T = TypeVar("T")

# A str, not a Literal: policies often come from configuration; they are checked at runtime.
Overflow = str
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_newest", "drop_oldest", "error")

CloseReason = Literal["closed", "loop_stopped", "forked"]

_ids = itertools.count(1)


def new_id() -> int:
    """The next channel number (for ``channel-N`` names)."""
    return next(_ids)


__all__ = [
    "OVERFLOW_POLICIES",
    "ChannelBase",
    "CloseReason",
    "FlushWaiter",
    "Overflow",
    "T",
    "new_id",
    "peek",
    "remaining",
]


def peek(counter: itertools.count[int]) -> int:
    # itertools.count has no accessor for its next value; its repr is "count(N)".
    return int(repr(counter)[6:-1])


class FlushWaiter:
    """One ``flush``/``aflush`` caller waiting for the consumer to get past ``target``.

    ``done`` is set when its items are known to have gone through although the counters may
    not show it (an interrupted put can leave a count with no item behind it: see put()).
    """

    __slots__ = ("done", "event", "future", "target")

    def __init__(
        self,
        target: int,
        event: Latch | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.target = target
        self.event = event
        self.future = future
        self.done = False

    def wake(self) -> None:
        # Called on the loop thread only, so the future (of this loop) may be set directly.
        # A Latch, not a threading.Event: its set() never blocks (see _latch).
        if self.event is not None:
            self.event.set()
        elif self.future is not None and not self.future.done():
            self.future.set_result(None)


class ChannelBase(ComponentBase, Generic[T]):
    """Attributes, observation and messages of a channel (no behaviour)."""

    # The state every part of a channel shares; set by Channel.__init__ (see there).
    _name: str
    _lt: LoopThread
    _handler: Callable[[list[Any]], Awaitable[object] | None]  # adapted: see _modes
    _capture: Callable[[], contextvars.Context] | None  # context="producer": (item, context)
    _drain_after: Channel[Any] | None  # stop() drains this channel once that one finished
    _handler_task: asyncio.Task[Any] | None  # a context="producer" run's own Task
    _pid: int
    _grace: float
    _maxsize: int
    _batch_size: int
    _overflow: str
    _items: deque[Any]  # items, or (item, context) pairs when _capture
    _parked: list[None]
    _active: bool
    _inline: bool
    _streaming: bool
    _parked_at: float
    _park_batches: int
    _loop: asyncio.AbstractEventLoop
    _loop_ident: int | None
    _ctx: contextvars.Context
    _wake_ctx: contextvars.Context
    _consumer_started: bool
    _task: asyncio.Task[None] | None
    _task_name: str
    _handoff: tuple[list[T], int, Awaitable[object]] | None
    _ended: asyncio.Future[None] | None
    _closing: set[asyncio.Task[int]]
    _closed: bool
    _close_reason: CloseReason
    _finished: bool
    _done: Latch
    _mutex: threading.RLock
    _cond: threading.Condition
    _blocked: int
    _flush_waiters: list[FlushWaiter]
    _room_waiters: deque[asyncio.Future[None]]
    _accepted: itertools.count[int]
    _refused: itertools.count[int]
    _evicted: itertools.count[int]
    _rejected: itertools.count[int]
    _late_unhandled: int
    _handled: int
    _failed: int
    _unhandled: int
    _in_flight: int
    _batches: int
    _wakeups: int
    _over_limit: int
    _high_water: int
    _log_limiter: RateLimiter
    _stop_requested: bool

    @property
    def name(self) -> str:
        """The name given at creation (or ``channel-N``)."""
        return self._name

    @property
    def depth(self) -> int:
        """Items waiting now (``stats().depth`` without building a snapshot)."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once the channel stopped accepting items."""
        return self._closed

    def stats(self) -> ChannelStats:
        """A snapshot of the counters; see :class:`ChannelStats` for the accounting identity."""
        refused = peek(self._refused)
        evicted = peek(self._evicted)
        return ChannelStats(
            name=self._name,
            put=peek(self._accepted) + refused,
            handled=self._handled,
            dropped=refused + evicted,
            failed=self._failed,
            depth=len(self._items),
            high_water=self._high_water,
            in_flight=self._in_flight,
            unhandled=self._unhandled + self._late_unhandled,
            rejected=peek(self._rejected),
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

    def _in_own_handler(self) -> bool:
        """True in a coroutine of this channel's own handler call (it must not wait for it)."""
        task = asyncio.current_task()
        return task is not None and (task is self._task or task is self._handler_task)

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

    def _take_all(self) -> int:
        # popleft one by one, not len() then clear(): a producer may append in between.
        taken = 0
        with contextlib.suppress(IndexError):
            while True:
                self._items.popleft()
                taken += 1
        return taken


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
