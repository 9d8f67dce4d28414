"""The event bus: ready-made events (publish), catch-all handlers, executor handlers, and each
event's handlers in the context of the code that reported it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopthread import EventBus, LoopThread, WouldDeadlockError, testing

Event = dict[str, Any]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


@pytest.fixture(name="bus")
def fixture_bus(lt: LoopThread) -> EventBus:
    """An EventBus on the test's own LoopThread."""
    return EventBus(lt)


# ---------------------------------------------------------------- publish


def test_publish_takes_a_ready_made_event(bus: EventBus) -> None:
    """bus.publish(event) and reporter.publish(event) deliver the dict as it is (a copy)."""
    got: list[Event] = []
    bus.on("progress", got.append)
    event = {"type": "progress", "done": 3, "tags": ["a"]}
    assert bus.publish(event) is True
    event["done"] = 4  # the caller may change its dict afterwards
    assert bus.reporter().publish({"type": "progress", "done": 5}) is True
    assert bus.flush(timeout=5)
    assert got == [{"type": "progress", "done": 3, "tags": ["a"]}, {"type": "progress", "done": 5}]
    assert got[0] is not event


def test_publish_refuses_what_is_not_an_event(bus: EventBus) -> None:
    """A non-mapping, a missing type and a non-str type fail at the call, saying what to do."""
    with pytest.raises(TypeError, match=r"mapping with a 'type' key.*got list"):
        bus.publish([("type", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no 'type' key \(its keys: \['done'\]\)"):
        bus.publish({"done": 3})
    with pytest.raises(TypeError, match=r"event\['type'\] must be a str.*got int 7"):
        bus.publish({"type": 7})
    with pytest.raises(ValueError, match=r"use publish\(event\)"):
        bus.reporter().report("x", {"type": "y"})
    assert bus.stats().channel is None  # nothing was queued


def test_publish_has_the_bus_overflow_policy(lt: LoopThread) -> None:
    """publish() is accounted and back-pressured as report(): drop_newest refuses when full."""
    gate = threading.Event()
    entered = threading.Event()

    def hold(event: Event) -> None:
        entered.set()
        assert gate.wait(10)

    bus = EventBus(lt, maxsize=1, overflow="drop_newest")
    bus.on("e", hold, run_in="executor")
    bus.on("f", lambda event: None)
    try:
        assert bus.publish({"type": "e"})
        assert entered.wait(5)
        # The lane holds 1 (its maxsize): the dispatch waits for room, so the bus fills up.
        assert bus.publish({"type": "e"})
        results = [bus.publish({"type": "f", "n": n}) for n in range(20)]
    finally:
        gate.set()
    assert bus.flush(timeout=5)
    assert False in results
    stats = bus.stats()
    assert stats.channel is not None
    assert stats.channel.dropped == results.count(False)
    assert stats.channel.put == 22


# ---------------------------------------------------------------- catch-all


def test_catch_all_gets_every_event_after_the_typed_handlers(bus: EventBus) -> None:
    """on_any(handler) sees every type, after the event's typed handlers; an event that only a
    catch-all handler takes is not unknown."""
    calls: list[tuple[str, str]] = []
    bus.on("a", lambda event: calls.append(("typed a", event["type"])))
    bus.on_any(lambda event: calls.append(("any 1", event["type"])))
    bus.on_any(lambda event: calls.append(("any 2", event["type"])))
    bus.on("b", lambda event: calls.append(("typed b", event["type"])))
    bus.publish({"type": "a"})
    bus.publish({"type": "b"})
    bus.publish({"type": "c"})
    assert bus.flush(timeout=5)
    assert calls == [
        ("typed a", "a"),
        ("any 1", "a"),
        ("any 2", "a"),
        ("typed b", "b"),
        ("any 1", "b"),
        ("any 2", "b"),
        ("any 1", "c"),
        ("any 2", "c"),
    ]
    stats = bus.stats()
    assert (stats.events, stats.unknown) == (3, 0)


def test_handlers_added_at_run_time_from_threads(bus: EventBus) -> None:
    """Handlers registered by several threads while events flow are all kept, and each sees
    every event dispatched after its registration returned."""
    reporter = bus.reporter()
    stop = threading.Event()
    recorders = [testing.Recorder[Event]() for _ in range(8)]

    def flow() -> None:
        while not stop.is_set():
            reporter.report("noise")

    def register(recorder: testing.Recorder[Event]) -> None:
        bus.on_any(recorder.event)

    producer = threading.Thread(target=flow)
    producer.start()
    try:
        threads = [threading.Thread(target=register, args=(r,)) for r in recorders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        producer.join()
    reporter.report("after")
    assert bus.flush(timeout=10)
    for recorder in recorders:
        assert recorder.items[-1] == {"type": "after"}


def test_record_without_types_records_every_event(bus: EventBus) -> None:
    """testing.record(bus) subscribes to every event."""
    events = testing.record(bus)
    bus.publish({"type": "x"})
    bus.reporter().report("y")
    assert events.wait_for(2, timeout=5) == [{"type": "x"}, {"type": "y"}]


def test_bad_registrations_fail_at_the_call(bus: EventBus) -> None:
    """Bad handlers and options fail in on()/on_any(), with the right call in the message."""

    async def handle(event: Event) -> None:
        pass

    with pytest.raises(ValueError, match="run_in must be one of 'loop', 'executor'"):
        bus.on("x", print, run_in="thread")
    with pytest.raises(TypeError, match=r"is async: run_in='executor' runs a plain function"):
        bus.on("x", handle, run_in="executor")
    with pytest.raises(TypeError, match=r"is async.*bus\.on_any\(handler\)"):
        bus.on_any(handle, run_in="executor")
    coroutine = handle({})
    with pytest.raises(
        TypeError, match=r"bus\.on_any\(handle\), not bus\.on_any\(handle\(\.\.\.\)\)"
    ):
        bus.on_any(coroutine)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        bus.on_any(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- run_in="executor"


def test_executor_handler_runs_off_the_loop_and_does_not_stall_it(
    lt: LoopThread, bus: EventBus
) -> None:
    """A blocking executor handler: the loop answers lt.run and the loop handlers of later
    events run while it is blocked on an Event the test holds."""
    entered = threading.Event()
    release = threading.Event()
    where: list[threading.Thread] = []
    loop_seen: list[int] = []

    def save(event: Event) -> None:
        where.append(threading.current_thread())
        entered.set()
        assert release.wait(10)

    bus.on("save", save, run_in="executor")
    bus.on("tick", lambda event: loop_seen.append(event["n"]))
    bus.publish({"type": "save"})
    assert entered.wait(5)
    try:
        assert lt.run(asyncio.sleep(0, "free"), timeout=5) == "free"
        for n in range(3):
            bus.publish({"type": "tick", "n": n})
        assert bus.stats().channel is not None
        assert bus.flush(timeout=0.2) is False  # the executor handler has not returned
        assert loop_seen == [0, 1, 2]  # ... but the other handlers went on
    finally:
        release.set()
    assert bus.flush(timeout=5)
    assert where[0] is not lt.thread
    assert bus.stats().handler_calls == 4


def test_flush_waits_for_executor_handlers(bus: EventBus) -> None:
    """flush() returns True only once every executor handler call for earlier events ended."""
    done: list[int] = []

    def slow(event: Event) -> None:
        time.sleep(0.001)
        done.append(event["n"])

    bus.on("n", slow, run_in="executor")
    reporter = bus.reporter()
    for n in range(50):
        reporter.report("n", {"n": n})
    assert bus.flush(timeout=10)
    assert done == list(range(50))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60),
    producers=st.integers(1, 3),
)
def test_executor_handlers_keep_order_one_call_at_a_time(
    lt: LoopThread, events: list[tuple[str, bool]], producers: int
) -> None:
    """Per executor handler: never two calls at once, events in report order per producer
    (one handler registered for two types keeps one lane), each exactly once, failures
    counted and isolated."""
    bus = EventBus(lt)
    lock = threading.Lock()
    running: dict[str, int] = {"ab": 0, "c": 0}
    most: dict[str, int] = {"ab": 0, "c": 0}
    seen: dict[str, list[tuple[int, int]]] = {"ab": [], "c": []}

    def make(name: str) -> Any:
        def handler(event: Event) -> None:
            with lock:
                running[name] += 1
                most[name] = max(most[name], running[name])
            try:
                time.sleep(0)
                seen[name].append((event["p"], event["i"]))
                if event["fail"]:
                    raise ValueError("fails on purpose")
            finally:
                with lock:
                    running[name] -= 1

        return handler

    ab = make("ab")
    bus.on("a", ab, run_in="executor")
    bus.on("b", ab, run_in="executor")
    bus.on("c", make("c"), run_in="executor")

    def produce(p: int) -> None:
        reporter = bus.reporter()
        for i, (event_type, fail) in enumerate(events):
            reporter.report(event_type, {"p": p, "i": i, "fail": fail})

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    with structlog.testing.capture_logs():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bus.flush(timeout=10)
    bus.close(timeout=5)
    assert most["ab"] <= 1
    assert most["c"] <= 1
    for name, types in (("ab", "ab"), ("c", "c")):
        expected = [i for i, (t, _) in enumerate(events) if t in types]
        for p in range(producers):
            assert [i for q, i in seen[name] if q == p] == expected
    stats = bus.stats()
    assert stats.handler_calls == len(events) * producers
    assert stats.handler_failures == sum(fail for _, fail in events) * producers
    # One lane per executor handler that got an event (a lane opens on first use).
    assert len(stats.lanes) == len({"ab" if t in "ab" else "c" for t, _ in events})


def test_executor_handler_failures_are_isolated_and_logged(bus: EventBus) -> None:
    """An executor handler that raises (even KeyboardInterrupt) is counted and logged; its
    later events and the other handlers go on. One that returns an awaitable is a failure."""
    got: list[int] = []

    def broken(event: Event) -> None:
        if event["n"] == 0:
            raise KeyboardInterrupt("isolated like any fault")
        got.append(event["n"])

    def returns_a_coroutine(event: Event) -> Any:
        return asyncio.sleep(0)

    bus.on("n", broken, run_in="executor")
    bus.on("n", returns_a_coroutine, run_in="executor")
    with structlog.testing.capture_logs() as logs:
        for n in range(3):
            bus.publish({"type": "n", "n": n})
        assert bus.flush(timeout=5)
    assert got == [1, 2]
    stats = bus.stats()
    assert (stats.handler_calls, stats.handler_failures) == (6, 4)
    failures = [log for log in logs if log["event"] == "event_bus.handler_failed"]
    assert {log["handler"].rsplit(".", 1)[-1] for log in failures} == {
        "broken",
        "returns_a_coroutine",
    }
    assert any("returned an awaitable" in str(log["exc_info"]) for log in failures)


def test_flush_inside_an_executor_handler_raises(bus: EventBus) -> None:
    """bus.flush() inside one of the bus's executor handlers would wait for itself."""
    errors: list[BaseException] = []

    def handler(event: Event) -> None:
        try:
            bus.flush(timeout=5)
        except WouldDeadlockError as exc:
            errors.append(exc)

    bus.on("x", handler, run_in="executor")
    bus.publish({"type": "x"})
    assert bus.flush(timeout=5)
    assert len(errors) == 1


def test_close_drains_executor_handlers(lt: LoopThread) -> None:
    """close() runs the executor handlers for every queued event, then refuses more."""
    bus = EventBus(lt)
    got: list[int] = []
    bus.on("n", lambda event: got.append(event["n"]), run_in="executor")
    for n in range(100):
        bus.publish({"type": "n", "n": n})
    bus.close(timeout=5)
    assert got == list(range(100))
    (lane,) = bus.stats().lanes
    assert (lane.name, lane.handled, lane.closed) == (f"{bus.name}/executor-1", 100, True)


def test_stop_drains_the_bus_then_its_executor_handlers(lt: LoopThread) -> None:
    """At stop, events still queued in the bus reach executor handlers: a lane closes only once
    the bus's channel finished. Nothing is unhandled."""
    loop_gate: asyncio.Event | None = None
    worker_gate = threading.Event()
    got: list[int] = []

    async def make_gate() -> None:
        nonlocal loop_gate
        loop_gate = asyncio.Event()

    lt.run(make_gate())
    assert loop_gate is not None

    async def held(event: Event) -> None:  # holds the bus's channel until stop began
        assert loop_gate is not None
        await loop_gate.wait()

    def save(event: Event) -> None:
        worker_gate.wait(10)
        got.append(event["n"])

    async def open_gates(deadline: float) -> None:  # runs in stop()'s drain phase
        assert loop_gate is not None
        loop_gate.set()
        worker_gate.set()

    bus = EventBus(lt)
    bus.on("hold", held)
    bus.on("n", save, run_in="executor")
    bus.publish({"type": "n", "n": -1})  # the lane exists and its handler waits
    bus.publish({"type": "hold"})
    for n in range(20):
        bus.publish({"type": "n", "n": n})
    testing.add_stop_hook(lt, open_gates)
    report = testing.stop_cleanly(lt, timeout=5)
    assert report.items_unhandled == 0
    assert got == list(range(-1, 20))


def test_stop_with_a_stuck_executor_handler_is_bounded() -> None:
    """A bus handler that never returns cannot hang stop(): it returns by its deadline (plus
    the executor's bounded join) and counts the events the handler never finished."""
    lt = LoopThread("bus-stuck-executor", cancel_grace=0.2).start()
    bus = EventBus(lt)
    entered = threading.Event()
    never = threading.Event()

    def stuck(event: Event) -> None:
        entered.set()
        never.wait(30)

    bus.on("s", stuck, run_in="executor")
    try:
        for _ in range(3):
            bus.publish({"type": "s"})
        assert entered.wait(5)
        with structlog.testing.capture_logs():
            started = time.monotonic()
            report = lt.stop(timeout=0.5)
            took = time.monotonic() - started
        assert took < 0.5 + 0.25 + 0.5, report  # deadline + stop's slack + the join's bound
        assert report.items_unhandled == 3
        assert report.abandoned >= 1
        (lane,) = bus.stats().lanes
        assert lane.unhandled == 3
    finally:
        never.set()


# ---------------------------------------------------------------- context


@pytest.mark.parametrize("run_in", ["loop", "executor"])
def test_each_event_runs_in_its_reporters_context(lt: LoopThread, run_in: str) -> None:
    """4 threads x 25 events, each thread with its own request id: every handler (typed sync,
    typed async, catch-all; on the loop or in the executor) sees the id of the thread that
    reported that event, never another one's nor the bus creator's."""
    token = request_id.set("creator")
    try:
        bus = EventBus(lt)
    finally:
        request_id.reset(token)
    seen: list[tuple[str, str, str | None]] = []
    lock = threading.Lock()

    def record(kind: str, event: Event) -> None:
        with lock:
            seen.append((kind, event["rid"], request_id.get()))

    async def typed_async(event: Event) -> None:
        await asyncio.sleep(0)
        record("async", event)

    bus.on("job", lambda event: record("sync", event), run_in=run_in)
    if run_in == "loop":
        bus.on("job", typed_async)
    bus.on_any(lambda event: record("any", event), run_in=run_in)

    def work(rid: str) -> None:
        request_id.set(rid)
        reporter = bus.reporter()
        for n in range(25):
            if n % 2:
                reporter.report("job", {"rid": rid, "n": n})
            else:
                bus.publish({"type": "job", "rid": rid, "n": n})

    threads = [threading.Thread(target=work, args=(f"req-{t}",)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bus.flush(timeout=10)
    kinds = 3 if run_in == "loop" else 2
    assert len(seen) == 100 * kinds
    wrong = [entry for entry in seen if entry[1] != entry[2]]
    assert wrong == []
