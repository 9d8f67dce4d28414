"""loopthread.structlog: ``enrich`` and ``offload`` under a real structlog configuration."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from loopthread import EnricherChain, LoopThread
from loopthread.structlog import enrich, offload

Configure = Callable[[Sequence[Any]], None]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("test_request_id", default="-")


def only_ours(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Keep loopthread's own lifecycle logs (which share the global config) out of the way."""
    if not event_dict.get("ours"):
        raise structlog.DropEvent
    return event_dict


def render(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    """A tiny renderer: the event name plus the fields the tests look at."""
    extra = " ".join(f"{k}={event_dict[k]}" for k in ("user", "region") if k in event_dict)
    return f"{event_dict['event']} {extra}".strip()


@pytest.fixture(name="configure")
def fixture_configure() -> Iterator[Configure]:
    """``configure(processors)``: a real structlog config, restored with reset_defaults()."""

    def configure(processors: Sequence[Any]) -> None:
        structlog.configure(
            processors=[only_ours, *processors],
            logger_factory=structlog.PrintLoggerFactory(io.StringIO()),
            cache_logger_on_first_use=False,
        )

    yield configure
    structlog.reset_defaults()


@pytest.fixture(name="log")
def fixture_log() -> Any:
    """A lazy structlog logger (resolved at each call) whose events pass ``only_ours``."""
    return structlog.get_logger("test", ours=True)


async def user_enricher(event: Mapping[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"user": f"user-{event['user_id']}", "request": request_id.get()}


async def region_enricher(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"region": "eu-west"}


# ---------------------------------------------------------------------- enrich


def test_enrich_merges_fields(lt: LoopThread, configure: Configure, log: Any) -> None:
    """The chain's fields are merged into the event dict; the caller's contextvars reach it."""
    chain = EnricherChain([user_enricher, region_enricher], loop_thread=lt)
    processor = enrich(chain)
    capture = LogCapture()
    configure([processor, capture])
    request_id.set("req-7")
    log.info("login", user_id=42)
    assert capture.entries == [
        {
            "event": "login",
            "log_level": "info",
            "ours": True,
            "user_id": 42,
            "user": "user-42",
            "request": "req-7",
            "region": "eu-west",
        }
    ]
    stats = processor.stats()
    assert (stats.events, stats.enriched, stats.degraded) == (1, 1, 0)


def test_enrich_with_json_renderer(lt: LoopThread, configure: Configure, log: Any) -> None:
    """With a renderer after it, the enriched fields land in the rendered output."""
    out = io.StringIO()
    chain = EnricherChain([region_enricher], loop_thread=lt)
    structlog.configure(
        processors=[only_ours, enrich(chain), structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    log.info("ready")
    assert json.loads(out.getvalue()) == {"event": "ready", "ours": True, "region": "eu-west"}


def test_enrich_degrades_on_timeout(lt: LoopThread, configure: Configure, log: Any) -> None:
    """A chain slower than the timeout: the event goes on unchanged, counted twice over."""
    cancelled = threading.Event()

    async def stuck(event: Mapping[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return {"never": True}  # pragma: no cover - cancelled above

    chain = EnricherChain([stuck], loop_thread=lt, timeout=None)
    processor = enrich(chain, timeout=0.02)
    capture = LogCapture()
    configure([processor, capture])
    log.info("slow", user_id=1)
    assert capture.entries == [{"event": "slow", "log_level": "info", "ours": True, "user_id": 1}]
    assert cancelled.wait(5)  # the abandoned enrichment is cancelled on the loop (not awaited)
    assert processor.stats().degraded == 1
    assert chain.stats().degraded == 1


def test_enrich_degrades_when_loop_stopped(configure: Configure, log: Any) -> None:
    """After the chain's loop stopped, events pass through unenriched and are counted."""
    lt = LoopThread("enrich-stopped").start()
    chain = EnricherChain([region_enricher], loop_thread=lt)
    processor = enrich(chain)
    capture = LogCapture()
    configure([processor, capture])
    log.info("before")
    lt.stop()
    log.info("after")
    assert [e.get("region") for e in capture.entries] == ["eu-west", None]
    stats = processor.stats()
    assert (stats.events, stats.enriched, stats.degraded) == (2, 1, 1)
    assert chain.stats().degraded == 1


def test_enrich_on_loop_thread_passes_through(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """Logging from a coroutine on the chain's loop does not deadlock: it passes through."""
    chain = EnricherChain([region_enricher], loop_thread=lt)
    processor = enrich(chain)
    capture = LogCapture()
    configure([processor, capture])

    async def log_on_loop() -> None:
        log.info("on the loop")

    lt.run(log_on_loop(), timeout=5)
    assert capture.entries == [{"event": "on the loop", "log_level": "info", "ours": True}]
    assert processor.stats().degraded == 1


def test_enrich_from_threads(lt: LoopThread, configure: Configure, log: Any) -> None:
    """Several threads logging at once: every event enriched, the counts exact."""
    chain = EnricherChain([user_enricher], loop_thread=lt)
    processor = enrich(chain, timeout=None)
    capture = LogCapture()
    configure([processor, capture])

    def worker(t: int) -> None:
        for i in range(100):
            log.info("e", user_id=t * 1000 + i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e["user"] for e in capture.entries) == sorted(
        f"user-{t * 1000 + i}" for t in range(4) for i in range(100)
    )
    assert processor.stats().enriched == 400


def test_enrich_bad_arguments() -> None:
    """enrich() takes an EnricherChain and a non-negative timeout."""
    with pytest.raises(TypeError, match="EnricherChain"):
        enrich([region_enricher])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        enrich(EnricherChain([region_enricher]), timeout=-1)


# ---------------------------------------------------------------------- offload


def test_offload_caller_pays_a_put_work_runs_on_loop(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """The caller returns while the processors are still blocked; they and an async sink run
    on the loop thread; nothing reaches the rest of the caller's chain."""
    gate = threading.Event()
    threads: dict[str, set[int]] = {"processor": set(), "sink": set()}
    batches: list[list[str]] = []

    def slow_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        threads["processor"].add(threading.get_ident())
        gate.wait(5)
        return event_dict

    async def sink(batch: list[str]) -> None:
        threads["sink"].add(threading.get_ident())
        batches.append(batch)

    processor = offload(slow_processor, render, sink=sink, loop_thread=lt)
    after = LogCapture()
    configure([processor, after])
    log.info("first")  # returns although slow_processor is blocked on the gate
    log.info("second")
    assert not gate.is_set()
    gate.set()
    assert processor.flush(5)
    assert [e for b in batches for e in b] == ["first", "second"]
    assert threads == {"processor": {lt.thread.ident}, "sink": {lt.thread.ident}}
    assert after.entries == []
    assert processor.stats().offloaded == 2


def test_offload_order_kept_async_sink_gets_batches(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """4 threads x 500 events: each thread's events in order; the async sink gets batches."""
    gate = threading.Event()
    batches: list[list[str]] = []

    async def sink(batch: list[str]) -> None:
        await asyncio.to_thread(gate.wait, 5)
        batches.append(batch)

    processor = offload(render, sink=sink, loop_thread=lt, batch_size=64)
    configure([processor])

    def worker(t: int) -> None:
        for i in range(500):
            log.info(f"{t} {i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.set()
    assert processor.flush(10)
    per_thread: dict[int, list[int]] = {t: [] for t in range(4)}
    for line in (e for b in batches for e in b):
        t, i = map(int, line.split())
        per_thread[t].append(i)
    assert all(seq == list(range(500)) for seq in per_thread.values())
    assert all(1 <= len(b) <= 64 for b in batches)
    assert max(len(b) for b in batches) == 64  # events queued behind the gate came batched
    stats = processor.stats()
    assert (stats.offloaded, stats.failed, stats.dropped) == (2000, 0, 0)
    assert stats.channel is not None
    assert stats.channel.handled == 2000


def test_offload_sync_sink_called_per_event_in_executor(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """A plain sink is called once per rendered event, off the loop and off the caller."""
    seen: list[tuple[str, int]] = []

    def sink(line: str) -> None:
        seen.append((line, threading.get_ident()))

    processor = offload(render, sink=sink, loop_thread=lt)
    configure([processor])
    for i in range(20):
        log.info(f"e{i}")
    assert processor.flush(5)
    assert [line for line, _ in seen] == [f"e{i}" for i in range(20)]
    sink_threads = {ident for _, ident in seen}
    assert threading.get_ident() not in sink_threads
    assert lt.thread.ident not in sink_threads


def test_offload_processor_failure_isolated(lt: LoopThread, configure: Configure, log: Any) -> None:
    """A processor that raises costs its event only; DropEvent on the loop is not a failure."""
    got: list[str] = []

    def picky(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        if event_dict["event"] == "bad":
            raise ValueError("cannot render")
        if event_dict["event"] == "skip":
            raise structlog.DropEvent
        return event_dict

    processor = offload(picky, render, sink=got.append, loop_thread=lt)
    configure([processor])
    for event in ("a", "bad", "skip", "b"):
        log.info(event)
    assert processor.flush(5)
    assert got == ["a", "b"]
    assert processor.stats().failed == 1


def test_offload_sink_failures_isolated(lt: LoopThread, configure: Configure, log: Any) -> None:
    """A sync sink failing on one event and an async sink failing on one batch are counted;
    the events around them are still delivered."""
    got: list[str] = []

    def sync_sink(line: str) -> None:
        if line == "bad":
            raise OSError("disk full")
        got.append(line)

    sync_processor = offload(render, sink=sync_sink, loop_thread=lt)
    configure([sync_processor])
    for event in ("a", "bad", "b"):
        log.info(event)
    assert sync_processor.flush(5)
    assert got == ["a", "b"]
    assert sync_processor.stats().failed == 1

    batches: list[list[str]] = []

    async def async_sink(batch: list[str]) -> None:
        if "bad" in batch:
            raise OSError("connection reset")
        batches.append(batch)

    async_processor = offload(render, sink=async_sink, loop_thread=lt, batch_size=1)
    configure([async_processor])
    for event in ("a", "bad", "b"):
        log.info(event)
    assert async_processor.flush(5)
    assert batches == [["a"], ["b"]]
    assert async_processor.stats().failed == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_offload_after_loop_stopped_delivers_in_place(
    configure: Configure, log: Any, kind: str
) -> None:
    """Once the loop is gone, events are processed and written in the caller's thread."""
    lt = LoopThread("offload-stopped").start()
    got: list[tuple[str, int]] = []

    def sync_sink(line: str) -> None:
        got.append((line, threading.get_ident()))

    async def async_sink(batch: list[str]) -> None:
        got.extend((line, threading.get_ident()) for line in batch)

    processor = offload(render, sink=sync_sink if kind == "sync" else async_sink, loop_thread=lt)
    configure([processor])
    log.info("before")
    assert processor.flush(5)
    lt.stop()
    log.info("after")
    assert [line for line, _ in got] == ["before", "after"]
    assert got[1][1] == threading.get_ident()
    stats = processor.stats()
    assert (stats.offloaded, stats.written_directly, stats.failed) == (1, 1, 0)


def test_offload_overflow_drop_newest_counted(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """With drop_newest and a full channel, the caller is never blocked; drops are counted."""
    gate = threading.Event()
    entered = threading.Event()
    got: list[str] = []

    async def sink(batch: list[str]) -> None:
        entered.set()
        await asyncio.to_thread(gate.wait, 5)
        got.extend(batch)

    processor = offload(render, sink=sink, loop_thread=lt, maxsize=2, overflow="drop_newest")
    configure([processor])
    log.info("held")
    assert entered.wait(5)
    for i in range(5):
        log.info(f"e{i}")  # two fit, three are refused
    gate.set()
    assert processor.flush(5)
    assert got == ["held", "e0", "e1"]
    stats = processor.stats()
    assert (stats.offloaded, stats.dropped) == (3, 3)


def test_offload_sink_that_logs_with_full_channel_does_not_deadlock(
    lt: LoopThread, configure: Configure, log: Any
) -> None:
    """A sync sink (in the executor) logging while the channel is full does not wait for room
    that only its own return could make: the nested event is refused and counted."""
    started = threading.Event()
    gate = threading.Event()
    got: list[str] = []

    def sink(line: str) -> None:
        if line == "first":
            started.set()
            gate.wait(5)
            log.info("nested")
        got.append(line)

    processor = offload(render, sink=sink, loop_thread=lt, maxsize=1, overflow="block")
    configure([processor])
    log.info("first")
    assert started.wait(5)
    log.info("fill")  # the channel is now full
    gate.set()
    assert processor.flush(5)
    assert got == ["first", "fill"]
    assert processor.stats().dropped == 1


def test_offload_with_default_loop(configure: Configure, log: Any) -> None:
    """Without loop_thread, offload binds to loopthread.default() at the first event."""
    got: list[str] = []
    processor = offload(render, sink=got.append)
    configure([processor])
    log.info("hello")
    assert processor.flush(5)
    assert got == ["hello"]


def test_offload_bad_arguments() -> None:
    """offload() checks the sink, the processors and the channel options up front."""
    with pytest.raises(TypeError, match="sink"):
        offload(render, sink="stdout")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="processors"):
        offload("render", sink=print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow"):
        offload(sink=print, overflow="spill")
    with pytest.raises(ValueError, match="maxsize"):
        offload(sink=print, maxsize=0)
    with pytest.raises(TypeError, match="LoopThread"):
        offload(sink=print, loop_thread="default")  # type: ignore[arg-type]
