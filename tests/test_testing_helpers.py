"""loopthread.testing's helpers for users' tests: stop_cleanly, wait_for, Recorder, record."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from loopthread import Channel, ChannelStats, EventBus, EventBusStats, LoopThread, testing


@pytest.fixture(name="own")
def fixture_own() -> Iterator[LoopThread]:
    """A LoopThread the test stops itself (with stop_cleanly); stopped anyway at teardown."""
    lt = LoopThread("helpers", metrics_registry=None).start()
    yield lt
    lt.stop()


async def forever() -> None:
    await asyncio.Event().wait()


# ---------------------------------------------------------------- stop_cleanly


def test_stop_cleanly_returns_the_report_of_a_clean_stop(own: LoopThread) -> None:
    """Work done, channel flushed: the report is returned, clean, and the thread is gone."""
    channel: Channel[int] = own.channel(lambda batch: None)
    channel.put(1)
    assert channel.flush(5)
    report = testing.stop_cleanly(own)
    assert report.clean
    assert not own.thread.is_alive()


def test_stop_cleanly_names_a_leaked_task(own: LoopThread) -> None:
    """A task left running is cancelled by the stop and named in the AssertionError."""
    tasks: list[asyncio.Task[None]] = []

    async def spawn() -> None:
        tasks.append(asyncio.get_running_loop().create_task(forever(), name="leaked"))

    own.run(spawn())
    with pytest.raises(AssertionError, match=r"(?s)did not stop cleanly.*'leaked' running forever"):
        testing.stop_cleanly(own, timeout=0.5)
    assert tasks[0].cancelled()


def test_stop_cleanly_judges_a_stop_already_made(own: LoopThread) -> None:
    """Called after the LoopThread was stopped, it checks the report of that stop."""
    own.submit(forever())
    assert not own.stop(0).clean
    with pytest.raises(AssertionError, match="cancelled by it"):
        testing.stop_cleanly(own)


def test_stop_cleanly_of_a_never_started_loop_thread_passes() -> None:
    """Nothing ran, nothing to leave behind."""
    assert testing.stop_cleanly(LoopThread("never", metrics_registry=None)).clean


# ---------------------------------------------------------------- wait_for


def test_wait_for_flushes_and_counts(lt: LoopThread) -> None:
    """Items put by a thread the test joined: wait_for returns once they were handled."""
    got: list[int] = []
    channel = lt.channel(got.extend)
    producer = threading.Thread(target=lambda: [channel.put(i) for i in range(50)])
    producer.start()
    producer.join()
    stats = testing.wait_for(channel, 50)
    assert isinstance(stats, ChannelStats)
    assert stats.handled == 50
    assert got == list(range(50))


def test_wait_for_says_when_too_few_went_through(lt: LoopThread) -> None:
    """Fewer items than expected: an AssertionError with the counts, not a silent pass."""
    channel: Channel[int] = lt.channel(lambda batch: None, name="short")
    channel.put(1)
    with pytest.raises(AssertionError, match=r"Channel 'short': 1 of 2 items went through"):
        testing.wait_for(channel, 2)


def test_wait_for_times_out_on_a_stuck_handler(lt: LoopThread) -> None:
    """A handler that does not finish: TimeoutError naming the channel."""
    release = threading.Event()

    async def held(batch: list[int]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    channel = lt.channel(held, name="stuck")
    channel.put(1)
    try:
        with pytest.raises(TimeoutError, match="Channel 'stuck' was not flushed within 0 s"):
            testing.wait_for(channel, 1, timeout=0)
    finally:
        release.set()
    assert testing.wait_for(channel, 1).handled == 1


def test_wait_for_an_event_bus_counts_events(lt: LoopThread) -> None:
    """On a bus, count is compared with the events that had a handler."""
    bus = EventBus(loop_thread=lt)
    bus.on("progress", lambda event: None)
    reporter = bus.reporter()
    for done in range(3):
        reporter.report("progress", {"done": done})
    stats = testing.wait_for(bus, 3)
    assert isinstance(stats, EventBusStats)
    assert stats.events == 3
    bus.close()


# ---------------------------------------------------------------- Recorder


def test_recorder_waits_for_items_put_later(lt: LoopThread) -> None:
    """wait_for(3) does not return with 2 items recorded; the third wakes it."""
    recorder: testing.Recorder[int] = testing.Recorder()
    channel = lt.channel(recorder)
    result: list[list[int]] = []
    waiter = threading.Thread(target=lambda: result.append(recorder.wait_for(3)))
    waiter.start()
    channel.put(0)
    channel.put(1)
    assert channel.flush(5)
    assert recorder.items == [0, 1]
    assert result == []  # two of three: still waiting
    channel.put(2)
    waiter.join(5)
    assert result == [[0, 1, 2]]


def test_recorder_timeout_shows_what_arrived(lt: LoopThread) -> None:
    """Too few items within the timeout: TimeoutError with the count and the items."""
    recorder: testing.Recorder[str] = testing.Recorder()
    channel = lt.channel(recorder)
    channel.put("only")
    assert channel.flush(5)
    with pytest.raises(TimeoutError, match=r"1 of 2 items arrived within 0 s: \['only'\]"):
        recorder.wait_for(2, timeout=0)


@pytest.mark.parametrize("kind", ["sync", "async", "raising"])
def test_recorder_wraps_a_handler(lt: LoopThread, kind: str) -> None:
    """The wrapped handler runs first; an item is recorded once its call returned or raised."""
    seen: list[int] = []

    def sync(batch: list[int]) -> None:
        seen.extend(batch)

    async def async_(batch: list[int]) -> None:
        await asyncio.sleep(0)
        seen.extend(batch)

    def raising(batch: list[int]) -> None:
        seen.extend(batch)
        raise RuntimeError("sink down")

    handler: Any = {"sync": sync, "async": async_, "raising": raising}[kind]
    recorder: testing.Recorder[int] = testing.Recorder(handler)
    channel = lt.channel(recorder)
    channel.put(7)
    assert recorder.wait_for(1) == [7]
    assert seen == [7]
    assert channel.flush(5)
    assert (channel.stats().handled, channel.stats().failed) == (
        (0, 1) if kind == "raising" else (1, 0)
    )


def test_record_subscribes_to_a_bus(lt: LoopThread) -> None:
    """record(bus, types...) gets the events of those types, reported from a worker thread."""
    bus = EventBus(loop_thread=lt)
    events = testing.record(bus, "progress", "done")
    reporter = bus.reporter()
    worker = threading.Thread(
        target=lambda: [reporter.report("progress", {"n": 1}), reporter.report("done")]
    )
    worker.start()
    assert events.wait_for(2) == [{"type": "progress", "n": 1}, {"type": "done"}]
    worker.join(5)
    bus.close()
