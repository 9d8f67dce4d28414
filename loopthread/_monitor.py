"""What a LoopThread measures about itself: call and lag histograms, loop lag, stalls.

Nothing here imports ``prometheus_client``: :mod:`loopthread.metrics` reads these objects at
scrape time, and a LoopThread without metrics still has its lag monitor and watchdog.

One monitor thread per loop (``<name>-monitor``), started on the loop thread just before
``run_forever`` and stopped after it, does two jobs:

* **lag**: every ``lag_interval`` seconds it hands the loop a probe
  (``call_soon_threadsafe``) and the probe records how long it waited to run into a
  :class:`Buckets` histogram: the delay any callback handed to the loop (an ``lt.run``)
  suffers before it starts, idle wake-up included. Not a ``loop.call_at`` timer: a pending
  timer makes asyncio's ``_run_once`` consult the clock and the timer heap on every
  iteration, which cost 2-3% of ``lt.run`` in perf/bench_metrics.py; the probe costs the loop
  nothing between probes. No new probe is sent while one is outstanding, so a stuck loop
  gets one late probe, not a pile. An idle loop has no lag to measure: where the selector is
  wrapped (below), probes go only to a loop that ran something besides the last probe (its
  iterations are counted as it leaves ``select``) and that has not since parked with nothing
  scheduled (``select(None)``: no ready callback, no timer). Such a loop has finished its
  work: the probe due next is not sent, and the monitor parks until the loop leaves
  ``select`` again, so an idle loop costs no wake-up on either thread, even right after a
  burst of work. On uvloop, with no
  selector to watch, probes stay periodic; ``lag_interval=None`` means none.
* **watchdog**: one ``loop_thread.stalled`` warning, with the loop thread's current stack,
  for every loop iteration that runs longer than ``slow_callback``. On selector loops (the
  stdlib default, and the proactor on Windows) the loop's ``_selector.select`` is wrapped:
  leaving ``select`` starts an iteration, entering it ends one. The monitor thread parks on
  an Event while the loop is idle and costs nothing then. Loops without a ``_selector``
  (uvloop) get a weaker *heartbeat* mode: a probe that has not run ``slow_callback`` after
  it was sent means the loop is stuck. That catches every stall longer than
  ``lag_interval + slow_callback`` (so any permanent hang), with the stack, but a shorter
  one only if it covers the moment a probe was sent; without ``lag_interval`` there are no
  probes and so no watchdog on uvloop.
* **ticks** (:meth:`LoopMonitor.add_tick`, must not raise): run at the monitor's own wake-ups.

The watchdog's ordering argument, in one place (selector mode):

The loop thread (L) publishes ``_mark``: ``None`` when it enters ``select`` (idle), a fresh
1-tuple ``(monotonic(),)`` when it leaves (busy since then). Each tuple is a new object, and
the monitor thread (W) holds the one it compares against, so ``self._mark is seen`` is true
exactly while the same iteration (or the same idle period) lasts: no counter needed, and one
attribute store publishes both "which iteration" and "since when", so W never reads a torn
pair. A probe publishes ``_probe_done`` when it runs, the same way.

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

After it saw the loop busy, W stays awake for ``slow_callback`` (timed waits) before it parks
again, so a loop that alternates between short bursts and idle (an ``lt.run`` every few
microseconds) costs at most one ``Event.set`` per ``slow_callback``, not one per call.

A stall is reported only if the loop is still in the same iteration *after* its stack was
captured, so the stack always belongs to the stalled iteration; one that ends during the
capture (it lasted barely ``slow_callback``) is not reported.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from loopthread._core._component import ComponentBase
from loopthread._log import RateLimiter, logger
from loopthread._util import Buckets, describe, new_thread

__all__ = [
    "CALL_DURATION_BUCKETS",
    "DEFAULT_REGISTRY",
    "LAG_BUCKETS",
    "Buckets",
    "LoopMonitor",
    "MonitorComponent",
    "MonitorStats",
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


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """A snapshot of the lag monitor and watchdog of one LoopThread.

    ``watchdog``: ``"select"`` (every iteration watched), ``"heartbeat"`` (uvloop: the lag
    probes are watched) or ``"off"``. ``probes``: lag probes that ran; ``lag_last`` and
    ``lag_max``: seconds the last and the slowest of them waited. ``stalls``: iterations
    (heartbeat: probes) that took longer than ``slow_callback``, logged or not.
    """

    lag_interval: float | None
    slow_callback: float | None
    watchdog: WatchdogMode
    probes: int
    lag_last: float
    lag_max: float
    stalls: int


class LoopMonitor:
    """The lag probe and the watchdog of one loop (see the module docstring)."""

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
        # Written by the loop thread only (the probe):
        self._probes = 0
        self._lag_last = self._lag_max = 0.0
        self._probe_done = 0
        self._iterations = 0  # loop iterations begun (idle-aware only: counted in select)
        self._emptied = -1  # _iterations when the loop last entered select with nothing scheduled
        self._probe_iteration = 0  # the last iteration known to have had no other work
        self._ready: Any = (getattr(loop, "_ready", ()), getattr(loop, "_read_from_self", None))
        # Written by the monitor thread only:
        self._stalls = 0
        self._probe_sent = 0
        self._probe_sent_at = 0.0
        self._limiter = RateLimiter(10.0)
        self._mark: tuple[float] | None = None
        self._parked = False
        self._closed = False
        self._wake = threading.Event()
        self._selector: Any = None
        self._saved_select: Any = None  # the instance attribute we replaced, if there was one
        self._thread: threading.Thread | None = None
        self._mode: WatchdogMode = "off"
        self._idle_aware = False  # the selector is wrapped: an idle loop gets no probes
        self._ticks: tuple[Callable[[int, bool], None], ...] = ()

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
        if self._slow is not None or self._interval is not None:
            self._idle_aware = self._wrap_selector()
        if self._slow is not None:
            if self._idle_aware:
                self._mode = "select"
            elif self._interval is not None:
                self._mode = "heartbeat"
        if self._mode == "off" and self._interval is None:
            return  # nothing to do: no thread
        self._thread = new_thread(self._run, name=f"{self._name}-monitor")
        self._thread.start()

    def close(self) -> None:
        """Stop the monitor thread and unwrap the selector; idempotent.

        Call on the loop thread once the loop stopped running.
        """
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
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def add_tick(self, tick: Callable[[int, bool], None]) -> bool:
        """Call ``tick(activity, parking)`` before each sleep or park; False: no thread."""
        self._ticks = (*self._ticks, tick)
        return self._thread is not None

    def stats(self) -> MonitorStats:
        """A snapshot of the lag and stall counters."""
        return MonitorStats(
            lag_interval=self._interval,
            slow_callback=self._slow,
            watchdog=self._mode,
            probes=self._probes,
            lag_last=self._lag_last,
            lag_max=self._lag_max,
            stalls=self._stalls,
        )

    # ------------------------------------------------------------------ on the loop thread

    def _probe(self, seq: int, sent_at: float) -> None:
        now = time.monotonic()
        lag = now - sent_at
        if self.lag is not None:
            self.lag.observe(lag)
        self._probes += 1
        self._lag_last = lag
        self._lag_max = max(self._lag_max, lag)
        # Publish, then look at _parked (the Dekker pair of the select wrapper). A callback
        # queued behind the probe may block: then this iteration still counts as work.
        self._probe_iteration = self._iterations - _other_work(*self._ready)
        self._probe_done = seq
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
            if timeout is None:  # nothing ready, no timer: the lag probe is disarmed
                self._emptied = self._iterations
            self._mark = None
            events = select(timeout)  # if it raises, the loop dies and close() follows
            # Publish the new iteration first, then look at _parked (the Dekker pair).
            self._iterations += 1
            self._mark = (monotonic(),)
            if self._parked:
                wake.set()
            return events

        try:
            selector.select = watched_select
        except (AttributeError, TypeError):  # a selector with __slots__: use the heartbeat
            return False
        self._selector = selector
        self._saved_select = saved
        return True

    # ------------------------------------------------------------------ on the monitor thread

    def _tick(self, parking: bool) -> None:
        # Grows when the loop did something; larger once an iteration ended than during it.
        activity = self._iterations + self._probe_done - (self._mark is not None)
        for tick in self._ticks:
            tick(activity, parking)

    def _sleep(self, timeout: float | None) -> None:
        self._tick(False)
        self._wake.clear()
        if not self._closed:
            self._wake.wait(timeout)

    def _park(self, mark: tuple[float] | None, probe: int, timeout: float | None) -> None:
        """Wait until the loop publishes a new mark or finishes a probe, ``timeout``, or close()."""
        self._tick(True)
        self._wake.clear()
        self._parked = True
        # Announce first, then re-read: see the module docstring.
        if not self._closed and self._mark is mark and self._probe_done == probe:
            self._wake.wait(timeout)
        self._parked = False

    def _run(self) -> None:
        try:
            self._loop_forever()
        except Exception as exc:  # noqa: BLE001 - say so, rather than die silently
            try:
                logger.error(
                    "loop_thread.monitor_failed", loop_thread=self._name, error=describe(exc)
                )
            except Exception:  # noqa: BLE001 - a broken log setup must not matter here
                pass

    def _loop_forever(self) -> None:
        slow = self._slow if self._slow is not None else math.inf
        interval = self._interval
        monotonic = time.monotonic
        next_probe = monotonic() if interval is not None else math.inf
        reported: object = None  # the stalled iteration (or probe) already warned about
        awake_until, ran = 0.0, 0  # stay awake (no parking) until then; iterations seen
        while not self._closed:
            mark = self._mark
            done = self._probe_done
            now = monotonic()
            if self._iterations != ran:  # it ran since the last pass, if only for a moment
                ran, awake_until = self._iterations, max(awake_until, now + slow)
            outstanding = done != self._probe_sent
            # An idle loop has no lag to measure: probe only a loop that has run something
            # besides the last probe (its iterations are counted in the wrapped select) and
            # is not parked with nothing scheduled (no callback, no timer) since then.
            active = not self._idle_aware or (
                self._iterations > self._probe_iteration
                and not (mark is None and self._emptied == self._iterations)
            )
            if interval is not None and now >= next_probe and not outstanding and active:
                if not self._send_probe(now):
                    return  # the loop is closed
                next_probe = now + interval
                outstanding = True
            # While a probe is outstanding, the next one waits: wake for the probe or a stall.
            # An idle loop: wait (parked) until it leaves select, however long that takes.
            until_probe = (
                None if outstanding or interval is None or not active else next_probe - now
            )

            if self._mode == "select":
                if mark is not None and mark is not reported:
                    busy_for = now - mark[0]
                    if busy_for >= slow:
                        self._report(busy_for, functools.partial(self._same_iteration, mark))
                        reported = mark
                        continue
                    # Watch this iteration, and stay awake for slow_callback after it began.
                    awake_until = mark[0] + slow
                    self._sleep(_shorter(slow - busy_for, until_probe))
                elif now < awake_until:
                    self._sleep(_shorter(awake_until - now, until_probe))
                else:  # idle, or the current iteration was already reported
                    self._park(mark, done, until_probe)
            elif self._mode == "heartbeat" and outstanding:
                seq = self._probe_sent
                late = now - self._probe_sent_at
                if late < slow:
                    self._park(mark, done, slow - late)
                elif reported != seq:
                    self._report(late, functools.partial(self._probe_pending, seq))
                    reported = seq
                else:  # reported: wait for the probe to run at last
                    self._park(mark, done, None)
            elif (
                outstanding or not active
            ):  # lag only: wait for the probe, then for the next one's time
                self._park(mark, done, None)
            else:
                self._sleep(until_probe)

    def _send_probe(self, now: float) -> bool:
        seq = self._probe_sent + 1
        self._probe_sent_at = now
        self._probe_sent = seq
        try:
            self._loop.call_soon_threadsafe(self._probe, seq, now)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _same_iteration(self, mark: tuple[float]) -> bool:
        return self._mark is mark

    def _probe_pending(self, seq: int) -> bool:
        return self._probe_done < seq

    def _report(self, blocked_for: float, still_stuck: Callable[[], bool]) -> None:
        try:
            frame = sys._current_frames().get(self._thread_id)
            if frame is None:
                return
            summary = traceback.extract_stack(frame)
            task = _current_task(self._loop, frame)
            del frame
            if not still_stuck():  # it ended while we looked: the stack is not the stall's
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


def _current_task(loop: asyncio.AbstractEventLoop, frame: FrameType) -> str | None:
    """Name the running task and the coroutine it is in (the one that blocks)."""
    # current_task(loop) only reads the loop's entry in a dict: safe from this thread.
    task = asyncio.current_task(loop)
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


def _shorter(a: float, b: float | None) -> float:
    return a if b is None else min(a, b)


class MonitorComponent(ComponentBase):
    """Runs one LoopThread's :class:`LoopMonitor`: started with the loop, closed with it."""

    def __init__(
        self, loop_name: str, *, lag_interval: float | None, slow_callback: float | None
    ) -> None:
        self._loop_name = loop_name
        self._lag_interval = lag_interval
        self._slow_callback = slow_callback
        self.monitor: LoopMonitor | None = None

    @property
    def name(self) -> str:
        """``<loop name>-monitor``."""
        return f"{self._loop_name}-monitor"

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the monitor (on the loop thread, before the loop runs)."""
        self.monitor = LoopMonitor.start(
            self._loop_name,
            loop,
            lag_interval=self._lag_interval,
            slow_callback=self._slow_callback,
        )

    def on_closed(self) -> int:
        """Stop the monitor thread and unwrap the selector."""
        monitor = self.monitor
        if monitor is not None:
            monitor.close()
        return 0

    def stats(self) -> MonitorStats | None:
        """The monitor's stats (None before the loop started)."""
        monitor = self.monitor
        return monitor.stats() if monitor is not None else None

    def after_fork_in_child(self) -> None:
        """The monitor thread is the parent's."""
        self.monitor = None


def _other_work(ready: Any, self_read: Any) -> int:
    """1 if the loop's ready queue holds a callback besides its self-pipe reader (which every
    ``call_soon_threadsafe``, the probe's own included, queues), else 0."""
    for handle in ready:
        if getattr(handle, "_callback", None) != self_read:
            return 1
    return 0
