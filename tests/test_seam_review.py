"""Regressions of the review's reproduction scripts (``b01`` ... ``b47``), fixed in one commit.

Each test names the behaviour it pins; the docstrings say what used to happen instead. Anything
that configures logging globally or could hang runs in a child interpreter with a hard bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import loopthread.logging as ltl
from loopthread import LoopNotRunningError, LoopThread, ShutdownReport, testing
from tests._seam_support import run_python


def _quiet_loop(name: str, **options: Any) -> LoopThread:
    """A LoopThread without metrics, lag probes or stall watchdog (unless options say so)."""
    settings: dict[str, Any] = {
        "metrics_registry": None,
        "lag_interval": None,
        "slow_callback": None,
    }
    settings.update(options)
    return LoopThread(name, **settings)


@pytest.fixture(name="made")
def fixture_made() -> Iterator[list[LoopThread]]:
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


class _Recorder(logging.Handler):
    """A logging handler that keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ---------------------------------------------------------------------- logging (children)

_DEBUG_ROOT_LOOPHANDLER = """
import asyncio, faulthandler, logging, sys
import loopthread, loopthread.logging as ltl
faulthandler.dump_traceback_later(15, exit=True)
root = logging.getLogger()
root.setLevel(logging.DEBUG)
root.addHandler(ltl.LoopHandler(logging.StreamHandler(sys.stdout)))
print("result:", loopthread.run(asyncio.sleep(0, result=1), timeout=5))
print("OK")
"""


def test_debug_root_logger_with_loophandler_first_run_returns() -> None:
    """With the root logger at DEBUG and a LoopHandler (following the default loop) on it, the
    first ``loopthread.run()`` returns its result (it used to hang forever: the new loop
    thread logged asyncio's 'Using selector' while creating its loop, and the handler waited
    in ``default().start()`` for that very thread)."""
    child = run_python(_DEBUG_ROOT_LOOPHANDLER, timeout=20)
    assert child.returncode == 0, child.describe()
    assert "result: 1" in child.stdout, child.describe()
    assert "\nOK\n" in child.stdout, child.describe()


_NOT_SILENT_BY_DEFAULT = """
import loopthread
lt = loopthread.LoopThread("b47", metrics_registry=None).start()
def h(batch):
    raise ValueError("bad item")
ch = lt.channel(h)
ch.put(1)
ch.flush(2)
lt.stop()
print("DONE")
"""


def test_library_logger_is_silent_when_app_configured_no_logging() -> None:
    """In an app that configured no logging, loopthread's WARNING/ERROR events (a failing
    channel handler) print nothing to stderr: the 'loopthread' logger has a NullHandler (they
    used to reach stderr through ``logging.lastResort``)."""
    child = run_python(_NOT_SILENT_BY_DEFAULT, timeout=20)
    assert child.returncode == 0, child.describe()
    assert child.stdout.strip() == "DONE", child.describe()
    assert child.stderr == "", child.describe()


# ---------------------------------------------------------------------- enricher chains


async def _region(event: object) -> dict[str, str]:
    return {"region": "eu"}


def test_loophandler_chain_first_used_during_stop_still_enriches_every_record() -> None:
    """A LoopHandler with enrichers, a burst of 50 records, then ``stop(5)`` at once: all 50
    records are written, enriched, none counted failed, even when the chain's first
    ``enrich()`` runs after ``stop()`` began (attaching the chain then used to raise
    LoopNotRunningError and fail the whole batch)."""
    outcomes: dict[str, int] = {}
    for it in range(30):
        lt = _quiet_loop(f"seam-b41-{it}").start()
        written: list[object] = []

        class _Sink(logging.Handler):
            def emit(self, record: logging.LogRecord, out: list[object] = written) -> None:
                out.append(getattr(record, "region", None))

        handler = ltl.LoopHandler(_Sink(), enrichers=[_region], loop_thread=lt)
        logger = logging.getLogger(f"tests.seam-review.b41-{it}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            for i in range(50):
                logger.info("r %d", i)
            lt.stop(5)
        finally:
            logger.removeHandler(handler)
            if lt.running:
                lt.stop(2)
        channel = handler.stats().channel
        assert channel is not None
        key = (
            f"written={len(written)} enriched={sum(1 for w in written if w == 'eu')} "
            f"channel_failed={channel.failed}"
        )
        outcomes[key] = outcomes.get(key, 0) + 1
    assert list(outcomes) == ["written=50 enriched=50 channel_failed=0"], outcomes


# ---------------------------------------------------------------------- stop(): drain


def test_channel_drain_survives_handler_cancelling_every_task(made: list[LoopThread]) -> None:
    """A channel handler that runs ``for t in asyncio.all_tasks(): t.cancel()`` while
    ``stop(5)`` drains the channel does not cut the drain: all 100 items are handled (the
    drain used to be an ordinary task: it was cancelled and 78 items were counted unhandled
    with the deadline 5 s away)."""
    lt = _started(made, "seam-b16")
    handled: list[int] = []

    async def handler(batch: list[int]) -> None:
        await asyncio.sleep(0.002)
        handled.extend(batch)
        if len(handled) == 20:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    ch = lt.channel(handler, batch_size=1)
    for i in range(100):
        ch.put(i)
    report = lt.stop(5)
    assert report.finished, report
    assert len(handled) == 100, (report, ch.stats())
    assert report.items_unhandled == 0, report
    assert ch.stats().unhandled == 0, ch.stats()


def test_second_stop0_does_not_abandon_first_stops_drain(made: list[LoopThread]) -> None:
    """While ``stop(10)`` drains a busy channel, a second ``stop(0)`` from another thread
    returns without cutting that drain: the first ``stop()`` returns a finished report, every
    item is handled and the LoopThread ends ``stopped``."""
    lt = _started(made, "seam-b01")
    handled: list[int] = []
    draining = threading.Event()

    async def handler(batch: list[int]) -> None:
        await asyncio.sleep(0.01)
        handled.extend(batch)

    async def mark_draining(deadline: float) -> None:
        draining.set()

    ch = lt.channel(handler, batch_size=1)
    testing.add_stop_hook(lt, mark_draining, phase="drain")
    for i in range(100):
        ch.put(i)
    first: list[ShutdownReport] = []
    stopper = threading.Thread(target=lambda: first.append(lt.stop(10)))
    stopper.start()
    assert draining.wait(5), "the first stop() never reached its drain phase"
    second = lt.stop(0)
    stopper.join(15)
    assert not stopper.is_alive(), "the first stop() did not return"
    assert isinstance(second, ShutdownReport)
    assert first, "the first stop() returned nothing"
    assert first[0].finished, (first[0], second)
    assert len(handled) == 100, (first[0], second, ch.stats())
    assert lt.state == "stopped", lt.state


# ---------------------------------------------------------------------- stop(): close phases


def test_stubborn_resource_close_does_not_skip_older_resource(made: list[LoopThread]) -> None:
    """Two resources, the newer one's ``aclose()`` swallowing CancelledError: ``stop(1)``
    bounds the stubborn close and still closes the older resource (all closes used to run in
    one task, which the stubborn close held: the older one was never closed)."""
    lt = _started(made, "seam-b23")
    log: list[str] = []

    class Good:
        async def aclose(self) -> None:
            log.append("good closed")

    class Stubborn:
        async def aclose(self) -> None:
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass

    async def make_good() -> Good:
        return Good()

    async def make_stubborn() -> Stubborn:
        return Stubborn()

    good = lt.resource(make_good, name="good")
    stubborn = lt.resource(make_stubborn, name="stubborn")
    lt.run(good.get(), timeout=5)
    lt.run(stubborn.get(), timeout=5)
    report = lt.stop(1)
    assert log == ["good closed"], (report, log)
    assert report.finished, report
    assert report.duration < 3.0, report
    assert lt.state == "stopped", lt.state


def test_stop0_with_slow_close_hooks_on_healthy_loop_finishes(made: list[LoopThread]) -> None:
    """``stop(0)`` on a healthy loop with six slow-but-cancellable close hooks returns
    ``finished=True`` (with ``deadline_hit``) and leaves the LoopThread ``stopped`` (the
    close floors used to outlast stop's wait and the healthy loop was declared dead)."""
    lt = _started(made, "seam-b02")

    async def slow_close(deadline: float) -> None:
        await asyncio.sleep(1)

    for _ in range(6):
        testing.add_stop_hook(lt, slow_close, phase="close")
    report = lt.stop(0)
    assert report.finished, report
    assert report.deadline_hit, report
    assert lt.state == "stopped", lt.state


def test_cancel_grace_cut_of_background_task_is_not_deadline_hit(made: list[LoopThread]) -> None:
    """``stop(30)`` with a background task whose cleanup takes 1.5 s (more than
    ``cancel_grace=0.2``): the task is abandoned and ``deadline_hit`` stays False, since the
    grace bound, not the 30 s deadline, cut it short (it used to report ``deadline_hit=True``)."""
    lt = _started(made, "seam-b35", cancel_grace=0.2)
    tasks: list[asyncio.Task[None]] = []

    async def background() -> None:
        try:
            await asyncio.sleep(100)
        finally:
            await asyncio.shield(asyncio.sleep(1.5))

    async def start_background() -> None:
        tasks.append(asyncio.get_running_loop().create_task(background()))

    lt.run(start_background(), timeout=5)
    report = lt.stop(30)
    assert report.finished, report
    assert not report.deadline_hit, report
    assert report.abandoned >= 1, report
    assert report.duration < 5.0, report


# ---------------------------------------------------------------------- stop(): monitor


def test_executor_job_outliving_stop_is_not_reported_as_loop_stall() -> None:
    """``stop()`` with an executor job that outlives it (a blocking read) reports no loop
    stall: ``stats().loop_stalls == 0`` and no 'stalled' warning (the stall watchdog used to
    stay armed while the loop thread joined the executor after ``run_forever()``)."""
    recorder = _Recorder()
    recorder.setLevel(logging.WARNING)
    lib_logger = logging.getLogger("loopthread")
    old_level = lib_logger.level
    lib_logger.addHandler(recorder)
    lib_logger.setLevel(logging.WARNING)
    started = threading.Event()
    release = threading.Event()

    def blocking_read() -> None:
        started.set()
        release.wait(5)

    async def read_in_executor() -> None:
        await asyncio.get_running_loop().run_in_executor(None, blocking_read)

    # the stall watchdog (slow_callback) is what this test is about: keep the defaults
    lt = LoopThread("seam-b26", metrics_registry=None)
    try:
        lt.start()
        fut = lt.submit(read_in_executor())
        assert started.wait(5), "the executor job never started"
        fut.cancel()  # the caller gives up: the coroutine is cancelled, the job keeps running
        assert lt.run(asyncio.sleep(0, "round trip"), timeout=5) == "round trip"
        assert lt.stats().loop_stalls == 0
        report = lt.stop(2)
        assert report.finished, report
        messages = [r.getMessage() for r in recorder.records]
        assert lt.stats().loop_stalls == 0, (report, messages)
        assert not any("stalled" in m for m in messages), messages
    finally:
        release.set()
        lib_logger.removeHandler(recorder)
        lib_logger.setLevel(old_level)
        if lt.running:
            lt.stop(2)


# ---------------------------------------------------------------------- start() races


def test_stop_during_slow_start_is_applied_once_loop_runs() -> None:
    """``stop(0.1)`` while another thread's ``start()`` is still creating the loop (a slow
    ``loop_factory``) is kept: once the loop is up the LoopThread stops, and later calls are
    refused (the request used to be dropped: the loop came up ``running`` and stayed so)."""
    entered = threading.Event()
    release = threading.Event()

    def slow_factory() -> asyncio.AbstractEventLoop:
        entered.set()
        release.wait(5)
        return asyncio.new_event_loop()

    lt = _quiet_loop("seam-b45", loop_factory=slow_factory)
    start_errors: list[BaseException] = []

    def start() -> None:
        try:
            lt.start()
        except BaseException as exc:  # noqa: BLE001 - recorded, either outcome is allowed
            start_errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        assert entered.wait(5), "the loop factory was never called"
        report = lt.stop(0.1)
        assert not report.finished, report
    finally:
        release.set()
        starter.join(10)
    assert not starter.is_alive(), "start() did not return"
    lt.thread.join(10)
    assert not lt.thread.is_alive(), "the loop thread is still running"
    assert lt.state in ("stopping", "stopped"), (lt.state, start_errors)
    assert not lt.running
    coro = asyncio.sleep(0, True)
    with pytest.raises(LoopNotRunningError):
        lt.run(coro, timeout=5)
    lt.stop(2)


_CTRLC_IN_START = """
import random, signal, sys, time, loopthread
armed = False
def boom(*a):
    if armed:
        raise KeyboardInterrupt
signal.signal(signal.SIGALRM, boom)
bad = {}
ok = 0
for i in range(int(sys.argv[1])):
    lt = loopthread.LoopThread(
        f"b03-{i}", metrics_registry=None, lag_interval=None, slow_callback=None
    )
    interrupted = False
    try:
        armed = True
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0.00001, 0.0006))
        lt.start()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    if interrupted and lt.state == "new":
        continue
    if not interrupted:
        r = lt.stop(2)
        if not r.finished:
            k = "uninterrupted stop not finished"
            bad[k] = bad.get(k, 0) + 1
        continue
    time.sleep(0.01)
    st = lt.state
    alive = lt.loop_started and lt.thread.is_alive()
    r = lt.stop(1)
    lt.thread.join(2) if lt.loop_started else None
    alive2 = lt.loop_started and lt.thread.is_alive()
    key = (f"state={st} thread_alive={alive} finished={r.finished} "
           f"abandoned={r.abandoned} alive_after_stop={alive2}")
    if (st == "dead" and alive) or not r.finished or alive2:
        bad[key] = bad.get(key, 0) + 1
    else:
        ok += 1
print("interrupted-ok", ok)
print("BAD", bad if bad else "none")
"""


def test_ctrl_c_inside_start_leaves_usable_or_cleanly_dead_loop() -> None:
    """A KeyboardInterrupt (from a signal handler) landing anywhere inside ``lt.start()``
    leaves the LoopThread usable (stoppable with a finished report) or cleanly dead; never a
    running loop that ``stop()`` abandons, a thread left running in a 'dead' LoopThread, or a
    hanging ``start()`` (bounded: 100 attempts in a child)."""
    child = run_python(_CTRLC_IN_START, "100", timeout=30)
    assert child.returncode == 0, child.describe()
    assert "BAD none" in child.stdout, child.describe()


# ---------------------------------------------------------------------- metrics


def test_channel_put_total_never_decreases_across_detach_and_scrape() -> None:
    """Channels with the same name opened and closed in turn while another thread scrapes:
    ``loopthread_channel_put_total{channel="ch"}`` never decreases (a scrape between the
    detach and the fold of the channel's final counts used to lose one channel's count)."""
    registry = CollectorRegistry()
    lt = LoopThread("seam-b19", metrics_registry=registry, lag_interval=None, slow_callback=None)
    lt.start()
    done = threading.Event()
    drops: list[tuple[float, float]] = []
    scrapes: list[int] = [0]

    def ignore(batch: list[int]) -> None:
        return None

    def scraper() -> None:
        last = 0.0
        while not done.is_set():
            value: float | None = None
            for family in registry.collect():
                for sample in family.samples:
                    if (
                        sample.name == "loopthread_channel_put_total"
                        and sample.labels.get("channel") == "ch"
                    ):
                        value = sample.value
            scrapes[0] += 1
            if value is not None:
                if value < last:
                    drops.append((last, value))
                last = value

    try:
        # extra channels, so that a scrape takes a while
        for i in range(200):
            lt.channel(ignore, name=f"o{i}")
        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        for _ in range(400):
            ch = lt.channel(ignore, name="ch")
            for i in range(10):
                ch.put(i)
            ch.close(1)
        done.set()
        thread.join(5)
        assert not thread.is_alive(), "the scraper did not stop"
    finally:
        done.set()
        lt.stop(5)
    assert scrapes[0] > 0
    assert drops == [], drops[:5]
