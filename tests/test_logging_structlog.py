"""structlog's documented stdlib integration behind a LoopHandler (issue 12, item 2).

The recipe from structlog's "Standard Library Logging" chapter ("Rendering using structlog-based
formatters within logging"): structlog ends its chain with
``ProcessorFormatter.wrap_for_formatter``, stdlib ``logging.FileHandler``s format with
``ProcessorFormatter`` (a ``foreign_pre_chain`` for records from stdlib loggers), and here a
LoopHandler writes them on the loop thread's executor. Real structlog, real files in tmp_path:
structlog records only, stdlib records only, both, and stdlib records with tracebacks. Every
structlog record used to fail (``'str' object has no attribute 'copy'``: the handler turned the
event dict into a string) while ``stats().handler_errors`` stayed 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from loopthread import LoopThread
from loopthread.logging import LoopHandler

SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso"),
]


@pytest.fixture(name="name")
def fixture_name() -> Iterator[str]:
    """structlog configured as its docs recommend; a private stdlib logger name; all undone."""
    structlog.configure(
        processors=[*SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    name = f"test.slog.{id(object())}"
    stdlib = logging.getLogger(name)
    stdlib.setLevel(logging.INFO)
    stdlib.propagate = False
    try:
        yield name
    finally:
        for handler in list(stdlib.handlers):
            stdlib.removeHandler(handler)
            handler.close()
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def _json_file(path: Path) -> logging.FileHandler:
    handler = logging.FileHandler(path)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
    )
    return handler


def _console_file(path: Path) -> logging.FileHandler:
    handler = logging.FileHandler(path)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
        )
    )
    return handler


def _attach(name: str, handler: LoopHandler) -> None:
    logging.getLogger(name).addHandler(handler)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _region(event: Mapping[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"region": f"eu-{event.get('user', 'none')}"}


def test_structlog_records_keep_their_event_dict(lt: LoopThread, name: str, tmp_path: Path) -> None:
    """structlog records only: every one is written as its event dict (bound keys, level,
    logger, timestamp), with the enricher's field, and the traceback of
    ``log.exception`` rendered by the formatter's ``format_exc_info``; nothing is counted as
    failed."""
    path = tmp_path / "app.json"
    handler = LoopHandler(_json_file(path), enrichers=[_region], loop_thread=lt, enrich_timeout=5)
    _attach(name, handler)
    log = structlog.get_logger(name).bind(service="api")
    for i in range(20):
        log.info("request handled", user=i, status=200)
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("lookup failed", user=99)
    handler.flush()
    lines = _lines(path)
    assert len(lines) == 21
    for i, line in enumerate(lines[:20]):
        assert {k: line[k] for k in ("event", "user", "status", "service", "level", "logger")} == {
            "event": "request handled",
            "user": i,
            "status": 200,
            "service": "api",
            "level": "info",
            "logger": name,
        }
        assert line["region"] == f"eu-{i}"
        assert "timestamp" in line
    last = lines[-1]
    assert (last["event"], last["level"], last["user"]) == ("lookup failed", "error", 99)
    assert "Traceback (most recent call last)" in last["exception"]
    assert "KeyError: 'missing'" in last["exception"]
    assert handler.stats().handler_errors == 0


def test_stdlib_records_get_their_own_callers_bound_context(
    lt: LoopThread, name: str, tmp_path: Path
) -> None:
    """stdlib records only, from 4 threads, each request bound with
    ``structlog.contextvars.bind_contextvars``: the ``foreign_pre_chain``'s
    ``merge_contextvars`` runs on the executor, in the context of the thread that logged
    each record, so every line carries its own request id; ``extra=`` fields come through."""
    path = tmp_path / "std.json"
    handler = LoopHandler(_json_file(path), loop_thread=lt)
    _attach(name, handler)
    std = logging.getLogger(name)
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        start.wait()
        for i in range(25):
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=f"t{t}-{i}")
            std.info("served t%d-%d", t, i, extra={"path": "/items"})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = _lines(path)
    assert len(lines) == 100
    assert all(line["event"] == f"served {line['request_id']}" for line in lines), [
        line for line in lines if line["event"] != f"served {line['request_id']}"
    ][:3]
    assert all(line["path"] == "/items" and line["level"] == "info" for line in lines)
    assert handler.stats().handler_errors == 0


def test_structlog_and_stdlib_records_through_two_formatters(
    lt: LoopThread, name: str, tmp_path: Path
) -> None:
    """Both kinds of records, interleaved, into two FileHandlers (JSON and console) behind one
    LoopHandler: each file has every record, in order, rendered by its own formatter."""
    json_path, console_path = tmp_path / "both.json", tmp_path / "both.log"
    handler = LoopHandler(_json_file(json_path), _console_file(console_path), loop_thread=lt)
    _attach(name, handler)
    slog = structlog.get_logger(name)
    std = logging.getLogger(name)
    for i in range(10):
        slog.info("from structlog", n=i)
        std.warning("from stdlib %d", i)
    handler.flush()
    lines = _lines(json_path)
    expected = [
        event
        for i in range(10)
        for event in (("from structlog", "info", i), (f"from stdlib {i}", "warning", None))
    ]
    assert [(line["event"], line["level"], line.get("n")) for line in lines] == expected
    console = console_path.read_text().splitlines()
    assert len(console) == 20
    assert "from structlog" in console[0]
    assert "n=0" in console[0]
    assert "from stdlib 0" in console[1]
    assert "[warning  ]" in console[1]
    assert handler.stats().handler_errors == 0


def test_stdlib_records_with_tracebacks(lt: LoopThread, name: str, tmp_path: Path) -> None:
    """``logging.exception`` from a stdlib logger: ``ProcessorFormatter`` renders the
    traceback (``format_exc_info`` in JSON, ``ConsoleRenderer`` in the console file): the
    exception stays on the record until it is written (it used to vanish without a word)."""
    json_path, console_path = tmp_path / "tb.json", tmp_path / "tb.log"
    handler = LoopHandler(_json_file(json_path), _console_file(console_path), loop_thread=lt)
    _attach(name, handler)
    std = logging.getLogger(name)

    def divide() -> float:
        return 1 / 0

    try:
        divide()
    except ZeroDivisionError:
        std.exception("could not divide")
    handler.flush()
    (line,) = _lines(json_path)
    assert (line["event"], line["level"]) == ("could not divide", "error")
    assert "Traceback (most recent call last)" in line["exception"]
    assert "in divide" in line["exception"]
    assert "ZeroDivisionError: division by zero" in line["exception"]
    console = console_path.read_text()
    assert "could not divide" in console
    assert "ZeroDivisionError" in console
    assert "divide" in console


def test_structlog_exc_info_true_is_resolved_in_the_caller(
    lt: LoopThread, name: str, tmp_path: Path
) -> None:
    """``log.error(..., exc_info=True)`` with the traceback rendered by the formatter (not in
    the caller's chain): the exception is taken where it is being handled, not on the
    executor thread, where there is none."""
    path = tmp_path / "exc.json"
    handler = LoopHandler(_json_file(path), loop_thread=lt)
    _attach(name, handler)
    log = structlog.get_logger(name)
    try:
        raise ValueError("bad input")
    except ValueError:
        log.error("rejected", exc_info=True)
    handler.flush()
    (line,) = _lines(path)
    assert "ValueError: bad input" in line["exception"]


def test_a_record_a_handler_reports_through_handle_error_is_counted(
    lt: LoopThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrapped FileHandler whose formatter raises: ``FileHandler.emit`` reports it through
    ``handleError`` (printed to stderr, as logging does) and writes nothing; each such record
    is counted in ``handler_errors``, the good ones are written."""

    class Picky(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if "bad" in record.getMessage():
                raise ValueError("cannot format this record")
            return super().format(record)

    path = tmp_path / "picky.log"
    target = logging.FileHandler(path)
    target.setFormatter(Picky("%(message)s"))
    handler = LoopHandler(target, loop_thread=lt)
    log = logging.getLogger(f"test.slog.picky.{id(handler)}")
    log.propagate = False
    log.addHandler(handler)
    try:
        for message in ("good 1", "bad 1", "good 2", "bad 2", "good 3"):
            log.warning(message)
        handler.flush()
    finally:
        log.removeHandler(handler)
        handler.close()
        target.close()
    assert path.read_text().splitlines() == ["good 1", "good 2", "good 3"]
    assert handler.stats().handler_errors == 2
    assert "ValueError: cannot format this record" in capsys.readouterr().err
