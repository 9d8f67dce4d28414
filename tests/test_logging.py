"""loopthread.logging.LoopHandler: hand-off, enrichment, order, safety, exit, recursion."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import logging.config
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from loopthread import LoopThread
from loopthread.logging import LoopHandler, LoopHandlerStats


@pytest.fixture(name="stream")
def fixture_stream() -> io.StringIO:
    """An in-memory stream for a wrapped StreamHandler."""
    return io.StringIO()


def stream_handler(stream: io.StringIO, fmt: str = "%(message)s") -> logging.StreamHandler[Any]:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def test_records_reach_wrapped_handler(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """A record logged in a sync thread is written by the wrapped handler, formatted by it."""
    handler = LoopHandler(stream_handler(stream, "%(levelname)s %(message)s"), loop_thread=lt)
    log.addHandler(handler)
    log.info("hello %s", "world")
    handler.flush()
    assert stream.getvalue() == "INFO hello world\n"


def test_four_threads_nothing_lost_order_kept(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """4 threads x 5,000 records: all written, each thread's records in its order."""
    handler = LoopHandler(stream_handler(stream), loop_thread=lt, maxsize=1000)
    log.addHandler(handler)

    def worker(t: int) -> None:
        for i in range(5000):
            log.info("%d %d", t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20_000
    per_thread: dict[int, list[int]] = {t: [] for t in range(4)}
    for line in lines:
        t, i = map(int, line.split())
        per_thread[t].append(i)
    assert all(seq == list(range(5000)) for seq in per_thread.values())


def test_record_is_a_safe_copy(lt: LoopThread, log: logging.Logger, stream: io.StringIO) -> None:
    """Mutating the arguments after logging changes nothing; the caller's record is untouched."""
    gate = threading.Event()
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            gate.wait(5)
            seen.append(record)

    handler = LoopHandler(Capture(), loop_thread=lt)
    log.addHandler(handler)
    payload = {"n": 1}
    log.info("payload %s", payload)
    payload["n"] = 2  # mutated while the record is still queued or being written
    gate.set()
    handler.flush()
    assert seen[0].getMessage() == "payload {'n': 1}"
    assert seen[0].args is None
    assert seen[0].exc_info is None


def test_exception_text_rendered_by_wrapped_formatter(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """exc_info is rendered to text before the hand-off and laid out by the wrapped formatter."""
    handler = LoopHandler(stream_handler(stream, "[%(message)s]"), loop_thread=lt)
    log.addHandler(handler)
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed")
    handler.flush()
    text = stream.getvalue()
    assert text.startswith("[failed]\nTraceback (most recent call last):")
    assert "ValueError: bad value" in text


def test_enricher_fields_become_record_attributes(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """Async enrichers add fields that the wrapped formatter can use."""

    async def region(event: Mapping[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"region": "eu" if "eu" in event["msg"] else "us"}

    handler = LoopHandler(
        stream_handler(stream, "%(region)s %(message)s"), enrichers=[region], loop_thread=lt
    )
    log.addHandler(handler)
    log.info("from eu")
    log.info("from us")
    handler.flush()
    assert stream.getvalue().splitlines() == ["eu from eu", "us from us"]


def test_failing_wrapped_handler_isolated(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """A wrapped handler that raises is counted; the other handlers still get every record."""

    class Broken(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            raise OSError("disk gone")

        def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - never reached
            raise AssertionError

    handler = LoopHandler(Broken(), stream_handler(stream), loop_thread=lt)
    log.addHandler(handler)
    for i in range(10):
        log.info("m%d", i)
    handler.flush()
    assert stream.getvalue().splitlines() == [f"m{i}" for i in range(10)]
    assert handler.handler_errors >= 1


def test_async_sink_gets_batches(lt: LoopThread, log: logging.Logger) -> None:
    """An async sink receives whole batches of records, in order."""
    batches: list[list[str]] = []

    class Sink:
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            await asyncio.sleep(0)
            batches.append([r.getMessage() for r in records])

    handler = LoopHandler(Sink(), loop_thread=lt, batch_size=50)
    log.addHandler(handler)
    for i in range(200):
        log.info("%d", i)
    handler.flush()
    flat = [m for batch in batches for m in batch]
    assert flat == [str(i) for i in range(200)]
    assert all(1 <= len(b) <= 50 for b in batches)


def test_logging_from_loop_thread_with_full_queue_does_not_deadlock(
    lt: LoopThread, log: logging.Logger
) -> None:
    """With overflow='block' and a full queue, logging on the loop thread still returns."""
    gate = threading.Event()
    written: list[str] = []

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            gate.wait(10)
            written.append(record.getMessage())

    handler = LoopHandler(Slow(), loop_thread=lt, maxsize=2, batch_size=1, overflow="block")
    log.addHandler(handler)
    for i in range(3):  # one being written (held by the gate), two queued: full
        log.info("pre %d", i)

    async def log_on_loop() -> str:
        log.info("from the loop")  # must not wait for room: the loop is what makes room
        return "returned"

    # "pre 0" is held in the wrapped handler (the consumer takes nothing more until it
    # returns); "pre 1" and "pre 2" fill the channel.
    channel = handler.stats().channel
    assert channel is not None
    assert (channel.depth, channel.maxsize) == (2, 2)
    assert lt.run(log_on_loop(), timeout=5) == "returned"
    # Admitted past maxsize, not dropped and not written around the channel.
    stats = handler.stats()
    assert stats.channel is not None
    assert (stats.channel.over_limit, stats.channel.depth) == (1, 3)
    assert (stats.dropped, stats.written_directly) == (0, 0)
    gate.set()
    handler.flush()
    assert written == ["pre 0", "pre 1", "pre 2", "from the loop"]
    assert handler.dropped == 0


def test_enricher_that_logs_does_not_recurse(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """A record logged while LoopHandler works is written directly, never queued again."""

    async def chatty(event: Mapping[str, Any]) -> dict[str, Any]:
        log.info("enricher saw %s", event["msg"])
        return {}

    handler = LoopHandler(stream_handler(stream), enrichers=[chatty], loop_thread=lt)
    log.addHandler(handler)
    log.info("original")
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == ["enricher saw original", "original"]
    assert handler.written_directly == 1


def test_after_loop_stops_records_written_directly(
    log: logging.Logger, stream: io.StringIO
) -> None:
    """Once the loop is gone, records are written in the caller's thread, not lost."""
    lt = LoopThread("short").start()
    handler = LoopHandler(stream_handler(stream), loop_thread=lt)
    log.addHandler(handler)
    log.info("before")
    handler.flush()
    lt.stop()
    log.info("after")
    assert stream.getvalue().splitlines() == ["before", "after"]


def test_dictconfig_recipe(tmp_path: Path) -> None:
    """LoopHandler works from logging.config.dictConfig, wrapping named handlers."""
    target = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s:%(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(target),
                    "formatter": "plain",
                },
                "loop": {"()": "loopthread.logging.LoopHandler", "handler_names": ["file"]},
            },
            "loggers": {
                "dictconfig.app": {"handlers": ["loop"], "level": "INFO", "propagate": False}
            },
        }
    )
    logger = logging.getLogger("dictconfig.app")
    try:
        logger.info("configured")
        logger.debug("filtered out")
        for handler in logger.handlers:
            handler.flush()
        assert target.read_text() == "INFO:configured\n"
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def test_bad_arguments() -> None:
    """Wrong handler types and options fail at construction with what to pass instead."""
    with pytest.raises(TypeError, match="emit_batch"):
        LoopHandler(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of names"):
        LoopHandler(handler_names="file")
    with pytest.raises(ValueError, match="overflow"):
        LoopHandler(overflow="spill")
    with pytest.raises(ValueError, match="maxsize"):
        LoopHandler(maxsize=0)


def test_exit_without_shutdown_writes_every_record(tmp_path: Path) -> None:
    """A program logging from several threads that simply returns loses no record."""
    target = tmp_path / "exit.log"
    source = textwrap.dedent(
        f"""
        import logging, threading
        from loopthread.logging import LoopHandler
        file_handler = logging.FileHandler({str(target)!r})
        logging.getLogger().addHandler(LoopHandler(file_handler))
        logging.getLogger().setLevel(logging.INFO)
        def worker(t):
            for i in range(2500):
                logging.info("%d %d", t, i)
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        logging.info("last")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # loopthread's own events (the stdlib logger "loopthread") propagate to the root logger
    # like any library's; only the program's records are counted here.
    lines = [
        line for line in target.read_text().splitlines() if not line.startswith("loop_thread.")
    ]
    expected = [f"{t} {i}" for t in range(4) for i in range(2500)] + ["last"]
    assert len(lines) == 10_001
    assert sorted(lines) == sorted(expected)  # each record exactly once
    assert lines[-1] == "last"


def test_stats_snapshot(lt: LoopThread, log: logging.Logger, stream: io.StringIO) -> None:
    """stats() counts what reached emit(), what was dropped, written directly or failed, and
    carries the channel's stats (kept after close())."""
    gate = threading.Event()
    entered = threading.Event()

    class Held(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            gate.wait(5)

    class Broken(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            raise OSError("disk gone")

    handler = LoopHandler(
        Held(),
        Broken(),
        loop_thread=lt,
        maxsize=2,
        batch_size=1,
        overflow="drop_newest",
        drop_summary_interval=None,  # no summary record (tests/test_logging_lane.py has them)
    )
    assert handler.stats() == LoopHandlerStats(0, 0, 0, 0, None)
    log.addHandler(handler)
    log.info("held")
    assert entered.wait(5)
    for i in range(4):
        log.info("m%d", i)  # two fit behind the held one, two are refused
    gate.set()
    handler.flush()
    stats = handler.stats()
    assert (stats.emitted, stats.dropped, stats.written_directly) == (5, 2, 0)
    assert stats.handler_errors == 3  # Broken failed on each of the three batches
    assert stats.channel is not None
    assert stats.channel.handled == 3
    assert (handler.dropped, handler.handler_errors) == (2, 3)
    log.removeHandler(handler)
    handler.close()
    closed = handler.stats().channel
    assert closed is not None
    assert closed.closed


def test_wrapped_handler_level_and_filters_apply(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """Each wrapped handler's own level and filters apply, as if it were on the logger."""
    warnings = io.StringIO()
    only_warnings = stream_handler(warnings)
    only_warnings.setLevel(logging.WARNING)
    no_secrets = stream_handler(stream)
    no_secrets.addFilter(lambda record: "secret" not in record.getMessage())
    handler = LoopHandler(only_warnings, no_secrets, loop_thread=lt)
    log.addHandler(handler)
    log.info("plain info")
    log.warning("a warning")
    log.info("a secret")
    handler.flush()
    assert warnings.getvalue().splitlines() == ["a warning"]
    assert stream.getvalue().splitlines() == ["plain info", "a warning"]


def test_filters_added_later_and_filter_methods_of_subclasses_apply(
    lt: LoopThread, log: logging.Logger, stream: io.StringIO
) -> None:
    """Filters work however they are given, on the LoopHandler and on a wrapped handler: added
    after records went through, or as a subclass's own filter() with no filters list."""

    class NoDebugText(logging.StreamHandler):  # type: ignore[type-arg]
        def filter(self, record: logging.LogRecord) -> bool:
            return "debug" not in record.getMessage() and bool(super().filter(record))

    class NoTrace(LoopHandler):
        def filter(self, record: logging.LogRecord) -> bool:
            return "trace" not in record.getMessage() and bool(super().filter(record))

    wrapped = NoDebugText(stream)
    handler = NoTrace(wrapped, loop_thread=lt)
    log.addHandler(handler)
    for message in ("one", "a trace", "some debug"):
        log.info(message)
    handler.flush()
    handler.addFilter(lambda record: "two" not in record.getMessage())
    wrapped.addFilter(lambda record: "three" not in record.getMessage())
    for message in ("two", "three", "four", "trace again"):
        log.info(message)
    handler.flush()
    assert stream.getvalue().splitlines() == ["one", "four"]
    # What passed the LoopHandler's own filters: one, some debug, three, four.
    assert handler.stats().emitted == 4
    log.removeHandler(handler)
    handler.close()

    plain_stream = io.StringIO()
    plain_wrapped = stream_handler(plain_stream)
    plain = LoopHandler(plain_wrapped, loop_thread=lt)  # no filters at first: none consulted
    log.addHandler(plain)
    log.info("five")
    plain.flush()
    plain.addFilter(lambda record: "six" not in record.getMessage())
    plain_wrapped.addFilter(lambda record: "seven" not in record.getMessage())
    for message in ("six", "seven", "eight"):
        log.info(message)
    plain.flush()
    assert plain_stream.getvalue().splitlines() == ["five", "eight"]


def test_emit_failure_costs_one_record(lt: LoopThread, log: logging.Logger) -> None:
    """A wrapped handler whose emit() raises on one record still gets the rest of the batch."""
    written: list[str] = []

    class Picky(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "bad":
                raise ValueError("cannot write this one")
            written.append(record.getMessage())

    handler = LoopHandler(Picky(), loop_thread=lt)
    log.addHandler(handler)
    for message in ("a", "bad", "b"):
        log.info(message)
    handler.flush()
    assert written == ["a", "b"]
    assert handler.stats().handler_errors == 1


def test_dictconfig_named_handler_outlives_dictconfig(tmp_path: Path) -> None:
    """A handler that dictConfig builds only to be wrapped (referenced by name alone, and
    configured after the LoopHandler, since names are sorted) is not garbage collected."""
    target = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "zz_file": {"class": "logging.FileHandler", "filename": str(target)},
                "background": {
                    "()": "loopthread.logging.LoopHandler",
                    "handler_names": ["zz_file"],
                },
            },
            "loggers": {"dictconfig.gc": {"handlers": ["background"], "level": "INFO"}},
        }
    )
    gc.collect()
    logger = logging.getLogger("dictconfig.gc")
    try:
        logger.info("kept alive")
        for handler in logger.handlers:
            handler.flush()
        assert target.read_text() == "kept alive\n"
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        wrapped = logging._handlers.get("zz_file")  # type: ignore[attr-defined]
        if wrapped is not None:
            wrapped.close()  # LoopHandler leaves the handlers it wraps to their owner
