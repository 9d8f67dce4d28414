"""Regressions of ``LoopThread.stop()``, of a loop's death, and of the drain at interpreter exit.

Each test names the behaviour it pins; the docstrings say what used to happen instead.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import loopthread
from loopthread import EnricherChain, LoopNotRunningError, LoopThread, ShutdownReport
from tests._seam_support import run_python

#: Scheduling slack (seconds) on top of a documented bound, for a loaded 2-core machine.
SLACK = 0.5


def _quiet_loop(name: str, **options: Any) -> LoopThread:
    """A LoopThread without metrics, lag probes or stall watchdog (nothing else runs on it)."""
    return LoopThread(name, metrics_registry=None, lag_interval=None, slow_callback=None, **options)


@pytest.fixture(name="quiet")
def fixture_quiet() -> Iterator[list[LoopThread]]:
    """Collects LoopThreads made by a test and stops whichever are still running after it."""
    made: list[LoopThread] = []
    yield made
    for lt in made:
        if lt.running:
            lt.stop(2.0)


def _started(made: list[LoopThread], name: str, **options: Any) -> LoopThread:
    lt = _quiet_loop(name, **options)
    made.append(lt)
    return lt.start()


async def _in_executor(value: int) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, int, str(value))


# ---------------------------------------------------------------------- cancel_grace=None


def test_cancel_grace_none_expired_timeout_raises_timeout_error(quiet: list[LoopThread]) -> None:
    """With ``cancel_grace=None`` (documented: wait for the cleanup as long as it takes) an
    expired ``timeout=`` raises TimeoutError once the cancelled coroutine cleaned up (it used
    to raise OverflowError: an infinite wait was passed to ``Lock.acquire``)."""
    lt = _started(quiet, "seam-grace-none", cancel_grace=None)
    with pytest.raises(TimeoutError):
        lt.run(asyncio.sleep(30), timeout=0.05)
    assert lt.run(asyncio.sleep(0, "still usable"), timeout=5) == "still usable"


def test_cancel_grace_none_stop_after_executor_use_is_clean(quiet: list[LoopThread]) -> None:
    """With ``cancel_grace=None``, ``stop()`` after the shared executor was used finishes
    cleanly (it used to kill the loop thread with OverflowError while joining the executor's
    workers, and report ``finished=False``)."""
    lt = _started(quiet, "seam-grace-none-executor", cancel_grace=None)
    assert lt.run(_in_executor(7), timeout=5) == 7
    report = lt.stop(2.0)
    assert report.finished, report
    assert report.clean, report
    assert lt.state == "stopped"


# ---------------------------------------------------------------------- exit drain + executor

_EXIT_DRAIN_THROUGH_EXECUTOR = """
import asyncio
import sys

import loopthread
from loopthread import LoopThread

path, items, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = open(path, "w")


def write_line(item):
    out.write(f"{item}\\n")
    out.flush()


async def write(item):
    await asyncio.get_running_loop().run_in_executor(None, write_line, item)


if kind == "channel":
    lt = LoopThread("seam-exit", metrics_registry=None, lag_interval=None, slow_callback=None)
    lt.start()

    async def handle(batch):
        for item in batch:
            await write(item)

    channel = lt.channel(handle, batch_size=16)
    for i in range(items):
        channel.put(i)
else:
    bus = loopthread.EventBus()  # on the default loop

    async def on_item(event):
        await write(event["n"])

    bus.on("item", on_item)
    reporter = bus.reporter()
    for i in range(items):
        reporter.report("item", {"n": i})
print("main thread done", flush=True)
# The main thread ends here without stop(): the exit hook must drain what is queued.
"""


@pytest.mark.parametrize("kind", ["channel", "event_bus"])
def test_exit_drain_handlers_can_use_the_executor(kind: str, tmp_path: Path) -> None:
    """Every item queued when the main thread exits (no stop()) is handled by the exit
    drain, also when the handler does ``await loop.run_in_executor(...)`` (the drain used to
    run after concurrent.futures refused new work: every such item failed)."""
    items = 200
    out = tmp_path / "lines.txt"
    result = run_python(_EXIT_DRAIN_THROUGH_EXECUTOR, str(out), str(items), kind, timeout=30.0)
    assert not result.hung, result.describe()
    assert result.returncode == 0, result.describe()
    lines = out.read_text().split()
    assert sorted(int(x) for x in lines) == list(range(items)), (
        f"{kind}: {len(lines)} of {items} lines written by the exit drain\n{result.describe()}"
    )


# ---------------------------------------------------------------------- user cancels all tasks


async def _cancel_every_other_task() -> int:
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    return len(others)


def test_user_cancelling_every_task_leaves_channels_and_bus_working(
    quiet: list[LoopThread],
) -> None:
    """After user code on the loop cancels every other task, a channel and an EventBus of
    that LoopThread still accept items, ``stop()`` finishes promptly, and every item put
    before and after the cancellation was handled (the channel consumers used to be
    cancelled with the rest: the channels closed themselves and lost what came next)."""
    lt = _started(quiet, "seam-cancel-all")
    handled: list[int] = []
    channel = lt.channel(handled.extend)
    bus = loopthread.EventBus(lt)
    events: list[dict[str, Any]] = []
    bus.on("tick", events.append)
    reporter = bus.reporter()
    channel.put(0)
    reporter.report("tick", {"n": 0})
    assert channel.flush(5)
    assert bus.flush(5)

    # Idle, the channel and the bus have no task to cancel (a parked consumer is no task);
    # the loop's own tasks are cancelled, and a busy consumer's case is in test_channel_wake.
    lt.run(_cancel_every_other_task(), timeout=5)

    channel.put(1)
    reporter.report("tick", {"n": 1})
    started = time.monotonic()
    report = lt.stop(2.0)
    elapsed = time.monotonic() - started
    assert report.finished, report
    assert elapsed < 2.0 + SLACK, f"stop(2.0) took {elapsed:.2f}s"
    assert handled == [0, 1], channel.stats()
    assert [e["n"] for e in events] == [0, 1], bus.stats()


def test_stop_finishes_when_a_call_cancels_every_task(quiet: list[LoopThread]) -> None:
    """``stop()`` returns ``finished=True`` within its timeout when a call it cancels reacts
    by cancelling every other task on the loop (the shutdown task itself used to be
    cancelled: the loop never stopped and ``stop()`` reported it stuck)."""
    lt = _started(quiet, "seam-cancel-all-at-stop")
    entered = threading.Event()

    async def cancels_everything_when_cancelled() -> None:
        entered.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            await _cancel_every_other_task()
            raise

    future = lt.submit(cancels_everything_when_cancelled())
    assert entered.wait(5)
    started = time.monotonic()
    report = lt.stop(1.0)
    elapsed = time.monotonic() - started
    assert report.finished, report
    assert elapsed < 1.0 + SLACK, f"stop(1.0) took {elapsed:.2f}s"
    assert lt.state == "stopped"
    assert future.done()


# ---------------------------------------------------------------------- close order, deadline_hit


class _BatchingWriter:
    """A buffered writer whose background task writes the buffer out; aclose() flushes by
    waking that task and awaiting it (the task is the only writer)."""

    def __init__(self) -> None:
        self.buffer: list[int] = []
        self.written: list[int] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.written.extend(self.buffer)
            self.buffer.clear()
            if self._closing:
                return

    def write(self, value: int) -> None:
        self.buffer.append(value)

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        await self._task


def test_resource_aclose_may_await_its_own_background_task(quiet: list[LoopThread]) -> None:
    """A resource whose ``aclose()`` flushes by awaiting its own background task gets its
    buffer written at ``stop()``, and the report does not claim the deadline was hit
    (``stop()`` used to cancel every task before closing resources: the buffer was lost and
    ``deadline_hit=True`` was reported with 5 s to spare)."""
    lt = _started(quiet, "seam-batching-writer")
    writers: list[_BatchingWriter] = []

    async def make_writer() -> _BatchingWriter:
        writer = _BatchingWriter()
        writers.append(writer)
        return writer

    resource = lt.resource(make_writer, name="batching-writer")

    async def use() -> None:
        writer = await resource.get()
        for value in range(10):
            writer.write(value)

    lt.run(use(), timeout=5)
    report = lt.stop(5.0)
    assert report.finished, report
    assert writers[0].written == list(range(10)), (
        f"buffer lost at stop(): written={writers[0].written} buffer={writers[0].buffer}"
    )
    assert not report.deadline_hit, report


def test_deadline_hit_is_false_on_an_idle_loop_with_tiny_timeouts() -> None:
    """``stop(t)`` with t = 1 µs, 0.1 ms and 0.3 ms on an idle loop (no calls, no channels:
    nothing to cut short) reports ``deadline_hit=False`` in every one of 90 trials (it used to
    be True whenever the hand-off to the loop thread took longer than the timeout)."""
    hits: list[tuple[float, ShutdownReport]] = []
    for timeout in (0.000001, 0.0001, 0.0003):
        for _ in range(30):
            lt = _quiet_loop("seam-idle").start()
            report = lt.stop(timeout)
            assert report.finished, report
            if report.deadline_hit:
                hits.append((timeout, report))
    assert not hits, f"{len(hits)} of 90 idle stops reported deadline_hit; first: {hits[0]}"


# ---------------------------------------------------------------------- enricher startup


def test_stop_during_chain_startup_shuts_down_enrichers_that_started(
    quiet: list[LoopThread],
) -> None:
    """``stop()`` while an EnricherChain is starting up still calls ``shutdown()`` of every
    enricher whose ``startup()`` finished (they used to be skipped: the shutdown hook was
    registered only once every startup had finished)."""
    lt = _started(quiet, "seam-chain-startup")
    quick_started = threading.Event()
    slow_entered = threading.Event()
    calls: list[str] = []

    class Quick:
        name = "quick"

        async def __call__(self, event: Any) -> dict[str, int]:
            return {"quick": 1}

        async def startup(self) -> None:
            calls.append("quick.startup")
            quick_started.set()

        async def shutdown(self) -> None:
            calls.append("quick.shutdown")

    class Slow:
        name = "slow"

        async def __call__(self, event: Any) -> dict[str, int]:
            return {"slow": 1}

        async def startup(self) -> None:
            slow_entered.set()
            await asyncio.get_running_loop().create_future()  # never finishes on its own

        async def shutdown(self) -> None:
            calls.append("slow.shutdown")

    chain = EnricherChain([Quick(), Slow()], loop_thread=lt, hook_timeout=60.0)
    pending: Future[dict[str, Any]] = lt.submit(chain.enrich({"user": 1}))
    assert quick_started.wait(5)
    assert slow_entered.wait(5)
    report = lt.stop(1.0)
    assert report.finished, report
    assert pending.done()
    assert "quick.shutdown" in calls, f"calls: {calls}"


# ---------------------------------------------------------------------- a loop that dies


async def _stop_own_loop() -> None:
    asyncio.get_running_loop().stop()
    await asyncio.get_running_loop().create_future()


def _kill(lt: LoopThread) -> None:
    try:
        lt.run(_stop_own_loop(), timeout=5)
    except LoopNotRunningError:
        pass
    lt.thread.join(5)
    assert not lt.thread.is_alive()
    assert lt.state == "dead"


def test_dead_loop_closes_its_created_resources() -> None:
    """When user code stops the loop (``loop.stop()`` inside ``lt.run``), the resources
    created on it are still closed (their close function used to never run)."""
    lt = _quiet_loop("seam-dying").start()
    closed: list[str] = []

    async def make() -> str:
        return "connection"

    async def close(value: str) -> None:
        closed.append(value)

    resource = lt.resource(make, close=close, name="connection")

    async def use() -> str:
        return await resource.get()

    assert lt.run(use(), timeout=5) == "connection"
    _kill(lt)
    assert closed == ["connection"]


def test_dead_loopthread_with_a_resource_is_freed() -> None:
    """A LoopThread whose loop died, with a resource created on it, is freed once the
    program drops it (a module-level map kept it alive forever through its resources)."""

    def make_dead_loop() -> weakref.ref[LoopThread]:
        lt = _quiet_loop("seam-dying-freed").start()

        async def make() -> object:
            return object()

        resource = lt.resource(make, name="value")

        async def use() -> object:
            return await resource.get()

        lt.run(use(), timeout=5)
        _kill(lt)
        return weakref.ref(lt)

    ref = make_dead_loop()
    gc.collect()
    assert ref() is None, f"the dead LoopThread is still alive: {ref()!r}"


# ---------------------------------------------------------------------- items_unhandled


@pytest.mark.parametrize("timeout", [0.0, 0.001])
def test_items_unhandled_accounts_for_every_lost_item(timeout: float) -> None:
    """``stop(timeout)`` with a slow channel handler: ``items_unhandled`` plus the items
    handled equals the items accepted (``items_unhandled`` used to be 0 with 100 lost)."""
    lt = _quiet_loop("seam-unhandled").start()

    async def slow(batch: list[int]) -> None:
        await asyncio.sleep(10)  # a slow sink; cancelled promptly at the deadline

    channel = lt.channel(slow, batch_size=10)
    for i in range(100):
        assert channel.put(i)
    report = lt.stop(timeout)
    assert report.finished, report
    stats = channel.stats()
    accepted = stats.put - stats.dropped
    assert accepted == 100
    assert report.items_unhandled + stats.handled == accepted, (report, stats)


# ---------------------------------------------------------------------- stop() from the executor


def test_stop_from_an_executor_worker_of_the_loop_returns_promptly(
    quiet: list[LoopThread],
) -> None:
    """``stop()`` called in one of the loop's own executor workers
    (``await loop.run_in_executor(None, lt.stop)``) returns within 1 s and the LoopThread then
    stops (it used to join its own worker thread and cost ``cancel_grace``)."""
    lt = _started(quiet, "seam-stop-from-executor", cancel_grace=5.0)
    outcome: dict[str, float] = {}

    def stop_here() -> ShutdownReport:
        started = time.monotonic()
        try:
            return lt.stop()
        finally:
            outcome["elapsed"] = time.monotonic() - started

    async def stop_from_executor() -> ShutdownReport:
        return await asyncio.get_running_loop().run_in_executor(None, stop_here)

    lt.submit(stop_from_executor())
    lt.thread.join(15)
    assert not lt.thread.is_alive()
    assert "elapsed" in outcome, "stop() in the executor worker never returned"
    elapsed = outcome["elapsed"]
    assert elapsed < 1.0, f"stop() from an executor worker took {elapsed:.2f}s"
    assert lt.state == "stopped"
