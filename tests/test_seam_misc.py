"""Regressions: Prometheus counters, the exit hook's registry walk, ``lt.gather()`` warnings,
what a failing call keeps alive, and ``loopthread.default()`` from the default loop's own work.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
import weakref
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import loopthread
from loopthread import LoopThread
from tests._seam_support import run_python


@pytest.fixture(name="registry")
def fixture_registry() -> CollectorRegistry:
    """A fresh Prometheus registry (nothing else reports to it)."""
    return CollectorRegistry()


@pytest.fixture(name="metered")
def fixture_metered(registry: CollectorRegistry) -> Iterator[LoopThread]:
    """A started LoopThread named ``seam-metrics`` serving its metrics from ``registry``."""
    lt = LoopThread(
        "seam-metrics", metrics_registry=registry, lag_interval=None, slow_callback=None
    ).start()
    try:
        yield lt
    finally:
        lt.stop(5.0)


def _put_total(registry: CollectorRegistry, channel: str) -> float | None:
    return registry.get_sample_value(
        "loopthread_channel_put_total", {"loop": "seam-metrics", "channel": channel}
    )


# ---------------------------------------------------------------------- metrics


def test_channel_counter_does_not_go_backwards_when_channel_is_collected(
    registry: CollectorRegistry, metered: LoopThread
) -> None:
    """A channel's ``loopthread_channel_put_total`` keeps its value after the channel is
    closed and garbage-collected while its LoopThread runs (the series used to vanish: the
    counter went back to nothing)."""

    def ignore(batch: list[int]) -> None:
        pass

    channel = metered.channel(ignore, name="seam-closed")
    for i in range(10):
        channel.put(i)
    assert channel.flush(5)
    before = _put_total(registry, "seam-closed")
    assert before == 10.0
    channel.close(5)
    del channel
    gc.collect()
    after = _put_total(registry, "seam-closed")
    assert after is not None, "the closed channel's counter series disappeared"
    assert after >= before


def test_event_buses_on_one_loop_get_distinct_metric_series(
    registry: CollectorRegistry, metered: LoopThread
) -> None:
    """Two EventBuses on one LoopThread have channels with distinct names and distinct
    ``loopthread_channel_put_total`` series, each with its own count (every bus used to be
    ``channel="event-bus"``, so their counts were summed into one series)."""
    first, second = loopthread.EventBus(metered), loopthread.EventBus(metered)
    for bus in (first, second):
        bus.on("tick", lambda event: None)
    for _ in range(3):
        first.reporter().report("tick")
    for _ in range(5):
        second.reporter().report("tick")
    assert first.flush(5)
    assert second.flush(5)
    first_stats, second_stats = first.stats().channel, second.stats().channel
    assert first_stats is not None
    assert second_stats is not None
    assert first_stats.name != second_stats.name, "both buses' channels share one name"
    scraped = {
        sample.labels["channel"]: sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name == "loopthread_channel_put_total"
    }
    assert scraped.get(first_stats.name) == 3.0, scraped
    assert scraped.get(second_stats.name) == 5.0, scraped


# ---------------------------------------------------------------------- exit hook vs. registry

_EXIT_WHILE_LOOPTHREADS_ARE_CREATED = """
import asyncio
import sys
import threading
import time

from loopthread import LoopThread

path = sys.argv[1]
idle = [LoopThread(f"idle-{i}", metrics_registry=None) for i in range(200)]
lt = LoopThread("seam-drained", metrics_registry=None, lag_interval=None, slow_callback=None)
lt.start()
out = open(path, "w")


async def handle(batch):
    await asyncio.sleep(0.05)  # a slow sink: the items are still queued at exit
    for item in batch:
        out.write(f"{item}\\n")
    out.flush()


channel = lt.channel(handle)
for i in range(50):
    channel.put(i)
running = threading.Event()


def create_and_drop():
    running.set()
    while True:  # a daemon thread creating LoopThreads while the interpreter exits
        try:
            LoopThread("churn", metrics_registry=None)
        except BaseException:
            pass


def yield_the_gil(frame, event, arg):
    # On the main thread only: at every Python call from here to the end of the exit, let
    # the other thread run. It then runs inside whatever the exit hook does (without this,
    # the interleaving that breaks an unlocked walk of the registry is rare: ~2 in 1,000).
    if event == "call":
        time.sleep(0)


threading.Thread(target=create_and_drop, daemon=True).start()
running.wait(10)
sys.setswitchinterval(0.0001)  # each yield then costs the main thread ~0.1 ms, not 5 ms
sys.setprofile(yield_the_gil)
"""


def test_exit_hook_survives_loopthreads_created_during_exit(tmp_path: Path) -> None:
    """The exit hook stops and drains every LoopThread although another thread keeps creating
    LoopThreads while the interpreter exits, in each of 3 runs (it used to walk the registry
    without its lock, raise "dictionary changed size during iteration", and drain nothing)."""
    for run in range(3):
        out = tmp_path / f"drained-{run}.txt"
        result = run_python(_EXIT_WHILE_LOOPTHREADS_ARE_CREATED, str(out), timeout=30.0)
        assert not result.hung, result.describe()
        assert "changed size during iteration" not in result.stderr, result.describe()
        assert result.returncode == 0, result.describe()
        drained = out.read_text().split()
        assert sorted(int(x) for x in drained) == list(range(50)), (
            f"run {run}: {len(drained)} of 50 items drained at exit\n{result.describe()}"
        )


# ---------------------------------------------------------------------- gather() warnings


async def _value(value: int) -> int:
    return value


class _Awaitable:
    """An awaitable that is not a coroutine (as_coroutine wraps it in one)."""

    def __await__(self) -> Generator[Any, None, int]:
        yield from asyncio.sleep(0).__await__()
        return 1


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


def test_gather_refused_for_a_bad_argument_leaves_no_unawaited_coroutine(
    quiet_lt: LoopThread,
) -> None:
    """``lt.gather(awaitable, coro(), 5)`` raises TypeError and leaves no "coroutine ... was
    never awaited" RuntimeWarning (the wrapper made for the non-coroutine awaitable used to
    be dropped unclosed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match="argument 2"):
            quiet_lt.gather(_Awaitable(), _value(1), 5)  # type: ignore[arg-type]
        gc.collect()
    assert not _never_awaited(caught), _never_awaited(caught)


def test_gather_timeout_before_start_leaves_no_unawaited_coroutine() -> None:
    """``lt.gather(...)`` whose ``timeout`` expires before the loop starts it raises
    TimeoutError and leaves no "coroutine ... was never awaited" RuntimeWarning (on 3.11 the
    gather wrapper was closed unstarted and the coroutines inside it were dropped)."""
    lt = LoopThread(
        "seam-gather-timeout",
        metrics_registry=None,
        lag_interval=None,
        slow_callback=None,
        cancel_grace=0.1,
    ).start()
    blocked, release = threading.Event(), threading.Event()

    async def block_the_loop() -> None:
        blocked.set()
        release.wait(10)  # keeps the loop thread busy: nothing else starts meanwhile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        busy = lt.submit(block_the_loop())
        try:
            assert blocked.wait(5)
            with pytest.raises(TimeoutError):
                lt.gather(_value(1), _value(2), timeout=0.05)
        finally:
            release.set()
        busy.result(5)
        lt.stop(5.0)
        gc.collect()
    assert not _never_awaited(caught), _never_awaited(caught)


@pytest.fixture(name="quiet_lt")
def fixture_quiet_lt() -> Iterator[LoopThread]:
    """A started LoopThread without metrics, lag probes or watchdog."""
    lt = LoopThread(
        "seam-quiet", metrics_registry=None, lag_interval=None, slow_callback=None
    ).start()
    try:
        yield lt
    finally:
        lt.stop(5.0)


# ---------------------------------------------------------------------- what a failure keeps


class _Marker:
    """An object local to the failing coroutine's frame."""


def test_failed_call_frees_its_frames_without_the_cyclic_gc(quiet_lt: LoopThread) -> None:
    """After ``lt.run(failing())`` raised and the caller dropped the exception, an object
    local to the failing coroutine is freed at once, with the cyclic GC disabled (the
    exception, its frames and the LoopThread used to stay in a reference cycle)."""
    refs: list[weakref.ref[_Marker]] = []

    async def failing() -> None:
        marker = _Marker()
        refs.append(weakref.ref(marker))
        raise ValueError("boom")

    quiet_lt.run(asyncio.sleep(0), timeout=5)
    gc.collect()
    gc.disable()
    try:
        try:
            quiet_lt.run(failing(), timeout=5)
        except ValueError:
            pass
        # On a free-threaded build, a reference dropped by a thread other than the object's
        # owner (the loop thread) is merged by the owner later, when it handles its eval
        # breaker: give it a few calls (the cyclic GC still off). With the GIL it is freed
        # at once and no call is made.
        for _ in range(50):
            if refs[0]() is None:
                break
            quiet_lt.run(asyncio.sleep(0.001), timeout=5)
        alive = refs[0]() is not None
    finally:
        gc.enable()
    assert not alive, "the failing coroutine's frame is kept alive by a reference cycle"


# ---------------------------------------------------------------------- default() from its own work

_DEFAULT_FROM_HANDLER_DRAINED_BY_STOP = """
import asyncio
import threading

import loopthread

default = loopthread.default()
seen = []


async def handle(batch):
    for item in batch:
        seen.append(loopthread.default() is default)


async def on_its_thread():
    return loopthread.default() is default


channel = default.channel(handle)
assert default.run(on_its_thread())
for i in range(3):
    channel.put(i)
report = default.stop(5)
print(f"finished={report.finished}")
print("seen=" + ",".join(map(str, seen)))
others = [
    t.name
    for t in threading.enumerate()
    if t.name == "loopthread-default" and t is not default.thread and t.is_alive()
]
print(f"other default loop threads={others}")
"""


def test_default_called_by_a_handler_drained_by_stop_returns_that_loop() -> None:
    """A handler that ``default().stop()`` drains gets that same LoopThread from
    ``loopthread.default()``, and no second default loop is started (a new one used to be
    created while the first was stopping, clashing on the metrics name)."""
    result = run_python(_DEFAULT_FROM_HANDLER_DRAINED_BY_STOP, timeout=30.0)
    assert not result.hung, result.describe()
    assert result.returncode == 0, result.describe()
    assert "finished=True" in result.stdout, result.describe()
    assert "seen=True,True,True" in result.stdout, result.describe()
    assert "other default loop threads=[]" in result.stdout, result.describe()
    assert "metrics_name_clash" not in result.stdout + result.stderr, result.describe()


_DEFAULT_FROM_HANDLER_DRAINED_AT_EXIT = """
import asyncio
import sys

import loopthread

out = open(sys.argv[1], "w")
default = loopthread.default()


async def handle(batch):
    await asyncio.sleep(0.05)  # still queued when the main thread exits
    for item in batch:
        try:
            same = loopthread.default() is default
        except Exception as exc:
            same = repr(exc)
        out.write(f"{item} {same}\\n")
    out.flush()


channel = default.channel(handle)
for i in range(5):
    channel.put(i)
"""


def test_default_called_by_a_handler_drained_at_exit_returns_that_loop(tmp_path: Path) -> None:
    """A handler that the exit hook drains on the default loop gets that same LoopThread from
    ``loopthread.default()`` (it used to raise LoopNotRunningError: "the interpreter is
    shutting down")."""
    out = tmp_path / "seen.txt"
    result = run_python(_DEFAULT_FROM_HANDLER_DRAINED_AT_EXIT, str(out), timeout=30.0)
    assert not result.hung, result.describe()
    assert result.returncode == 0, result.describe()
    seen = out.read_text().splitlines()
    assert seen == [f"{i} True" for i in range(5)], result.describe()
