"""A LoopHandler whose destination is an async sink writes, or counts, the records it must
write directly (issue 12, item 8): after its loop stopped, at exit, and records logged from
inside the sink. They used to be dropped while ``written_directly`` counted them."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loopthread import LoopThread
from loopthread.logging import LoopHandler


class Collect:
    """An async sink that keeps the messages it was given, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        await asyncio.sleep(0)
        self.batches.append([r.getMessage() for r in records])

    @property
    def messages(self) -> list[str]:
        return [m for batch in self.batches for m in batch]


def test_after_its_loop_stopped_records_reach_the_async_sink(log: logging.Logger) -> None:
    """Once the loop is gone, a record is written to the async sink from the caller's thread
    (on a private event loop), and counted as written directly, not as failed."""
    lt = LoopThread("sink-stopped").start()
    sink = Collect()
    handler = LoopHandler(sink, loop_thread=lt)
    log.addHandler(handler)
    log.info("before")
    handler.flush()
    lt.stop()
    log.info("after")
    assert sink.messages == ["before", "after"]
    stats = handler.stats()
    assert (stats.written_directly, stats.handler_errors) == (1, 0)


def test_a_sink_that_cannot_be_written_without_its_loop_is_counted(log: logging.Logger) -> None:
    """A sink whose resources belong to its (stopped) loop fails when written directly: the
    record is counted in handler_errors, never as written and lost."""
    lt = LoopThread("sink-bound").start()

    class LoopBound:
        loop: asyncio.AbstractEventLoop | None = None

        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            loop = asyncio.get_running_loop()
            if self.loop is None:
                self.loop = loop
            elif loop is not self.loop:
                raise RuntimeError("attached to a different loop")

    handler = LoopHandler(LoopBound(), loop_thread=lt)
    log.addHandler(handler)
    log.info("binds the sink to its loop")
    handler.flush()
    lt.stop()
    log.info("cannot be written")
    stats = handler.stats()
    assert (stats.written_directly, stats.handler_errors) == (1, 1)


def test_a_record_logged_from_inside_the_sink_reaches_it(
    lt: LoopThread, log: logging.Logger
) -> None:
    """A sink that logs (a retry warning) while writing a batch: that record is given to the
    sink right after the batch, once (it used to be dropped, counted as written directly)."""

    class Chatty(Collect):
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            await super().emit_batch(records)
            if any(r.getMessage() == "original" for r in records):
                log.warning("sink: retried once")

    sink = Chatty()
    handler = LoopHandler(sink, loop_thread=lt)
    log.addHandler(handler)
    log.info("original")
    handler.flush()
    assert sink.batches == [["original"], ["sink: retried once"]]
    stats = handler.stats()
    assert (stats.written_directly, stats.handler_errors) == (1, 0)


def test_a_sink_that_logs_on_every_batch_does_not_feed_itself(
    lt: LoopThread, log: logging.Logger
) -> None:
    """A sink that logs on *every* batch: its record is written once after the batch; the one
    it logs while writing that is not fed back (it would never end) and is counted."""

    class Noisy(Collect):
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            await super().emit_batch(records)
            log.debug("sink: sent %d", len(records))

    sink = Noisy()
    handler = LoopHandler(sink, loop_thread=lt)
    log.addHandler(handler)
    log.info("original")
    handler.flush()
    assert sink.batches == [["original"], ["sink: sent 1"]]
    stats = handler.stats()
    assert (stats.written_directly, stats.handler_errors) == (2, 1)


def test_at_exit_records_logged_after_the_loops_stopped_reach_the_async_sink(
    tmp_path: Path,
) -> None:
    """A program whose only destination is an async sink, logging from an atexit function
    that runs after loopthread's exit hook stopped the loops: those records reach the sink."""
    target = tmp_path / "sink.log"
    source = textwrap.dedent(
        f"""
        import atexit, logging

        def late():  # registered first, so it runs after loopthread's own exit hook
            logging.getLogger("app").warning("logged at exit")

        atexit.register(late)

        from loopthread.logging import LoopHandler

        class FileSink:
            async def emit_batch(self, records):
                with open({str(target)!r}, "a") as f:
                    for r in records:
                        f.write(r.getMessage() + "\\n")

        log = logging.getLogger("app")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(LoopHandler(FileSink()))
        for i in range(100):
            log.info("record %d", i)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = target.read_text().splitlines()
    assert lines == [f"record {i}" for i in range(100)] + ["logged at exit"]


def test_a_record_logged_from_another_handlers_work_reaches_this_sink(
    lt: LoopThread, log: logging.Logger
) -> None:
    """LoopHandler A's enricher logs into a logger that LoopHandler B (an async sink) serves:
    B queues and writes that record like any other. (Both took it for their own recursion: B
    handed it to A's batch, which has no sink, and it was lost.)"""
    other = logging.getLogger(f"{log.name}.other")
    other.propagate = False
    other.setLevel(logging.DEBUG)
    sink = Collect()
    b = LoopHandler(sink, loop_thread=lt)
    other.addHandler(b)

    async def chatty(event: Mapping[str, Any]) -> dict[str, Any]:
        other.info("enricher looked up %s", event["msg"])
        return {}

    a = LoopHandler(logging.NullHandler(), enrichers=[chatty], loop_thread=lt)
    log.addHandler(a)
    try:
        log.info("original")
        a.flush()
        b.flush()
    finally:
        other.removeHandler(b)
        b.close()
    assert sink.messages == ["enricher looked up original"]
    assert (b.stats().written_directly, b.stats().handler_errors) == (0, 0)
