"""Regressions around ``os.fork()``.

* A LoopThread created before ``fork()`` and started in the child (gunicorn ``--preload``):
  ``start()`` returned while still starting (the child's copy of the "started" event was
  already set), the first ``run()`` failed, ``stop()`` recursed; and the LoopThread was dropped
  from the exit registry, so what its channels held was never drained at the child's exit.
* Locks not re-created in the child: a thread of the parent holding one of loopthread's locks
  at ``fork()`` left it held forever in the child, whose first use then hung (``lt.resource()``,
  ``EventBus``, ``loopthread.structlog.offload``, ``EnricherChain``, ``LoopHandler``).
* ``loopthread.default()`` called by a handler that the forked child's default loop drains at
  the child's exit raised instead of returning that loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import structlog

from loopthread import (
    ChannelClosedError,
    EnricherChain,
    EventBus,
    LoopNotRunningError,
    LoopThread,
)
from loopthread.logging import LoopHandler
from loopthread.structlog import offload
from tests._seam_support import HAS_FORK, in_forked_child, run_python

pytestmark = [
    pytest.mark.skipif(not HAS_FORK, reason="needs os.fork"),
    # Forking a multi-threaded process is exactly the scenario under test (3.12+ warns).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

#: Seconds a forked child has to give its answer (a healthy one needs milliseconds).
CHILD_BOUND = 5.0


def _quiet_loop(name: str) -> LoopThread:
    return LoopThread(name, metrics_registry=None, lag_interval=None, slow_callback=None)


# ---------------------------------------------------------------------- created before fork


def test_loopthread_created_before_fork_starts_and_runs_in_child() -> None:
    """A LoopThread created (not started) before fork() and started in the child is running
    when ``start()`` returns, runs a call, and stops cleanly (``start()`` used to return while
    still starting, the first ``run()`` raised LoopNotRunningError, ``stop()`` recursed)."""
    lt = _quiet_loop("seam-preloaded")

    def child() -> str:
        lt.start()
        state = lt.state
        result = lt.run(asyncio.sleep(0, "ran"), timeout=CHILD_BOUND)
        report = lt.stop(CHILD_BOUND)
        return f"{state}|{result}|finished={report.finished}"

    try:
        answer = in_forked_child(child, timeout=3 * CHILD_BOUND)
    finally:
        lt.stop()
    assert answer == "running|ran|finished=True"


_DRAIN_AT_CHILD_EXIT = """
import asyncio
import os
import sys
import threading

import structlog

from loopthread import LoopThread

path, items = sys.argv[1], int(sys.argv[2])
started = threading.Event()


def note_started(logger, method_name, event_dict):
    # loop_thread.started is the documented lifecycle event: waiting on it (rather than on
    # start() alone) keeps this script about the exit drain, whatever start() does.
    if event_dict.get("event") == "loop_thread.started":
        started.set()
    return event_dict


structlog.configure(processors=[note_started, structlog.processors.KeyValueRenderer()])
lt = LoopThread("seam-preloaded", metrics_registry=None, lag_interval=None, slow_callback=None)
pid = os.fork()
if pid == 0:
    lt.start()
    if not started.wait(10):
        sys.exit(3)
    out = open(path, "w")

    async def handle(batch):
        await asyncio.sleep(0.05)  # a slow sink: items are still queued when the child exits
        for item in batch:
            out.write(f"{item}\\n")
        out.flush()

    channel = lt.channel(handle, batch_size=10)
    for i in range(items):
        channel.put(i)
    sys.exit(0)  # a normal exit, no stop(): the exit hook must drain the channel
_, status = os.waitpid(pid, 0)
print(f"child exit code {os.waitstatus_to_exitcode(status)}", flush=True)
"""


def test_loopthread_started_in_forked_child_is_drained_at_child_exit(tmp_path: Path) -> None:
    """Every item put into a channel of a LoopThread created before fork() and started in the
    child is handled when the child exits normally without stop() (the LoopThread used to be
    dropped from the exit registry in the child: nothing was drained)."""
    items = 100
    out = tmp_path / "handled.txt"
    result = run_python(_DRAIN_AT_CHILD_EXIT, str(out), str(items), timeout=30.0)
    assert not result.hung, result.describe()
    assert "child exit code 0" in result.stdout, result.describe()
    handled = out.read_text().split() if out.exists() else []
    assert sorted(int(x) for x in handled) == list(range(items)), (
        f"{len(handled)} of {items} items handled at the forked child's exit"
    )


# ---------------------------------------------------------------------- locks across fork


class _Target:
    """One kind of loopthread object whose lock the parent takes over and over.

    ``hammer`` runs in a loop in ``threads`` parent threads, and also on the loop thread of
    ``on_loop`` if given; ``first_use`` is what each forked child does once.
    """

    def __init__(
        self,
        hammer: Callable[[], object],
        first_use: Callable[[], object],
        *,
        threads: int = 3,
        on_loop: LoopThread | None = None,
    ) -> None:
        self.hammer = hammer
        self.first_use = first_use
        self.threads = threads
        self.on_loop = on_loop


async def _make_value() -> int:
    return 1


class _RaisingHandler(logging.Handler):
    """A wrapped handler that fails on every record."""

    def handle(self, record: logging.LogRecord) -> bool:
        raise ValueError("this handler always fails")


def _target(kind: str, parent: LoopThread, made: list[LoopThread]) -> _Target:
    # ``parent`` is never started: each call below takes the object's lock and then finds no
    # running loop (no I/O, no waiting), so the parent's threads hold those locks very often,
    # at fork time too.
    if kind == "resource":

        def child_resource() -> None:
            _quiet_loop("seam-fork-child").resource(_make_value, name="child-value")

        def make_resource(parent: LoopThread = parent) -> None:
            parent.resource(_make_value, name="parent-value")

        return _Target(make_resource, child_resource)
    if kind == "event_bus":
        bus = EventBus(parent)
        reporter = bus.reporter()

        def report(parent: LoopThread = parent, reporter: Any = reporter) -> None:
            EventBus(parent)
            try:
                reporter.report("tick", {"n": 1})
            except (LoopNotRunningError, ChannelClosedError):
                pass

        return _Target(report, report)
    if kind == "offload":
        processor = offload(sink=lambda value: None, loop_thread=parent)

        def log_one(processor: Any = processor) -> None:
            try:
                processor(None, "info", {"event": "tick"})
            except structlog.DropEvent:
                pass

        return _Target(log_one, log_one)
    if kind == "enricher_chain":

        async def add(event: Any) -> dict[str, int]:
            return {"added": 1}

        # Hammered on the chain's own loop thread, where enrich_sync() degrades at once
        # (it would wait for itself) and counts that under the chain's lock; a forked child
        # has no such loop, so its enrich_sync() degrades too, through the same lock.
        host = _quiet_loop("seam-fork-chain-loop").start()
        made.append(host)
        chain = EnricherChain([add], loop_thread=host)

        def enrich(chain: EnricherChain = chain) -> None:
            chain.enrich_sync({"k": 1})

        return _Target(enrich, enrich, threads=0, on_loop=host)
    assert kind == "loop_handler"
    # Bound to a loop that ran and stopped: each record is written directly in the caller's
    # thread, to 50 wrapped handlers that all fail, each failure counted under the
    # LoopHandler's error lock.
    record = logging.LogRecord("seam", logging.INFO, __file__, 1, "tick", None, None)
    with _quiet_loop("seam-fork-handler-loop") as stopped:
        handler = LoopHandler(*[_RaisingHandler() for _ in range(50)], loop_thread=stopped)
        handler.handle(record)
        handler.flush(CHILD_BOUND)

    def handle(handler: LoopHandler = handler, record: logging.LogRecord = record) -> None:
        handler.handle(record)

    return _Target(handle, handle, threads=2)


@pytest.fixture(name="parent_loop")
def fixture_parent_loop() -> Iterator[LoopThread]:
    """A LoopThread that is never started (its objects find no loop), stopped afterwards."""
    lt = _quiet_loop("seam-fork-parent")
    try:
        yield lt
    finally:
        lt.stop()


@pytest.mark.parametrize(
    "kind", ["resource", "event_bus", "offload", "enricher_chain", "loop_handler"]
)
def test_first_use_in_forked_child_while_parent_threads_use_it(
    kind: str, parent_loop: LoopThread
) -> None:
    """Children forked (up to 60) while parent threads keep using an object (creating
    ``lt.resource()``s, reporting to an EventBus, logging through ``offload``, enriching, or
    emitting to a LoopHandler) each finish their first use of it within CHILD_BOUND; the
    object's locks used to be inherited held, and 10-80% of the children hung."""
    made: list[LoopThread] = []
    target = _target(kind, parent_loop, made)
    stop = threading.Event()

    # Default arguments, not closures: on free-threaded 3.13 reading a closure cell takes the
    # cell's own mutex, and one contended by the hammering threads when fork() came can be
    # left held in the child (CPython gh-144513), which would hang the test's own code there.
    def hammer(target: _Target = target, stop: threading.Event = stop) -> None:
        while not stop.is_set():
            target.hammer()

    async def hammer_on_loop() -> None:
        hammer()  # blocks this loop until stop is set: nothing else runs on it

    def child(target: _Target = target) -> str:
        target.first_use()
        return "ok"

    threads = [
        threading.Thread(target=hammer, name=f"seam-hammer-{n}") for n in range(target.threads)
    ]
    answers: list[str] = []
    on_loop: Future[None] | None = None
    try:
        if target.on_loop is not None:
            on_loop = target.on_loop.submit(hammer_on_loop())
        for thread in threads:
            thread.start()
        for _ in range(60):
            answers.append(in_forked_child(child, timeout=CHILD_BOUND))
            if answers[-1] != "ok":
                break  # the first hang is the finding; do not spend CHILD_BOUND on more
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        if on_loop is not None:
            on_loop.result(10)
        for lt in made:
            lt.stop()
    assert answers == ["ok"] * 60, (
        f"{kind}: child {len(answers)} answered {answers[-1]!r} ('hung': its first use "
        f"did not finish within {CHILD_BOUND}s)"
    )


# ---------------------------------------------------------------------- default() at exit


_DEFAULT_FROM_DRAIN_IN_FORKED_CHILD = """
import asyncio
import os
import sys

import loopthread

path = sys.argv[1]
loopthread.run(asyncio.sleep(0))  # the parent uses its default loop before forking
pid = os.fork()
if pid == 0:
    out = open(path, "w")
    default = loopthread.default()

    async def handle(batch):
        await asyncio.sleep(0.05)  # still queued when the child exits
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
    sys.exit(0)  # drained at exit: the handler asks for default() on the draining loop
_, status = os.waitpid(pid, 0)
print(f"child exit code {os.waitstatus_to_exitcode(status)}", flush=True)
"""


def test_default_called_by_drained_handler_in_forked_child_returns_that_loop(
    tmp_path: Path,
) -> None:
    """In a forked child, a handler that the child's default loop drains at exit gets that
    same loop from ``loopthread.default()`` (it used to raise LoopNotRunningError: "the
    interpreter is shutting down")."""
    out = tmp_path / "seen.txt"
    result = run_python(_DEFAULT_FROM_DRAIN_IN_FORKED_CHILD, str(out), timeout=30.0)
    assert not result.hung, result.describe()
    assert "child exit code 0" in result.stdout, result.describe()
    seen = out.read_text().splitlines() if out.exists() else []
    assert seen == [f"{i} True" for i in range(5)], result.describe()
