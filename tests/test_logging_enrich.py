"""LoopHandler's enrichment of a batch: every record gets the fields an ``EnricherChain`` would
give it (flat, deep, sequential chains alike), a chain that cannot run costs only the fields,
and a batch cut short at stop leaves no task behind."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog

from loopthread import EnricherChain, LoopThread
from loopthread.logging import LoopHandler


@pytest.fixture(name="logs")
def fixture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """loopthread's own events emitted during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


class Fields(logging.Handler):
    """Keeps the records it is given (in the executor, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def returning(fields: dict[str, Any], *, suspend: bool = True) -> Any:
    async def enrich(event: Mapping[str, Any]) -> Mapping[str, Any]:
        if suspend:
            await asyncio.sleep(0)
        return fields

    enrich.__qualname__ = "returning_" + "_".join(fields)
    return enrich


def test_fields_merge_flat_the_later_enricher_winning_on_every_record(
    lt: LoopThread, log: logging.Logger
) -> None:
    """Two enrichers, one answering at once, one awaiting, over a burst of 600 records (three
    batches): each record gets both enrichers' fields, the later one's value for a key both
    return, and the attributes it had stay."""
    sink = Fields()
    handler = LoopHandler(
        sink,
        enrichers=[returning({"a": 1, "b": 1}, suspend=False), returning({"b": 2, "c": 3})],
        loop_thread=lt,
    )
    log.addHandler(handler)
    for i in range(600):
        log.info("record %d", i)
    handler.flush()
    assert [r.getMessage() for r in sink.records] == [f"record {i}" for i in range(600)]
    assert {(r.a, r.b, r.c, r.levelname) for r in sink.records} == {(1, 2, 3, "INFO")}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"merge": "deep"}, {"x": 1, "y": 2}),  # nested groups merged key by key
        ({"mode": "sequential"}, {"y": 2, "saw_x": True}),  # the later sees the earlier
    ],
)
def test_a_chain_that_merges_otherwise_gives_what_its_enrich_gives(
    lt: LoopThread, log: logging.Logger, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A chain given as such (deep merge, sequential mode) enriches each record exactly as its
    own ``enrich()`` would."""

    async def first(event: Mapping[str, Any]) -> Mapping[str, Any]:
        await asyncio.sleep(0)
        return {"group": {"x": 1}}

    async def second(event: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = "group" in event
        await asyncio.sleep(0)
        return {"group": {"y": 2, **({"saw_x": True} if seen else {})}}

    sink = Fields()
    chain = EnricherChain([first, second], loop_thread=lt, **options)
    handler = LoopHandler(sink, enrichers=chain, loop_thread=lt)
    log.addHandler(handler)
    log.info("one")
    handler.flush()
    assert [r.group for r in sink.records] == [expected]  # type: ignore[attr-defined]
    assert lt.run(chain.enrich({"msg": "one"}))["group"] == expected


def test_a_chain_on_another_loop_costs_the_fields_not_the_records(
    lt: LoopThread, log: logging.Logger, logs: list[MutableMapping[str, Any]]
) -> None:
    """A chain bound to another LoopThread cannot run on the handler's loop: the records are
    written without its fields, and that is said once (rate-limited), not raised."""
    stream = io.StringIO()
    written = logging.StreamHandler(stream)
    with LoopThread("elsewhere") as other:
        chain = EnricherChain([returning({"a": 1})], loop_thread=other)
        handler = LoopHandler(written, enrichers=chain, loop_thread=lt)
        log.addHandler(handler)
        for i in range(3):
            log.info("record %d", i)
        handler.flush()
    assert stream.getvalue().splitlines() == ["record 0", "record 1", "record 2"]
    assert handler.stats().handler_errors == 0
    failed = [e for e in logs if e["event"] == "loop_handler.enrich_failed"]
    assert len(failed) == 1
    assert "another event loop" in failed[0]["error"]


def test_stop_during_a_hanging_enrichment_is_bounded_and_leaves_no_task() -> None:
    """An enricher that never returns (no timeout): stop() cancels the batch at its deadline,
    with every record task of the batch, and counts the records it could not write."""
    started = asyncio.Event()

    async def hang(event: Mapping[str, Any]) -> Mapping[str, Any]:
        started.set()
        await asyncio.Event().wait()
        return {}

    sink = Fields()
    logger = logging.getLogger(f"test.hang.{id(sink)}")
    logger.propagate = False
    lt = LoopThread("hang")
    lt.start()
    chain = EnricherChain([hang], loop_thread=lt, timeout=None)
    handler = LoopHandler(sink, enrichers=chain, loop_thread=lt)
    logger.addHandler(handler)
    try:
        for i in range(5):
            logger.warning("record %d", i)
        lt.run(started.wait(), timeout=5)
        report = lt.stop(timeout=1.0)
        assert report.duration < 5.0
        # The batch took its record tasks with it: none was left for stop() to cancel.
        assert (report.cancelled, report.abandoned) == (0, 0)
        assert report.items_unhandled == 5
        assert not sink.records
        stats = handler.stats().channel
        assert stats is not None
        assert (stats.put, stats.unhandled) == (5, 5)
    finally:
        logger.removeHandler(handler)
        handler.close()
