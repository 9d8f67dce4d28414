"""Lag monitor and watchdog: lag probes, one warning per stall with its stack, no idle cost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from loopthread import LoopThread, testing
from loopthread._monitor import LAG_BUCKETS, Buckets, LoopMonitor
from loopthread._validate import check_interval


class StallLog:
    """The ``loop_thread.stalled`` events of one LoopThread, and an Event set at the first one."""

    def __init__(self, entries: list[MutableMapping[str, Any]], name: str) -> None:
        self.entries = entries
        self.name = name
        self.logged = threading.Event()

    def processor(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event_dict.get("event") == "loop_thread.stalled" and (
            event_dict.get("loop_thread") == self.name
        ):
            self.logged.set()
        return event_dict

    @property
    def stalls(self) -> list[MutableMapping[str, Any]]:
        return [
            e
            for e in list(self.entries)
            if e.get("event") == "loop_thread.stalled" and e.get("loop_thread") == self.name
        ]


@pytest.fixture(name="stall_log")
def fixture_stall_log() -> Iterator[StallLog]:
    """Capture structlog events (global config) and signal the first stall of loop "stally"."""
    entries: list[MutableMapping[str, Any]] = []
    log = StallLog(entries, "stally")
    with structlog.testing.capture_logs(processors=[log.processor]) as captured:
        log.entries = captured
        yield log


def make_loop(**options: Any) -> LoopThread:
    options.setdefault("metrics_registry", None)
    return LoopThread("stally", **options).start()


def blocks_the_loop() -> None:
    time.sleep(0.3)  # the deliberate mistake: a blocking call on the loop thread


def busy_for(seconds: float) -> None:
    time.sleep(seconds)


async def blocking_coroutine() -> None:
    blocks_the_loop()


async def noop() -> None:
    return None


def monitor_of(lt: LoopThread) -> LoopMonitor:
    monitor = testing.monitor(lt)
    assert monitor is not None
    return monitor


def monitor_threads(name: str = "stally") -> list[threading.Thread]:
    """The live monitor threads of the LoopThread called ``name``."""
    return [t for t in threading.enumerate() if t.name == f"{name}-monitor"]


def test_a_blocking_call_is_reported_once_with_its_stack(stall_log: StallLog) -> None:
    """time.sleep(0.3) on the loop, between two lag probes: exactly one warning naming it."""
    lt = make_loop(lag_interval=0.5, slow_callback=0.1)
    try:
        lt.run(blocking_coroutine())
        assert stall_log.logged.wait(5.0)
        lt.run(noop())  # the loop went on: the stall is over
        assert monitor_of(lt).stats().stalls == 1
    finally:
        lt.stop()
    [event] = stall_log.stalls
    assert event["log_level"] == "warning"
    assert "blocks_the_loop" in event["stack"]
    assert "time.sleep(0.3)" in event["stack"]
    assert event["watchdog"] == "select"
    assert "blocking_coroutine" in event["task"]
    assert 0.1 <= event["blocked_for"] < 0.3


def test_many_short_iterations_are_not_a_stall(stall_log: StallLog) -> None:
    """A busy loop that yields between short steps is never reported."""

    async def busy_but_cooperative() -> None:
        for _ in range(40):
            busy_for(0.005)
            await asyncio.sleep(0)

    lt = make_loop(slow_callback=0.1)
    try:
        lt.run(busy_but_cooperative())
        lt.run(noop())
        assert monitor_of(lt).stats().stalls == 0
    finally:
        lt.stop()
    assert stall_log.stalls == []


def test_the_same_blocker_twice_logs_once_and_counts_twice(stall_log: StallLog) -> None:
    """Repeated stalls at one place are rate-limited in the log; the counter sees all of them."""
    lt = make_loop(slow_callback=0.1)
    try:
        monitor = monitor_of(lt)
        lt.run(blocking_coroutine())
        assert stall_log.logged.wait(5.0)  # the first stall was counted and logged
        lt.run(blocking_coroutine())
    finally:
        lt.stop()
    # stop() ended the monitor thread: every stall it saw is counted, every log line written.
    assert monitor_threads() == []
    assert monitor.stats().stalls == 2
    assert len(stall_log.stalls) == 1


def test_watchdog_off_reports_nothing(stall_log: StallLog) -> None:
    """slow_callback=None: no watchdog thread, no warning."""
    lt = make_loop(slow_callback=None, lag_interval=None)
    try:
        assert testing.monitor(lt) is None
        assert monitor_threads() == []
        lt.run(blocking_coroutine())
        assert lt.stats().loop_stalls == 0
    finally:
        lt.stop()
    assert stall_log.stalls == []


def test_lag_probe_records_a_blocked_loop() -> None:
    """A probe sent while the loop is blocked runs late, and its lag lands in the histogram."""
    lt = make_loop(lag_interval=0.05, slow_callback=None)
    monitor = monitor_of(lt)
    try:
        lt.run(blocking_coroutine())
        # The late probe runs in the iteration after the blocker; two round trips through
        # the loop are certainly after it (with or without eager tasks).
        lt.run(noop())
        lt.run(noop())
    finally:
        lt.stop()
    # After stop(): no probe runs between these snapshots.
    stats = monitor.stats()
    loop_stats = lt.stats()
    assert stats.probes >= 1
    assert stats.lag_max >= 0.1
    assert loop_stats.loop_lag_max == stats.lag_max
    lag = loop_stats.loop_lag
    assert lag is not None
    assert lag.count == stats.probes
    assert lag.sum >= 0.1


def voluntary_switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_an_idle_loop_never_wakes_with_or_without_monitoring() -> None:
    """An idle loop has no lag to measure and cannot stall: with the default monitoring (lag
    probe and watchdog) as with monitoring off, neither the loop thread nor the monitor thread
    wakes up while nothing runs; a loop with a timer does (so the measurement works)."""
    quiet = LoopThread("quiet", metrics_registry=None, lag_interval=None).start()
    defaults = LoopThread("defaults", metrics_registry=None).start()
    ticking = LoopThread("ticking", metrics_registry=None).start()

    async def tick() -> None:
        while True:  # noqa: ASYNC110 - a loop woken by its timer, on purpose
            await asyncio.sleep(0.02)

    try:
        quiet.run(noop())
        defaults.run(noop())
        ticker = ticking.submit(tick())
        names = ("quiet-monitor", "defaults-monitor", "ticking-monitor")
        monitors = {t.name: t for t in threading.enumerate() if t.name in names}
        threads = {
            "quiet": quiet.thread,
            "quiet-monitor": monitors["quiet-monitor"],
            "defaults": defaults.thread,
            "defaults-monitor": monitors["defaults-monitor"],
            "ticking": ticking.thread,
            "ticking-monitor": monitors["ticking-monitor"],
        }
        # Measuring idleness takes time; nothing is waited for here. The first 0.3 s let the
        # calls above finish: the loop threads going back to select and each monitor's grace
        # period after activity (slow_callback) and its one probe after it.
        time.sleep(0.6)
        before = {name: voluntary_switches(t) for name, t in threads.items()}
        time.sleep(1.0)
        after = {name: voluntary_switches(t) for name, t in threads.items()}
        ticker.cancel()
    finally:
        quiet.stop()
        defaults.stop()
        ticking.stop()
    woke = {name: after[name] - before[name] for name in threads}
    for name in ("quiet", "quiet-monitor", "defaults", "defaults-monitor"):
        assert woke[name] == 0, woke
    assert woke["ticking"] >= 20, woke  # the measurement itself works (50 ticks a second)
    assert woke["ticking-monitor"] >= 2, woke  # a busy loop is probed and watched


def test_uvloop_uses_the_heartbeat_watchdog(stall_log: StallLog) -> None:
    """Without a selector to wrap, a stall longer than lag_interval + slow_callback is caught."""
    pytest.importorskip("uvloop")
    lt = make_loop(uvloop=True, lag_interval=0.05, slow_callback=0.1)
    try:
        assert monitor_of(lt).stats().watchdog == "heartbeat"
        lt.run(blocking_coroutine())
        assert stall_log.logged.wait(5.0)
        lt.run(noop())
    finally:
        lt.stop()
    [event] = stall_log.stalls
    assert event["watchdog"] == "heartbeat"
    assert "blocks_the_loop" in event["stack"]


def test_uvloop_without_lag_probes_has_no_watchdog() -> None:
    """The heartbeat needs the lag probes: lag_interval=None on uvloop means no watchdog."""
    pytest.importorskip("uvloop")
    lt = make_loop(uvloop=True, lag_interval=None, slow_callback=0.1)
    try:
        assert monitor_of(lt).stats().watchdog == "off"
    finally:
        lt.stop()


def test_stop_unwraps_the_selector_and_ends_the_monitor_thread() -> None:
    """After stop() the loop's selector is its own again and the monitor thread is gone."""
    lt = make_loop()
    # asyncio's selector (not loopthread's): the object the watchdog wraps.
    selector = lt.loop._selector  # type: ignore[attr-defined]
    assert "select" in vars(selector)
    assert monitor_of(lt).stats().watchdog == "select"
    [thread] = monitor_threads()
    lt.stop()
    assert "select" not in vars(selector)
    assert not thread.is_alive()
    assert monitor_threads() == []


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("1", TypeError)],
)
def test_bad_intervals_are_refused(value: Any, error: type[Exception]) -> None:
    """lag_interval and slow_callback take a positive number of seconds or None."""
    with pytest.raises(error, match="lag_interval"):
        LoopThread(lag_interval=value)
    with pytest.raises(error, match="slow_callback"):
        LoopThread(slow_callback=value)


def test_check_interval_accepts_none_and_positive_numbers() -> None:
    """None turns a feature off; numbers come back as floats."""
    assert check_interval(None, "x") is None
    assert check_interval(2, "x") == 2.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False)))
def test_buckets_count_each_value_in_the_first_bucket_that_holds_it(values: list[float]) -> None:
    """Cumulative counts equal the number of values <= each bound (Prometheus' le)."""
    buckets = Buckets(LAG_BUCKETS)
    for value in values:
        buckets.observe(value)
    counts, total = buckets.snapshot()
    assert sum(counts) == len(values)
    assert total == pytest.approx(sum(values))
    running = 0
    for bound, count in zip(LAG_BUCKETS, counts, strict=False):
        running += count
        assert running == sum(1 for v in values if v <= bound)


def test_loop_stats_carry_stalls_and_lag() -> None:
    """LoopStats shows the watchdog's stall count, for users without Prometheus."""
    import time

    import structlog

    from loopthread import LoopThread

    with (
        structlog.testing.capture_logs(),
        LoopThread(
            "stats-stall", metrics_registry=None, lag_interval=None, slow_callback=0.05
        ) as lt,
    ):

        async def block() -> None:
            time.sleep(0.2)  # noqa: ASYNC251 - deliberately blocks the loop

        lt.run(block())
        lt.run(asyncio.sleep(0))
        assert lt.stats().loop_stalls == 1


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_no_trailing_lag_probe_after_work_ends() -> None:
    """Work that ends after the last probe must not leave a probe due for later: once the
    loop parks with nothing scheduled, the probe is disarmed (bench_idle saw one straggler
    wake-up per idle period from it)."""
    lt = LoopThread("trailing", metrics_registry=None, lag_interval=1.0, slow_callback=0.1)
    lt.start()
    try:
        # A loop with a timer has work: it is probed at once (t ~ 0). The timer then fires
        # after that probe (t = 0.3): the next probe would be due at t = 1.0.
        lt.run(asyncio.sleep(0.3))
        probed = monitor_of(lt).stats().probes
        monitor = next(t for t in threading.enumerate() if t.name == "trailing-monitor")
        threads = {"loop": lt.thread, "monitor": monitor}
        # Measuring idleness takes time; nothing is waited for here. 0.3 s covers the
        # monitor's grace after activity (slow_callback, until t = 0.4); the window
        # [0.6, 1.6] holds the moment the trailing probe was due.
        time.sleep(0.3)
        before = {name: voluntary_switches(t) for name, t in threads.items()}
        time.sleep(1.0)
        after = {name: voluntary_switches(t) for name, t in threads.items()}
        idle_probes = monitor_of(lt).stats().probes - probed
    finally:
        lt.stop()
    assert probed == 1
    assert idle_probes == 0
    assert {name: after[name] - before[name] for name in threads} == {"loop": 0, "monitor": 0}
