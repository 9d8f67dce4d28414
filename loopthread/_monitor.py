"""What a LoopThread measures about itself: call and lag histograms, loop lag, stalls.

Nothing here imports ``prometheus_client``: :mod:`loopthread.metrics` reads these objects at
scrape time, and a LoopThread without metrics still has its lag monitor and watchdog.

Two parts, both started on the loop thread just before ``run_forever`` and closed after it:

* the **lag tick**: every ``lag_interval`` seconds a ``loop.call_at`` timer measures how late
  it ran and records that into a :class:`Buckets` histogram. It is the only thing here that
  wakes an idle loop, which is why ``lag_interval=None`` means zero idle wake-ups.
* the **watchdog**: a thread that logs one ``loop_thread.stalled`` warning, with the loop
  thread's current stack, for every loop iteration that runs longer than ``slow_callback``.
  On selector loops (the stdlib default, and the proactor on Windows) it wraps the loop's
  ``_selector.select``: leaving ``select`` starts an iteration, entering it ends one. The
  watchdog parks on an Event while the loop is idle and costs nothing then. Loops without a
  ``_selector`` (uvloop) get a weaker *heartbeat* mode: the watchdog expects the lag tick and
  reports when it is more than ``slow_callback`` overdue. That catches every stall longer than
  ``lag_interval + slow_callback`` (so any permanent hang) with the stack, but a shorter stall
  only if it covers the moment a tick was due; and it needs the lag tick (no ``lag_interval``,
  no watchdog on uvloop).

The watchdog's ordering argument, in one place (selector mode):

The loop thread (L) publishes ``_mark``: ``None`` when it enters ``select`` (idle), a fresh
1-tuple ``(monotonic(),)`` when it leaves (busy since then). Each tuple is a new object, and
the watchdog (W) holds the one it compares against, so ``self._mark is seen`` is true exactly
while the same iteration (or the same idle period) lasts: no counter needed, and one attribute
store publishes both "which iteration" and "since when", so W never reads a torn pair.

L only sets the Event when W says it is parked, so a busy loop pays one attribute read per
iteration, not an ``Event.set``. Parking is a Dekker pair:

* W: ``clear()``; ``_parked = True``; re-read ``_mark``; wait only if it is still the one seen.
* L: ``_mark = new``; read ``_parked``; ``set()`` if True.

Each side writes before it reads the other's variable, and CPython executes these bytecodes
one at a time (the GIL orders them), so at least one side sees the other: either W sees the
new mark and does not wait, or L sees ``_parked`` and wakes W. A late ``set()`` (L read
``_parked`` just before W reset it) only makes one later wait return early; W re-reads the
state after every wake, so spurious wake-ups are harmless, and ``clear()`` comes before every
wait so none of them can make W spin.

After a wake, W stays awake for ``slow_callback`` (timed waits) before it parks again, so a
loop that alternates between short bursts and idle (a call every few microseconds) costs at
most one ``Event.set`` per ``slow_callback``, not one per call.

A stall is reported only if the loop is still in the same iteration *after* its stack was
captured, so the stack always belongs to the stalled iteration; one that ends during the
capture (it lasted barely ``slow_callback``) is not reported.
"""

from __future__ import annotations

import asyncio
import enum
import math
import sys
import threading
import time
import traceback
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from loopthread._log import RateLimiter, logger

__all__ = [
    "CALL_DURATION_BUCKETS",
    "DEFAULT_REGISTRY",
    "LAG_BUCKETS",
    "Buckets",
    "LoopMonitor",
    "MonitorStats",
    "check_interval",
]

#: Upper bounds (seconds) of the call-duration histogram: a call costs tens of microseconds.
CALL_DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: Upper bounds (seconds) of the loop-lag histogram.
LAG_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

WatchdogMode = Literal["select", "heartbeat", "off"]


class _Default(enum.Enum):
    REGISTRY = "prometheus_client.REGISTRY"

    def __repr__(self) -> str:
        return self.value


#: ``LoopThread(metrics_registry=...)``'s default: the global ``prometheus_client.REGISTRY``,
#: resolved only when a LoopThread is created, so ``import loopthread`` does not import
#: prometheus_client.
DEFAULT_REGISTRY = _Default.REGISTRY


def check_interval(value: float | None, name: str) -> float | None:
    """Validate a period in seconds that must be > 0, or None (off).

    Raises:
        TypeError: not a real number or None.
        ValueError: zero, negative, NaN or infinite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None; got {type(value).__name__} {value!r}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be > 0 seconds; got {value!r}. Pass {name}=None to turn it off."
        )
    return float(value)


class Buckets:
    """Histogram bucket counts written by one thread (the loop thread) and read by any.

    Cheaper than ``prometheus_client.Histogram``, which takes a lock per observation: with a
    single writer there is nothing to lock. A reader copies ``counts`` (one atomic C call)
    and derives the total count from that copy, so buckets and count always agree; only
    ``sum`` may be one observation ahead or behind.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Return (per-bucket counts, sum); the counts are not cumulative."""
        return list(self.counts), self.sum


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """A snapshot of the lag monitor and watchdog of one LoopThread."""

    lag_interval: float | None
    slow_callback: float | None
    watchdog: WatchdogMode
    ticks: int
    lag_last: float
    lag_max: float
    stalls: int


class LoopMonitor:
    """The lag tick and the watchdog of one loop (see the module docstring)."""

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        *,
        lag_interval: float | None,
        slow_callback: float | None,
    ) -> None:
        self._name = name
        self._loop = loop
        self._interval = lag_interval
        self._slow = slow_callback
        self._thread_id = threading.get_ident()  # the loop thread: start() runs on it
        self.lag: Buckets | None = Buckets(LAG_BUCKETS) if lag_interval is not None else None
        self._ticks = 0
        self._lag_last = 0.0
        self._lag_max = 0.0
        self._stalls = 0  # written by the watchdog thread only
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

        self._mark: tuple[float] | None = None
        self._parked = False
        self._closed = False
        self._wake = threading.Event()
        self._limiter = RateLimiter(10.0)  # used by the watchdog thread only
        self._selector: Any = None
        self._saved_select: Any = None  # the instance attribute we replaced, if there was one
        self._watchdog: threading.Thread | None = None
        self._mode: WatchdogMode = "off"

    @classmethod
    def start(
        cls,
        name: str,
        loop: asyncio.AbstractEventLoop,
        *,
        lag_interval: float | None,
        slow_callback: float | None,
    ) -> LoopMonitor:
        """Create and start a monitor; call on the loop thread before the loop runs."""
        monitor = cls(name, loop, lag_interval=lag_interval, slow_callback=slow_callback)
        monitor._start()
        return monitor

    def _start(self) -> None:
        loop = self._loop
        if self._interval is not None:
            self._due = loop.time() + self._interval
            self._timer = loop.call_at(self._due, self._tick)
        if self._slow is None:
            return
        target: Callable[[], None]
        if self._wrap_selector():
            self._mode, target = "select", self._watch_select
        elif self._interval is not None:
            self._mode, target = "heartbeat", self._watch_heartbeat
            self._mark = (time.monotonic(),)
        else:
            return  # no selector to watch and no tick to expect: no watchdog
        self._watchdog = threading.Thread(target=target, name=f"{self._name}-watchdog", daemon=True)
        self._watchdog.start()

    def close(self) -> None:
        """Stop the tick and the watchdog and unwrap the selector; idempotent.

        Call on the loop thread once the loop stopped running.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        selector = self._selector
        if selector is not None:
            self._selector = None
            if self._saved_select is not None:
                selector.select = self._saved_select
            else:
                try:
                    del selector.select
                except AttributeError:
                    pass
        self._closed = True
        self._wake.set()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(1.0)

    def stats(self) -> MonitorStats:
        """A snapshot of the lag and stall counters."""
        return MonitorStats(
            lag_interval=self._interval,
            slow_callback=self._slow,
            watchdog=self._mode,
            ticks=self._ticks,
            lag_last=self._lag_last,
            lag_max=self._lag_max,
            stalls=self._stalls,
        )

    # ------------------------------------------------------------------ on the loop thread

    def _tick(self) -> None:
        loop = self._loop
        now = loop.time()
        # call_at may fire up to the clock resolution early: a negative lag is no lag.
        lag = max(0.0, now - self._due)
        if self.lag is not None:
            self.lag.observe(lag)
        self._ticks += 1
        self._lag_last = lag
        self._lag_max = max(self._lag_max, lag)
        # Schedule from now, not from the missed deadline: a stalled loop gets one late tick,
        # not a burst of catch-up ticks.
        assert self._interval is not None
        self._due = now + self._interval
        self._timer = loop.call_at(self._due, self._tick)
        if self._mode == "heartbeat":
            self._mark = (time.monotonic(),)
            if self._parked:
                self._wake.set()

    def _wrap_selector(self) -> bool:
        selector: Any = getattr(self._loop, "_selector", None)
        found = getattr(selector, "select", None)
        if found is None or not callable(found):
            return False
        select: Callable[[float | None], Any] = found
        saved = getattr(selector, "__dict__", {}).get("select")
        monotonic = time.monotonic
        wake = self._wake

        def watched_select(timeout: float | None = None) -> Any:
            self._mark = None
            try:
                return select(timeout)
            finally:
                # Publish the new iteration first, then look at _parked (the Dekker pair).
                self._mark = (monotonic(),)
                if self._parked:
                    wake.set()

        try:
            selector.select = watched_select
        except (AttributeError, TypeError):  # a selector with __slots__: use the heartbeat
            return False
        self._selector = selector
        self._saved_select = saved
        return True

    # ------------------------------------------------------------------ on the watchdog thread

    def _sleep(self, timeout: float) -> None:
        self._wake.clear()
        if not self._closed:
            self._wake.wait(timeout)

    def _park(self, seen: tuple[float] | None) -> None:
        """Wait until the loop publishes a mark other than ``seen`` (or close())."""
        self._wake.clear()
        self._parked = True
        # Announce first, then re-read: see the module docstring.
        if not self._closed and self._mark is seen:
            self._wake.wait()
        self._parked = False

    def _watch_select(self) -> None:
        slow = self._slow
        assert slow is not None
        monotonic = time.monotonic
        seen: tuple[float] | None = None
        while True:
            self._park(seen)
            if self._closed:
                return
            awake_until = monotonic() + slow
            while True:
                if self._closed:
                    return
                mark = self._mark
                now = monotonic()
                if mark is None:  # idle in select
                    if now >= awake_until:
                        seen = None
                        break
                    self._sleep(awake_until - now)
                    continue
                busy_for = now - mark[0]
                if busy_for < slow:
                    self._sleep(slow - busy_for)
                    continue
                self._report(mark, busy_for)
                seen = mark  # one warning per iteration: park until it ends
                break

    def _watch_heartbeat(self) -> None:
        slow = self._slow
        interval = self._interval
        assert slow is not None
        assert interval is not None
        while not self._closed:
            mark = self._mark
            assert mark is not None
            overdue = time.monotonic() - (mark[0] + interval)
            if overdue < slow:
                self._sleep(slow - overdue)
                continue
            self._report(mark, overdue)
            self._park(mark)  # until the next tick: one warning per missed tick

    def _report(self, mark: tuple[float] | None, blocked_for: float) -> None:
        try:
            frame = sys._current_frames().get(self._thread_id)
            if frame is None:
                return
            summary = traceback.extract_stack(frame)
            task = self._current_task(frame)
            del frame
            if self._mark is not mark:  # the iteration ended: the stack is not the stall's
                return
            self._stalls += 1
            top = summary[-1] if summary else None
            key = (top.filename, top.lineno, top.name) if top is not None else None
            suppressed = self._limiter.allow(key)
            if suppressed is None:
                return
            fields: dict[str, Any] = {}
            if suppressed:
                fields["suppressed"] = suppressed
            logger.warning(
                "loop_thread.stalled",
                loop_thread=self._name,
                blocked_for=round(blocked_for, 3),
                slow_callback=self._slow,
                watchdog=self._mode,
                task=task,
                stack="".join(summary.format()),
                **fields,
            )
        except Exception:  # noqa: BLE001 - a broken log setup must not kill the watchdog
            pass

    def _current_task(self, frame: FrameType) -> str | None:
        """Name the running task and the coroutine it is in (the one that blocks)."""
        # current_task(loop) only reads the loop's entry in a dict: safe from this thread.
        task = asyncio.current_task(self._loop)
        if task is None:
            return None
        # A running coroutine has no cr_await chain to follow; its frames do. Take the first
        # frame called by the task's own coroutine that is not loopthread's wrapper
        # (lt.run/lt.call run the user's coroutine inside LoopThread._execute).
        outer = getattr(task.get_coro(), "cr_frame", None)
        chain: list[FrameType] = []
        current: FrameType | None = frame
        while current is not None and current is not outer:
            chain.append(current)
            current = current.f_back
        name = None
        if current is not None:
            chain.append(current)
            for candidate in reversed(chain):
                module = candidate.f_globals.get("__name__", "")
                if not (isinstance(module, str) and module.startswith("loopthread.")):
                    name = candidate.f_code.co_qualname
                    break
        return f"{task.get_name()} ({name})" if name else task.get_name()
