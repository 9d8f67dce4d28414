"""The event bus: typed events from worker threads to handlers on the loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
import structlog

import loopthread
from loopthread import ChannelClosedError, EventBus, LoopThread, Reporter

Event = dict[str, Any]


@pytest.fixture(name="bus")
def fixture_bus(lt: LoopThread) -> EventBus:
    """An EventBus on the test's own LoopThread."""
    return EventBus(lt)


def test_handlers_get_typed_event_dicts(bus: EventBus) -> None:
    """A handler receives {"type": event_type, **data}, in report order."""
    got: list[Event] = []

    async def on_progress(event: Event) -> None:
        got.append(event)

    bus.on("progress", on_progress)
    reporter = bus.reporter()
    assert isinstance(reporter, Reporter)
    for done in range(3):
        assert reporter.report("progress", {"done": done}) is True
    assert reporter.report("progress") is True
    assert bus.flush(timeout=5)
    assert got == [
        {"type": "progress", "done": 0},
        {"type": "progress", "done": 1},
        {"type": "progress", "done": 2},
        {"type": "progress"},
    ]


def test_several_handlers_per_type(bus: EventBus) -> None:
    """Every handler of a type runs, in registration order, each with its own copy."""
    calls: list[tuple[str, Event]] = []

    async def first(event: Event) -> None:
        event["seen_by"] = "first"  # must not leak into the next handler's event
        calls.append(("first", event))

    def second(event: Event) -> None:
        calls.append(("second", event))

    bus.on("job", first)
    bus.on("job", second)
    bus.reporter().report("job", {"id": 7})
    assert bus.flush(timeout=5)
    assert calls == [
        ("first", {"type": "job", "id": 7, "seen_by": "first"}),
        ("second", {"type": "job", "id": 7}),
    ]
    assert bus.stats().handler_calls == 2


def test_unknown_types_counted_and_ignored(bus: EventBus) -> None:
    """Events of a type nobody handles are counted, and the bus goes on."""
    got: list[Event] = []
    bus.on("known", got.append)
    reporter = bus.reporter()
    reporter.report("unknown", {"x": 1})
    reporter.report("known", {"x": 2})
    reporter.report("also-unknown")
    assert bus.flush(timeout=5)
    assert got == [{"type": "known", "x": 2}]
    stats = bus.stats()
    assert (stats.unknown, stats.events) == (2, 1)


def test_failing_handler_is_isolated(bus: EventBus) -> None:
    """A handler that raises is logged and counted; the others, and later events, still run."""
    got: list[int] = []

    async def broken(event: Event) -> None:
        raise RuntimeError("broken handler")

    def sync_broken(event: Event) -> None:
        raise KeyError("also broken")

    bus.on("tick", broken)
    bus.on("tick", sync_broken)
    bus.on("tick", lambda event: got.append(event["n"]))
    reporter = bus.reporter()
    with structlog.testing.capture_logs() as logs:
        for n in range(3):
            reporter.report("tick", {"n": n})
        assert bus.flush(timeout=5)
    assert got == [0, 1, 2]
    stats = bus.stats()
    assert stats.handler_failures == 6
    assert stats.channel is not None
    assert stats.channel.failed == 0  # isolation happens per handler, not per batch
    failures = [log for log in logs if log["event"] == "event_bus.handler_failed"]
    assert {log["handler"] for log in failures} >= {
        "test_failing_handler_is_isolated.<locals>.broken",
        "test_failing_handler_is_isolated.<locals>.sync_broken",
    }


def test_sync_handlers_run_on_the_loop_thread(lt: LoopThread, bus: EventBus) -> None:
    """Plain handlers run on the loop thread, not on the reporting worker thread."""
    threads: list[int] = []
    bus.on("where", lambda event: threads.append(threading.get_ident()))
    worker = threading.Thread(target=lambda: bus.reporter().report("where"))
    worker.start()
    worker.join()
    assert bus.flush(timeout=5)
    assert threads == [lt.thread.ident]


def test_many_worker_threads(bus: EventBus) -> None:
    """Reporters shared by several workers deliver every event."""
    counts: dict[int, int] = {}

    def count(event: Event) -> None:
        counts[event["worker"]] = counts.get(event["worker"], 0) + 1

    bus.on("step", count)
    reporter = bus.reporter()

    def work(worker: int) -> None:
        for step in range(2000):
            reporter.report("step", {"worker": worker, "step": step})

    workers = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert bus.flush(timeout=10)
    assert counts == {0: 2000, 1: 2000, 2: 2000, 3: 2000}


def test_data_is_copied_at_report(bus: EventBus) -> None:
    """The caller may change its data dict after report(): the event keeps the old values."""
    got: list[Event] = []
    bus.on("state", got.append)
    data = {"value": 1}
    bus.reporter().report("state", data)
    data["value"] = 2
    assert bus.flush(timeout=5)
    assert got == [{"type": "state", "value": 1}]


def test_bad_reports_fail_at_the_call(bus: EventBus) -> None:
    """Wrong arguments raise at report(), with the right call in the message."""
    reporter = bus.reporter()
    with pytest.raises(TypeError, match="event_type must be a str"):
        reporter.report(42, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        reporter.report("x", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'type' key"):
        reporter.report("x", {"type": "y"})

    async def handle(event: Event) -> None:
        pass

    coroutine = handle({})
    with pytest.raises(TypeError, match="coroutine"):
        bus.on("x", coroutine)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow"):
        EventBus(overflow="never")
    with pytest.raises(TypeError, match="LoopThread"):
        EventBus("loop")  # type: ignore[arg-type]


def test_close_drains_then_refuses(bus: EventBus) -> None:
    """close() runs the handlers for queued events; report() afterwards raises."""
    got: list[int] = []
    bus.on("n", lambda event: got.append(event["n"]))
    reporter = bus.reporter()
    for n in range(10):
        reporter.report("n", {"n": n})
    bus.close(timeout=5)
    assert got == list(range(10))
    with pytest.raises(ChannelClosedError):
        reporter.report("n", {"n": 10})
    bus.close()


def test_unused_bus_flushes_and_closes(lt: LoopThread) -> None:
    """A bus that never got an event opens no channel; flush and close are no-ops."""
    bus = EventBus(lt)
    assert bus.flush(timeout=1)
    assert bus.stats().channel is None
    bus.close()
    with pytest.raises(ChannelClosedError, match="closed"):
        bus.reporter().report("late")


def test_aflush_on_loop(lt: LoopThread, bus: EventBus) -> None:
    """await bus.aflush() inside a coroutine on the loop waits for earlier events."""
    got: list[Event] = []
    bus.on("a", got.append)

    async def report_and_flush() -> int:
        bus.reporter().report("a")
        assert await bus.aflush(timeout=5)
        return len(got)

    assert lt.run(report_and_flush(), timeout=5) == 1


def test_default_loop_bus() -> None:
    """EventBus() with no loop uses loopthread.default(), looked up at the first report."""
    bus = EventBus()
    assert bus.stats().channel is None  # nothing started yet
    threads: list[int] = []
    bus.on("where", lambda event: threads.append(threading.get_ident()))
    bus.reporter().report("where")
    assert bus.flush(timeout=5)
    assert threads == [loopthread.default().thread.ident]
    bus.close(timeout=5)


def test_default_loop_bus_follows_a_replaced_default() -> None:
    """When the default loop is stopped, the next report moves to the new default loop."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import loopthread, threading
                bus = loopthread.EventBus()
                seen = []
                bus.on("e", lambda event: seen.append(threading.get_ident()))
                bus.reporter().report("e")
                assert bus.flush(timeout=5)
                first = loopthread.default()
                first.stop()
                bus.reporter().report("e")
                assert bus.flush(timeout=5)
                print("RESULT", len(seen), loopthread.default() is not first)
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 2 True" in proc.stdout.splitlines()


def test_exit_delivers_reported_events() -> None:
    """Events reported by a worker just before the program ends reach their handler."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import asyncio, sys, threading, loopthread
                bus = loopthread.EventBus()
                total = 0
                async def on_step(event):
                    global total
                    await asyncio.sleep(0)
                    total += 1
                    if total % 1000 == 0:
                        sys.stdout.write(f"handled {total}\\n")
                        sys.stdout.flush()
                bus.on("step", on_step)
                reporter = bus.reporter()
                worker = threading.Thread(
                    target=lambda: [reporter.report("step", {"i": i}) for i in range(5000)]
                )
                worker.start()
                worker.join()
                print("main returns", flush=True)
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    handled = [line for line in proc.stdout.splitlines() if line.startswith("handled ")]
    assert handled[-1] == "handled 5000"


def test_handler_cancellation_of_its_own_is_a_failure(bus: EventBus) -> None:
    """A handler that raises CancelledError by itself is a failed handler, not a stop."""
    got: list[Event] = []

    async def cancels(event: Event) -> None:
        raise asyncio.CancelledError

    bus.on("c", cancels)
    bus.on("c", got.append)
    with structlog.testing.capture_logs():
        bus.reporter().report("c")
        assert bus.flush(timeout=5)
    assert len(got) == 1
    assert bus.stats().handler_failures == 1


def test_stop_mid_batch_counts_dispatched_events_as_handled() -> None:
    """stop() cancelling a batch part way: the events whose handlers ran count as handled,
    only the rest as unhandled, in the channel's stats and in the ShutdownReport alike."""
    lt = LoopThread("bus-stop-mid-batch", cancel_grace=0.2).start()
    bus = EventBus(lt)
    held = threading.Event()
    release = threading.Event()
    hanging = threading.Event()
    ran: list[int] = []

    async def hold(event: Event) -> None:
        held.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)

    async def fast(event: Event) -> None:
        ran.append(event["n"])

    async def hang(event: Event) -> None:
        hanging.set()
        await asyncio.Event().wait()

    bus.on("hold", hold)
    bus.on("fast", fast)
    bus.on("hang", hang)
    reporter = bus.reporter()
    reporter.report("hold")
    assert held.wait(5)
    # Queued while the consumer is held, these four reach the handlers as one batch.
    reporter.report("fast", {"n": 1})
    reporter.report("fast", {"n": 2})
    reporter.report("hang")
    reporter.report("fast", {"n": 3})
    release.set()
    assert hanging.wait(5)
    with structlog.testing.capture_logs():
        report = lt.stop(timeout=0.5)
    stats = bus.stats().channel
    assert stats is not None
    assert ran == [1, 2]
    assert (stats.handled, stats.unhandled) == (3, 2)  # hold, fast 1, fast 2 | hang, fast 3
    assert report.items_unhandled == 2
