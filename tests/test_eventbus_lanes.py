"""The event bus's executor handlers (their lanes) at the edges: a stop that comes before the
first dispatch, interpreter exit, a handler that publishes into its own bus or closes it, a
bound method registered for several types, and each handler call's own context."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import structlog

from loopthread import ChannelClosedError, EventBus, LoopThread, testing

Event = dict[str, Any]

marker: contextvars.ContextVar[object] = contextvars.ContextVar("marker", default=None)


@pytest.fixture(name="bus")
def fixture_bus(lt: LoopThread) -> EventBus:
    """An EventBus on the test's own LoopThread."""
    return EventBus(lt)


def _held_bus(lt: LoopThread) -> tuple[EventBus, threading.Event]:
    """A bus whose channel is held by a loop handler of type "hold" until the returned gate
    opens (a worker waits on it: the loop goes on)."""
    bus = EventBus(lt)
    gate = threading.Event()

    async def hold(event: Event) -> None:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)

    bus.on("hold", hold)
    return bus, gate


# ---------------------------------------------------------------- stop before the first dispatch


@pytest.mark.parametrize("registered", ["before the first event", "after it", "during stop"])
def test_stop_before_the_first_dispatch_runs_executor_handlers(registered: str) -> None:
    """Events queued when stop() begins, before the bus dispatched any to an executor handler
    (its lane not used yet; or the handler registered while the loop stops), go through that
    handler in stop()'s drain: none is lost, none is a failure, nothing is unhandled."""
    lt = LoopThread("bus-stop-first", metrics_registry=None).start()
    bus, gate = _held_bus(lt)
    got: list[int] = []

    def save(event: Event) -> None:
        got.append(event["n"])

    if registered == "before the first event":
        bus.on("e", save, run_in="executor")
    bus.publish({"type": "hold"})  # the bus's channel (and its route) exist from here
    if registered == "after it":
        bus.on("e", save, run_in="executor")
    for n in range(50):
        bus.publish({"type": "e", "n": n})

    async def in_drain(deadline: float) -> None:  # runs in stop()'s drain phase
        if registered == "during stop":
            bus.on("e", save, run_in="executor")
        gate.set()

    testing.add_stop_hook(lt, in_drain)
    report = testing.stop_cleanly(lt, timeout=5)
    assert got == list(range(50))
    assert report.items_unhandled == 0
    stats = bus.stats()
    assert (stats.handler_calls, stats.handler_failures) == (51, 0)


def test_exit_runs_executor_handlers_of_a_default_loop_bus() -> None:
    """A short script: an executor handler on a default-loop bus, a few events, the end of
    the program. The exit drain runs the handler for each of them."""
    child = textwrap.dedent(
        """
        import json
        from loopthread import EventBus, _process
        bus = EventBus()
        got = []
        bus.on("e", lambda event: got.append(event["n"]), run_in="executor")
        for n in range(3):
            bus.publish({"type": "e", "n": n})
        def report():
            stats = bus.stats()
            print(json.dumps([got, stats.handler_failures, stats.channel.unhandled]), flush=True)
        _process.after_exit(report)
        """
    )
    for _ in range(3):  # the race the drain lost came most runs; three are enough to see it
        proc = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == "[[0, 1, 2], 0, 0]", proc.stderr


# ---------------------------------------------------------------- a handler using its own bus


def test_executor_handler_publishing_into_its_full_bus_does_not_deadlock(lt: LoopThread) -> None:
    """An executor handler that publishes follow-ups into its own bus while the bus and its
    lane are full: the dispatch waits for room in the lane, the lane for the handler; the
    handler's publish is admitted past maxsize (counted in over_limit), not a deadlock."""
    bus = EventBus(lt, maxsize=2)
    entered = threading.Event()
    gate = threading.Event()
    saved: testing.Recorder[Event] = testing.Recorder()

    def save(event: Event) -> None:
        if event["n"] == 0:
            entered.set()
            assert gate.wait(10)
        for k in range(4):  # more than the bus can hold while its dispatch waits
            bus.publish({"type": "saved", "n": event["n"] * 10 + k})

    bus.on("order", save, run_in="executor")
    bus.on("saved", saved.event)
    # 5 orders fill the lane (one call in flight, 2 waiting) and hold the dispatch at the
    # next one: then the bus's channel is not drained until the handler returns.
    producer = threading.Thread(
        target=lambda: [bus.publish({"type": "order", "n": n}) for n in range(5)]
    )
    producer.start()
    assert entered.wait(5)
    producer.join(10)
    assert not producer.is_alive()
    gate.set()
    # The follow-ups are published while the bus is flushed: wait for them, then flush.
    got = sorted(event["n"] for event in saved.wait_for(20, timeout=5))
    assert got == [n * 10 + k for n in range(5) for k in range(4)]
    assert bus.flush(timeout=5)
    stats = bus.stats().channel
    assert stats is not None
    assert stats.over_limit >= 1
    assert stats.handled == 25


def test_close_inside_an_executor_handler_returns(lt: LoopThread) -> None:
    """bus.close() called by an executor handler (a "shutdown" event) begins closing and
    returns; the events queued before it still reach their handlers, later ones are refused."""
    bus = EventBus(lt)
    gate = threading.Event()
    returned = threading.Event()
    got: list[int] = []

    def on_shutdown(event: Event) -> None:
        assert gate.wait(10)  # the events below are queued by then
        bus.close()  # no timeout: it used to wait for this very call
        returned.set()

    bus.on("shutdown", on_shutdown, run_in="executor")
    bus.on("e", lambda event: got.append(event["n"]), run_in="executor")
    bus.publish({"type": "shutdown"})
    for n in range(10):
        bus.publish({"type": "e", "n": n})
    gate.set()
    assert returned.wait(5)
    with pytest.raises(ChannelClosedError, match=r"bus\.publish\(\) after bus\.close\(\)"):
        bus.publish({"type": "e", "n": 99})
    report = testing.stop_cleanly(lt, timeout=5)
    assert report.items_unhandled == 0
    assert got == list(range(10))
    stats = bus.stats()
    assert stats.handler_calls == 11
    assert all(lane.closed and lane.unhandled == 0 for lane in stats.lanes)


def test_closed_bus_errors_name_the_call_made(bus: EventBus) -> None:
    """After bus.close(), each way of queueing an event says which call was refused."""
    bus.on("e", lambda event: None)
    bus.publish({"type": "e"})
    bus.close(timeout=5)
    reporter = bus.reporter()
    with pytest.raises(ChannelClosedError, match=r"reporter\.report\(\) after bus\.close\(\)"):
        reporter.report("e")
    with pytest.raises(ChannelClosedError, match=r"reporter\.publish\(\) after bus\.close\(\)"):
        reporter.publish({"type": "e"})
    with pytest.raises(ChannelClosedError, match=r"bus\.publish\(\) after bus\.close\(\)"):
        bus.publish({"type": "e"})
    unused = EventBus()  # never bound to a loop: closed before its first event
    unused.close()
    with pytest.raises(ChannelClosedError, match=r"reporter\.report\(\) after bus\.close\(\)"):
        unused.reporter().report("e")


# ---------------------------------------------------------------- one lane per handler


class _Sink:
    """A sink whose bound method is registered for two event types."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()

    def save(self, event: Event) -> None:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        self.order.append(event["n"])
        with self._lock:
            self.active -= 1


def test_a_bound_method_for_two_types_has_one_lane(bus: EventBus) -> None:
    """sink.save registered for "a" and "b" (a new bound-method object each time) is one
    handler: one lane, one call at a time, events of both types in the order published."""
    sink = _Sink()
    bus.on("a", sink.save, run_in="executor")
    bus.on("b", sink.save, run_in="executor")
    for n in range(200):
        bus.publish({"type": "a" if n % 2 else "b", "n": n})
    assert bus.flush(timeout=10)
    assert [lane.name for lane in bus.stats().lanes] == [f"{bus.name}/executor-1"]
    assert sink.order == list(range(200))
    assert sink.most == 1


# ---------------------------------------------------------------- each handler call's context


@pytest.mark.parametrize("kind", ["loop", "async", "executor"])
def test_a_handlers_variables_do_not_reach_other_events(lt: LoopThread, kind: str) -> None:
    """A handler that sets a contextvar (structlog's bind_contextvars, say) and never resets
    it: the next events' handlers, from the same thread or another, in the same batch or a
    later one, do not see it; each sees its reporter's context only."""
    bus, gate = _held_bus(lt)
    seen: list[tuple[int, object]] = []

    def look_then_set(event: Event) -> None:
        seen.append((event["n"], marker.get()))
        marker.set(f"set by the handler of {event['n']}")

    async def look_then_set_async(event: Event) -> None:
        await asyncio.sleep(0)
        look_then_set(event)

    if kind == "async":
        bus.on("order", look_then_set_async)
    else:
        bus.on("order", look_then_set, run_in=kind)
    bus.on_any(lambda event: seen.append((-event.get("n", 0) - 1, marker.get())))
    bus.publish({"type": "hold"})

    def worker(t: int) -> None:
        reporter = bus.reporter()
        for n in range(3):
            reporter.report("order", {"n": t * 100 + n})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.set()  # the six events go through as one batch
    bus.publish({"type": "order", "n": 7})  # and one in a later batch
    assert bus.flush(timeout=5)
    assert len(seen) == 2 * 7 + 1
    assert [entry for entry in seen if entry[1] is not None] == []


def test_several_handlers_of_one_event_each_get_a_fresh_context(bus: EventBus) -> None:
    """Two handlers of one event: what the first sets is not seen by the second."""
    seen: list[object] = []

    def first(event: Event) -> None:
        marker.set("first")

    bus.on("e", first)
    bus.on("e", lambda event: seen.append(marker.get()))
    with structlog.testing.capture_logs():
        bus.publish({"type": "e"})
        assert bus.flush(timeout=5)
    assert seen == [None]


# ---------------------------------------------------------------- a deadline mid-batch


def test_stop_cutting_an_executor_batch_counts_each_event_once() -> None:
    """stop() reaching its deadline while an executor handler is in the middle of a batch:
    the handler stops after the event it is in, and every event is either handled (it ran)
    or counted unhandled (it did not), never both: the worker does not go on with the batch
    after the count."""
    lt = LoopThread("bus-cut-batch", metrics_registry=None, cancel_grace=0.4).start()
    bus = EventBus(lt)
    ran: list[int] = []
    started = threading.Event()

    def save(event: Event) -> None:
        started.set()
        time.sleep(0.001)  # the handler's work: 2 s for all, far more than stop() allows
        ran.append(event["n"])

    bus.on("e", save, run_in="executor")
    for n in range(2000):
        bus.publish({"type": "e", "n": n})
    assert started.wait(5)
    with structlog.testing.capture_logs():
        report = lt.stop(timeout=0.5)
    (lane,) = bus.stats().lanes
    assert report.finished
    assert lane.unhandled > 0  # the deadline did cut it
    assert len(ran) == lane.handled
    assert lane.handled + lane.unhandled == 2000
    assert report.items_unhandled == lane.unhandled
    assert ran == list(range(len(ran)))
