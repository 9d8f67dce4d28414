"""Scenarios for tests/test_metrics_multiprocess.py, each run in a fresh interpreter.

prometheus_client picks multiprocess mode when it is first imported, so the test starts
``python -m tests._mp_scenarios NAME`` with ``PROMETHEUS_MULTIPROC_DIR`` set. A scenario
prints one JSON object (scrapes of the directory, and what the processes counted themselves)
as its last line; the test makes the assertions. Child processes come from
``multiprocessing`` (fork or spawn) and do their work through the public API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

import loopthread
from loopthread import metrics, testing

DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
Sample = list[Any]  # [name, labels, value]


def scrape() -> list[Sample]:
    """The directory as a scrape served by MultiProcessCollector sees it."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    text = generate_latest(registry).decode()
    return [
        [s.name, s.labels, s.value]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("loopthread_")
    ]


async def ok() -> int:
    return 1


async def fail() -> None:
    raise ValueError("boom")


def until_written(check: Callable[[list[Sample]], bool], lt: loopthread.LoopThread) -> None:
    """Wait until the files pass ``check``, woken by every pass of lt's monitor thread (the
    moments at which it writes), never by a timer: if the monitor parks for good before the
    files are right, this waits until the test's timeout, which is the failure."""
    monitor = testing.monitor(lt)
    assert monitor is not None
    woken = threading.Event()
    monitor.add_tick(lambda activity, parking: woken.set())  # runs after the writer's own
    while not check(scrape()):
        woken.wait()
        woken.clear()


def total(samples: list[Sample], name: str, **labels: str) -> float:
    wanted = labels.items()
    return float(sum(v for n, ls, v in samples if n == name and wanted <= ls.items()))


# ---------------------------------------------------------------------- sum


def _work(index: int) -> None:
    """A worker: (index+1)*10 ok calls, index errors, one timeout, (index+1)*5 channel items,
    all on its default loop, then a normal exit (the exit hook stops the loop)."""
    for _ in range((index + 1) * 10):
        loopthread.run(ok())
    for _ in range(index):
        try:
            loopthread.run(fail())
        except ValueError:
            pass
    try:
        loopthread.run(asyncio.sleep(10), timeout=0.01)
    except TimeoutError:
        pass

    async def handle(batch: list[int]) -> None:
        return None

    channel = loopthread.default().channel(handle, name="events")
    for i in range((index + 1) * 5):
        channel.put(i)
    channel.flush(timeout=10)


def scenario_sum(method: str) -> dict[str, Any]:
    ctx: Any = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_work, args=(i,)) for i in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    # This process works too, on a LoopThread of its own, and stops it.
    with loopthread.LoopThread("parent") as lt:
        for _ in range(4):
            lt.run(ok())
    exited = scrape()
    for proc in procs:
        mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
    marked = scrape()
    return {
        "exitcodes": [p.exitcode for p in procs],
        "exited": exited,
        "marked": marked,
        "files": sorted(os.listdir(DIR)),
        "pids": [p.pid for p in procs],
    }


# ---------------------------------------------------------------------- gauges


def _hold(index: int, conn: Connection, go: MpEvent) -> None:
    """A live worker: index+1 calls parked, a channel with items waiting, an enricher chain
    whose circuit is closed; metrics.flush(), report its own stats, wait for ``go``."""
    lt = loopthread.default()
    release = lt.run(_event())
    parked = [lt.submit(release.wait()) for _ in range(index + 1)]
    gate = lt.run(_event())

    async def handle(batch: list[int]) -> None:
        await gate.wait()

    channel = lt.channel(handle, batch_size=1, name="q")
    for i in range(2 * index + 3):
        channel.put(i)

    async def enrich(event: Mapping[str, Any]) -> dict[str, Any]:
        return {"seen": True}

    chain = loopthread.EnricherChain([loopthread.enricher(enrich, name="e")], name="c")
    chain.enrich_sync({})
    lt.run(ok())  # the parked calls and the first batch started
    written = metrics.flush()
    conn.send(
        {
            "written": written,
            "in_flight": lt.stats().in_flight,
            "depth": channel.stats().depth,
            "high_water": channel.stats().high_water,
            "pid": os.getpid(),
        }
    )
    go.wait(30)

    async def open_all() -> None:
        release.set()
        gate.set()

    lt.run(open_all())
    for future in parked:
        future.result(10)
    channel.flush(timeout=10)


async def _event() -> asyncio.Event:
    return asyncio.Event()


def scenario_gauges() -> dict[str, Any]:
    ctx: Any = multiprocessing.get_context("fork")
    go = ctx.Event()
    pipes = [ctx.Pipe() for _ in range(3)]
    procs = [ctx.Process(target=_hold, args=(i, pipes[i][1], go)) for i in range(3)]
    for proc in procs:
        proc.start()
    reports = [parent.recv() for parent, _ in pipes]
    live = scrape()
    go.set()
    for proc in procs:
        proc.join(30)
    exited = scrape()
    for proc in procs:
        mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
    return {
        "exitcodes": [p.exitcode for p in procs],
        "reports": reports,
        "live": live,
        "exited": exited,
        "marked": scrape(),
    }


# ---------------------------------------------------------------------- written while running


def scenario_moments(mode: str) -> dict[str, Any]:
    """No flush(): the monitor's own wake-ups write the files, once idle and while busy."""
    presets: dict[str, dict[str, Any]] = {
        "select": {},  # the defaults: the select watchdog and lag probes
        "lag_only": {"slow_callback": None},
        "uvloop": {"uvloop": True},  # no selector to watch: the heartbeat
    }
    options = presets[mode]
    lt = loopthread.LoopThread("w", **options).start()
    release = lt.run(_event())
    parked = [lt.submit(release.wait()) for _ in range(3)]
    for _ in range(7):
        lt.run(ok())
    # Idle now (the parked calls wait on an Event): the files catch up without a flush.
    until_written(
        lambda s: (
            total(s, "loopthread_calls_total", outcome="ok") == 8
            and total(s, "loopthread_calls_in_flight") == 3
        ),
        lt,
    )
    idle = scrape()
    spinning = threading.Event()
    stop_spinning = False

    async def spin() -> None:
        spinning.set()
        # The loop never waits in select: never idle, until told to stop.
        while not stop_spinning:  # noqa: ASYNC110 - spinning is the point
            await asyncio.sleep(0)

    spinner = lt.submit(spin())
    assert spinning.wait(10)
    for _ in range(20):
        lt.run(ok())
    until_written(lambda s: total(s, "loopthread_calls_total", outcome="ok") == 28, lt)
    busy = scrape()
    busy_in_flight = total(busy, "loopthread_calls_in_flight")
    stop_spinning = True
    spinner.result(10)

    async def open_() -> None:
        release.set()

    lt.run(open_())
    for future in parked:
        future.result(10)
    lt.stop()
    return {"idle": idle, "busy": busy, "busy_in_flight": busy_in_flight, "stopped": scrape()}


# ---------------------------------------------------------------------- lifecycle


def scenario_lifecycle() -> dict[str, Any]:
    """Restarts under one name, a clash, closed channels, a loop without a monitor thread."""
    result: dict[str, Any] = {}
    for calls in (5, 3):  # a LoopThread restarted under the same name continues its counters
        with loopthread.LoopThread("r") as lt:
            for _ in range(calls):
                lt.run(ok())
    result["restarted"] = scrape()
    a = loopthread.LoopThread("same").start()
    b = loopthread.LoopThread("same").start()
    a.run(ok())
    for _ in range(2):
        b.run(ok())

    async def handle(batch: list[int]) -> None:
        return None

    for items in (10, 5):  # a channel closed and another opened under its name
        channel = a.channel(handle, name="ch")
        for i in range(items):
            channel.put(i)
        channel.close(timeout=10)
    metrics.flush()
    result["clash"] = scrape()
    a.stop()
    b.stop()
    result["clash_stopped"] = scrape()

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("loopthread").addHandler(Keep())
    logging.getLogger("loopthread").setLevel(logging.WARNING)
    quiet = loopthread.LoopThread("quiet", lag_interval=None, slow_callback=None).start()
    for _ in range(4):
        quiet.run(ok())
    result["quiet_warnings"] = [getattr(r, "loopthread_event", "") for r in records]
    result["quiet_before_flush"] = scrape()
    result["quiet_flushed"] = metrics.flush(quiet)
    result["quiet_after_flush"] = scrape()
    quiet.run(ok())
    quiet.stop()
    result["quiet_stopped"] = scrape()
    result["flush_after_stop"] = metrics.flush(quiet)
    return result


# ---------------------------------------------------------------------- fork


def _child_after_fork() -> None:
    loopthread.run(ok())


def scenario_fork_mid_write() -> dict[str, Any]:
    """A fork while another thread holds prometheus_client's write lock (a monitor thread
    caught writing): the child's own writes must not wait for a thread it does not have.

    prometheus_client offers no way to hold that lock from outside: this finds it where
    loopthread's fork hook does (in the closure of its value class) to simulate the write."""
    lt = loopthread.LoopThread("parent").start()
    lt.run(ok())
    lock = next(
        c.cell_contents
        for c in values.ValueClass.inc.__closure__ or ()
        if isinstance(c.cell_contents, type(threading.Lock()))
    )
    held, release = threading.Event(), threading.Event()

    def writer_caught_at_fork() -> None:
        with lock:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=writer_caught_at_fork)
    thread.start()
    held.wait(10)
    child = multiprocessing.get_context("fork").Process(target=_child_after_fork)
    child.start()
    child.join(10)  # at once with the fix; a hung child is killed below
    exitcode = child.exitcode
    if exitcode is None:
        child.kill()
        child.join()
    release.set()
    thread.join(10)
    lt.stop()
    return {"exitcode": exitcode, "samples": scrape()}


def main() -> None:
    name, *args = sys.argv[1:]
    result = globals()[f"scenario_{name}"](*args)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
