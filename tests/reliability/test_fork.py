"""Fork: channels, the EventBus and LoopHandler across ``fork()``, in parent, child, grandchild.

``tests/test_process.py`` covers the default loop and a parent's LoopThread in the child; this
file covers what rides on them. The promise: in a forked child nothing inherited hangs; what
belongs to the parent is refused with a clear error (or, for logging, written directly), never
handled twice; what uses the default loop moves to the child's own default loop and works; the
parent is unaffected and still handles each of its items exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import loopthread
from loopthread import ChannelClosedError, EventBus, LoopNotRunningError, LoopThread
from loopthread.logging import LoopHandler
from tests.reliability._support import (
    ANSWER_BOUND,
    in_forked_child,
    needs_fork,
    record,
)

pytestmark = [
    pytest.mark.skipif(not needs_fork, reason="needs os.fork"),
    # Forking a multi-threaded process is exactly the scenario under test (3.12+ warns).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


class Ledger:
    """A channel handler recording items with the pid that handled them; can be held."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()

    async def __call__(self, batch: list[Any]) -> None:
        self.entered.set()
        if not self.released.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait, 10)
        pid = os.getpid()
        self.items.extend((pid, item) for item in batch)


async def pid_of_loop() -> int:
    return os.getpid()


@pytest.fixture(name="held_channel")
def fixture_held_channel(lt: LoopThread) -> Iterator[tuple[Any, Ledger]]:
    """A channel whose handler is held (items wait in the channel when the test forks)."""
    ledger = Ledger()
    ledger.released.clear()
    ch = lt.channel(ledger, batch_size=10)
    yield ch, ledger
    ledger.released.set()


def test_parent_channel_in_child_refuses_and_never_hangs(
    lt: LoopThread, held_channel: tuple[Any, Ledger]
) -> None:
    """Items waiting in a parent's channel at fork(): the child's copy refuses put() with a
    fork-specific message, flush() and close() return at once, stats() works, and nothing is
    handled in the child; the parent then handles every item exactly once."""
    ch, ledger = held_channel
    for i in range(100):
        ch.put(i)
    assert ledger.entered.wait(ANSWER_BOUND)  # the first batch is held; 90 items wait

    def child() -> str:
        started = time.monotonic()
        answers = []
        try:
            ch.put("child")
            answers.append("accepted")
        except ChannelClosedError as exc:
            answers.append("refused:fork" if "fork()" in str(exc) else f"refused:{exc}")
        answers.append(f"flush:{ch.flush(timeout=5)}")
        ch.close(timeout=5)
        stats = ch.stats()
        answers.append(f"closed:{stats.closed}")
        answers.append(f"handled_here:{sum(1 for pid, _ in ledger.items if pid == os.getpid())}")
        answers.append(f"quick:{time.monotonic() - started < 2}")
        # A new channel on the child's own default loop works.
        got: list[int] = []
        fresh = loopthread.default().channel(got.extend)
        for i in range(50):
            fresh.put(i)
        answers.append(f"fresh:{fresh.flush(5)}:{got == list(range(50))}")
        return " ".join(answers)

    answer = in_forked_child(child)
    assert answer == (
        "refused:fork flush:False closed:True handled_here:0 quick:True fresh:True:True"
    ), answer
    ledger.released.set()
    assert ch.flush(ANSWER_BOUND)
    assert [item for _, item in ledger.items] == list(range(100))
    assert {pid for pid, _ in ledger.items} == {os.getpid()}
    stats = ch.stats()
    assert (stats.put, stats.handled, stats.unhandled) == (100, 100, 0)
    record("fork: parent channel in child", items=100, handled_twice=0, lost=0, hangs=0)


def test_fork_while_producers_put_and_callers_call(lt: LoopThread) -> None:
    """fork() while 4 threads put into a channel and 4 threads call the default loop: the
    child's default loop works and the parent channel refuses there; in the parent every call
    is answered and every accepted item handled exactly once."""
    ledger = Ledger()
    ch = lt.channel(ledger, batch_size=32)
    default = loopthread.default()
    stop = threading.Event()
    started = threading.Barrier(9)
    accepted: list[list[int]] = [[] for _ in range(4)]
    calls = [0] * 4
    wrong: list[str] = []
    going = threading.Semaphore(0)  # each thread releases it once it is well under way

    def producer(index: int) -> None:
        started.wait()
        i = 0
        while not stop.is_set():
            item = index * 10_000_000 + i
            if ch.put(item):
                accepted[index].append(item)
            i += 1
            if i == 2_000:
                going.release()

    def caller(index: int) -> None:
        started.wait()
        while not stop.is_set():
            got = default.run(pid_of_loop(), timeout=ANSWER_BOUND)
            if got != os.getpid():
                wrong.append(f"{got}")
            calls[index] += 1
            if calls[index] == 200:
                going.release()

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    for _ in threads:
        assert going.acquire(timeout=ANSWER_BOUND)

    def child() -> str:
        new_default = loopthread.default()
        pid = loopthread.run(pid_of_loop(), timeout=5)
        try:
            ch.put(-1)
            refused = "no"
        except ChannelClosedError:
            refused = "yes"
        try:
            default.run(pid_of_loop(), timeout=5)
            old = "ran"
        except LoopNotRunningError:
            old = "refused"
        return f"{new_default is not default} {pid == os.getpid()} {refused} {old}"

    try:
        answer = in_forked_child(child)
    finally:
        stop.set()
        for t in threads:
            t.join(ANSWER_BOUND)
    assert answer == "True True yes refused", answer
    assert not any(t.is_alive() for t in threads)
    assert wrong == []
    assert ch.flush(ANSWER_BOUND)
    all_accepted = [item for items in accepted for item in items]
    handled = [item for _, item in ledger.items]
    assert len(handled) == len(set(handled)) == len(all_accepted)
    assert set(handled) == set(all_accepted)
    for index in range(4):  # per-producer order kept
        mine = [item for item in handled if item // 10_000_000 == index]
        assert mine == accepted[index]
    record(
        "fork: mid-flight (4 producers, 4 callers)",
        items=len(all_accepted),
        calls=sum(calls),
        handled_twice=0,
        lost=len(all_accepted) - len(handled),
    )


def test_event_bus_on_default_loop_moves_to_child() -> None:
    """An EventBus on the default loop: in the child, report() moves it to the child's own
    default loop, whose handlers see only the child's events; the parent's count is intact;
    a grandchild does the same again."""
    seen: list[tuple[int, int]] = []
    bus = EventBus()
    bus.on("e", lambda event: seen.append((os.getpid(), event["i"])))
    reporter = bus.reporter()
    for i in range(10):
        reporter.report("e", {"i": i})
    assert bus.flush(ANSWER_BOUND)

    def child() -> str:
        before = len(seen)
        for i in range(100, 120):
            reporter.report("e", {"i": i})
        flushed = bus.flush(5)
        mine = [i for pid, i in seen[before:] if pid == os.getpid()]

        def grandchild() -> str:
            start = len(seen)
            for i in range(200, 205):
                reporter.report("e", {"i": i})
            ok = bus.flush(5)
            return f"{ok}:{[i for _, i in seen[start:]] == list(range(200, 205))}"

        return f"{flushed} {mine == list(range(100, 120))} {in_forked_child(grandchild)}"

    assert in_forked_child(child) == "True True True:True"
    assert seen == [(os.getpid(), i) for i in range(10)]
    for i in range(10, 15):
        reporter.report("e", {"i": i})
    assert bus.flush(ANSWER_BOUND)
    assert [i for _, i in seen] == list(range(15))
    record("fork: EventBus on the default loop", events=15 + 20 + 5, handled_twice=0, lost=0)


def test_event_bus_bound_to_parent_loop_refuses_in_child(lt: LoopThread) -> None:
    """An EventBus bound to a parent's LoopThread: report() in the child raises at once with a
    message that names the fork, whether or not the bus was used before fork()."""
    used = EventBus(lt)
    used.on("e", lambda event: None)
    used.reporter().report("e")
    assert used.flush(ANSWER_BOUND)
    unused = EventBus(lt)

    def child() -> str:
        answers = []
        for bus in (used, unused):
            started = time.monotonic()
            try:
                bus.reporter().report("e")
                answers.append("accepted")
            except (ChannelClosedError, LoopNotRunningError) as exc:
                fork = "fork" in str(exc)
                answers.append(f"{type(exc).__name__}:{fork}:{time.monotonic() - started < 1}")
        return " ".join(answers)

    assert in_forked_child(child) == "ChannelClosedError:True:True LoopNotRunningError:True:True"


def _count_lines(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        who = line.split()[0]
        counts[who] = counts.get(who, 0) + 1
    return counts


@pytest.mark.parametrize("bound", ["default", "parent-loop"])
def test_loop_handler_after_fork(tmp_path: Path, bound: str) -> None:
    """LoopHandler in a forked child: on the default loop it rebinds to the child's loop; bound
    to a parent's LoopThread it writes directly. Either way every line is written exactly once
    (parent lines by the parent, child lines by the child), and a grandchild works too."""
    target = tmp_path / "fork.log"
    file_handler = logging.FileHandler(target)
    file_handler.setFormatter(logging.Formatter("%(who)s %(message)s"))
    own = LoopThread("log-parent", metrics_registry=None).start() if bound != "default" else None
    handler = LoopHandler(file_handler, loop_thread=own)
    log = logging.getLogger(f"reliability.fork.{bound}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        for i in range(200):
            log.info("line %d", i, extra={"who": "parent"})
        handler.flush(ANSWER_BOUND)

        def child() -> str:
            for i in range(300):
                log.info("line %d", i, extra={"who": "child"})
            handler.flush(5)

            def grandchild() -> str:
                for i in range(50):
                    log.info("line %d", i, extra={"who": "grandchild"})
                handler.flush(5)
                return "ok"

            return f"{in_forked_child(grandchild)} {handler.stats().written_directly}"

        answer = in_forked_child(child)
        for i in range(200, 250):
            log.info("line %d", i, extra={"who": "parent"})
        handler.flush(ANSWER_BOUND)
    finally:
        log.removeHandler(handler)
        handler.close()
        file_handler.close()
        if own is not None:
            own.stop()
    grandchild_answer, direct = answer.split()
    assert grandchild_answer == "ok", answer
    if bound == "default":
        assert direct == "0"  # rebound to the child's default loop: nothing written directly
    else:
        assert int(direct) >= 300  # the parent's loop does not exist there: written directly
    assert _count_lines(target) == {"parent": 250, "child": 300, "grandchild": 50}
    record(f"fork: LoopHandler ({bound})", log_lines=600, written_twice=0, lost=0)


def test_enricher_chain_on_default_loop_in_child() -> None:
    """An EnricherChain on the default loop works in a forked child (it rebinds to the child's
    loop and runs startup there again)."""
    starts: list[int] = []

    class Enricher:
        async def startup(self) -> None:
            starts.append(os.getpid())

        async def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
            return {"pid": os.getpid()}

    chain = loopthread.EnricherChain([Enricher()], on_unavailable="raise")
    assert chain.enrich_sync({"a": 1}) == {"a": 1, "pid": os.getpid()}

    def child() -> str:
        got = chain.enrich_sync({"a": 2}, timeout=5)
        return f"{got == {'a': 2, 'pid': os.getpid()}} {starts.count(os.getpid())}"

    assert in_forked_child(child) == "True 1"
    assert chain.enrich_sync({"a": 3}) == {"a": 3, "pid": os.getpid()}
