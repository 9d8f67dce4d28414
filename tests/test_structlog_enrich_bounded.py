"""``loopthread.structlog.enrich`` never holds a log call past its timeout, never waits in a
thread that runs an event loop, and lets loopthread's own events through (issue 12, item 4).

structlog is configured as its documentation recommends for production (JSON lines through a
``PrintLogger``), with ``enrich()`` before the renderer.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import structlog

from loopthread import EnricherChain, LoopThread
from loopthread.structlog import enrich

# What a log call may cost on top of its timeout: the hand-off, the wake-up after the wait,
# rendering the event and loopthread's one "degraded" warning. Measured well under 5 ms
# (perf/bench_enrich.py); the bound leaves room for a loaded CI machine.
SLACK = 0.1

Configure = Callable[[Sequence[Any], int], io.StringIO]


@pytest.fixture(name="configure")
def fixture_configure() -> Iterator[Configure]:
    """``configure(processors, level)``: structlog's recommended JSON setup, ``processors``
    placed before the renderer; returns the stream the lines go to."""

    def configure(processors: Sequence[Any], level: int = logging.INFO) -> io.StringIO:
        out = io.StringIO()
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.StackInfoRenderer(),
                structlog.dev.set_exc_info,
                structlog.processors.TimeStamper(fmt="iso"),
                *processors,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(out),
            cache_logger_on_first_use=False,
        )
        return out

    yield configure
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def region(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"region": "eu-west"}


def test_a_log_call_on_a_busy_loop_returns_within_its_timeout(configure: Configure) -> None:
    """The loop is busy (a callback blocks it): a log call with ``timeout=0.05`` returns after
    about 50 ms, not after ``cancel_grace`` (1 s) twice over (it took 2.1 s: the wait for
    the cancellation, then loopthread's "degraded" warning through the same processor)."""
    lt = LoopThread("busy-loop", cancel_grace=1.0).start()
    chain = EnricherChain([region], loop_thread=lt)
    processor = enrich(chain, timeout=0.05)
    out = configure([processor], logging.INFO)
    log = structlog.get_logger()
    gate = threading.Event()
    blocked = threading.Event()

    async def busy() -> None:
        blocked.set()
        gate.wait(10)  # blocks the loop thread: the loop runs nothing else meanwhile

    blocker = lt.submit(busy())
    try:
        assert blocked.wait(5)
        started = time.perf_counter()
        log.info("checkout", order=1)
        elapsed = time.perf_counter() - started
    finally:
        gate.set()
        blocker.result(5)
        lt.stop(5)
    assert elapsed < 0.05 + SLACK, elapsed
    records = lines(out)
    assert [r["event"] for r in records] == ["enricher_chain.degraded", "checkout"]
    assert all("region" not in r for r in records)
    assert "TimeoutError" in records[0]["reason"]
    stats = processor.stats()
    assert (stats.events, stats.degraded, stats.timeouts, stats.own_events) == (1, 1, 1, 1)
    assert chain.stats().degraded == 1


def test_in_async_code_it_degrades_at_once_without_waiting(
    lt: LoopThread, configure: Configure
) -> None:
    """50 log calls from a coroutine (a running loop in the calling thread) take less than one
    timeout in all (they took 633 ms): none waits, none is sent to the chain, all counted."""
    entered = threading.Event()

    async def never(event: Mapping[str, Any]) -> dict[str, Any]:
        entered.set()  # pragma: no cover - must not be called
        await asyncio.Event().wait()  # pragma: no cover
        return {}  # pragma: no cover

    chain = EnricherChain([never], loop_thread=lt, timeout=None)
    processor = enrich(chain, timeout=0.05)
    out = configure([processor], logging.INFO)
    log = structlog.get_logger()

    async def handler() -> float:
        started = time.perf_counter()
        for n in range(50):
            log.info("request", n=n)
        return time.perf_counter() - started

    elapsed = asyncio.run(handler())
    assert elapsed < 0.05, elapsed
    records = lines(out)
    requests = [r for r in records if r["event"] == "request"]
    assert [r["n"] for r in requests] == list(range(50))
    warnings = [r for r in records if r["event"] == "enricher_chain.degraded"]
    assert len(warnings) == 1  # rate-limited, with the way out in the reason
    assert "await chain.enrich" in warnings[0]["reason"]
    stats = processor.stats()
    assert (stats.events, stats.degraded, stats.in_event_loop) == (50, 50, 50)
    assert chain.stats().events == 0
    assert not entered.is_set()


def test_loopthread_s_own_events_pass_through_untouched(configure: Configure) -> None:
    """With enrich() configured and every level shown, a LoopThread's start and stop log no
    warning (its "started" event, logged on the loop thread, used to degrade with
    WouldDeadlockError) and its lifecycle events are not enriched; the application's are."""
    lt = LoopThread("own-events")
    chain = EnricherChain([region], loop_thread=lt)
    processor = enrich(chain, timeout=1.0)
    out = configure([processor], logging.DEBUG)
    lt.start()
    structlog.get_logger().info("app")
    assert lt.stop(5).finished
    records = lines(out)
    events = [r["event"] for r in records]
    assert "enricher_chain.degraded" not in events
    assert [r["level"] for r in records if r["level"] not in ("debug", "info")] == []
    lifecycle = [r for r in records if r["event"].startswith("loop_thread.")]
    assert {r["event"] for r in lifecycle} >= {"loop_thread.started", "loop_thread.stopped"}
    assert all("region" not in r for r in lifecycle)
    assert [r.get("region") for r in records if r["event"] == "app"] == ["eu-west"]
    stats = processor.stats()
    assert (stats.events, stats.enriched, stats.degraded) == (1, 1, 0)
    assert stats.own_events == len(lifecycle)
