"""LoopHandler runs each record's enrichers, filters and formatting in the contextvars of the
thread that logged *that* record (issue 12, item 1); async sinks, which get whole batches,
run in an empty context, never in the first caller's."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from loopthread import LoopThread
from loopthread.logging import LoopHandler

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "test_logging_context_request_id", default=None
)


class _FilterSeesContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.seen_by_filter = request_id.get()
        return True


class _FormatterSeesContext(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.seen_by_formatter = request_id.get()
        return super().format(record)


async def _enricher_sees_context(event: Mapping[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)  # a real suspension: the rest runs in a Task
    return {"seen_by_enricher": request_id.get()}


def _sync_enricher_sees_context(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"seen_by_sync_enricher": request_id.get()}  # runs in the executor


def test_each_record_is_enriched_filtered_and_formatted_in_its_own_context(
    lt: LoopThread, log: logging.Logger
) -> None:
    """3 threads x 20 records, each with its own request id in a ContextVar: the async
    enricher, the plain-function enricher, the wrapped handler's filter and its formatter all
    see the id of the record they work on (it used to be the first caller's: 40 of 60 wrong)."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.addFilter(_FilterSeesContext())
    target.setFormatter(
        _FormatterSeesContext(
            "%(message)s %(seen_by_enricher)s %(seen_by_sync_enricher)s %(seen_by_filter)s "
            "%(seen_by_formatter)s"
        )
    )
    handler = LoopHandler(
        target,
        enrichers=[_enricher_sees_context, _sync_enricher_sees_context],
        loop_thread=lt,
        enrich_timeout=5.0,
    )
    log.addHandler(handler)
    start = threading.Barrier(3)

    def worker(t: int) -> None:
        start.wait()
        for i in range(20):
            request_id.set(f"t{t}-r{i}")
            log.info("t%d-r%d", t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 60
    wrong = [line for line in lines if len(set(line.split())) != 1]
    assert wrong == [], f"{len(wrong)} of 60 records saw another request's id: {wrong[:3]}"


def test_a_context_variable_changed_after_logging_does_not_change_the_record(
    lt: LoopThread, log: logging.Logger
) -> None:
    """The context is the caller's at the call: a value set after ``log.info`` returns (while
    the record still waits) is not what the record's formatter sees, and the first record's
    context is not reused for the second."""
    gate = threading.Event()
    entered = threading.Event()
    seen: list[tuple[str, str | None]] = []

    class Held(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            gate.wait(5)
            seen.append((record.getMessage(), request_id.get()))

    handler = LoopHandler(Held(), loop_thread=lt)
    log.addHandler(handler)
    request_id.set("first")
    log.info("one")
    assert entered.wait(5)
    request_id.set("second")
    log.info("two")
    request_id.set("changed after logging")
    gate.set()
    handler.flush()
    assert seen == [("one", "first"), ("two", "second")]


def test_an_async_sink_runs_in_an_empty_context(lt: LoopThread, log: logging.Logger) -> None:
    """An async sink receives batches of many callers' records: it sees none of their
    context variables (it used to see the first caller's)."""
    seen: list[str | None] = []
    done = threading.Event()

    class Sink:
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            seen.append(request_id.get())
            done.set()

    handler = LoopHandler(Sink(), loop_thread=lt)
    log.addHandler(handler)
    request_id.set("the first caller")
    log.info("hello")
    handler.flush()
    assert done.is_set()
    assert seen == [None]


def test_two_wrapped_handlers_each_see_the_records_context(
    lt: LoopThread, log: logging.Logger
) -> None:
    """With two wrapped handlers (written concurrently, each in its executor job), both
    formatters see each record's context."""
    streams = [io.StringIO(), io.StringIO()]
    targets = []
    for stream in streams:
        target = logging.StreamHandler(stream)
        target.setFormatter(_FormatterSeesContext("%(message)s %(seen_by_formatter)s"))
        targets.append(target)
    handler = LoopHandler(*targets, loop_thread=lt)
    log.addHandler(handler)
    for i in range(50):
        request_id.set(f"r{i}")
        log.info("r%d", i)
    handler.flush()
    for stream in streams:
        lines = stream.getvalue().splitlines()
        assert lines == [f"r{i} r{i}" for i in range(50)]
