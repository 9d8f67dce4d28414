"""A real multi-threaded app logging through a dictConfig-configured LoopHandler (issue 12).

A ``ThreadingHTTPServer`` serves 8 keep-alive clients x 200 requests; each request puts its id
in a ContextVar and logs three lines. The LoopHandler (built by dictConfig, with an async
enricher named by ``ext://`` that reads the ContextVar) writes them to a FileHandler whose
filter also reads it. Every line of the file is counted: none carries another request's id,
none is lost, none is duplicated, and each server thread's lines are in its order.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import http.client
import http.server
import logging
import logging.config
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from loopthread import testing
from loopthread.logging import LoopHandler

CLIENTS = 8
REQUESTS = 200
PHASES = ("start", "work", "end")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "test_logging_app_request_id", default="-"
)


async def enrich_request(event: Mapping[str, Any]) -> dict[str, Any]:
    """The app's async enricher (``ext://tests.test_logging_app.enrich_request``)."""
    await asyncio.sleep(0)
    return {"enricher_rid": request_id.get()}


class RequestIdFilter(logging.Filter):
    """The file handler's filter: the request id as the filter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.filter_rid = request_id.get()
        return True


class _App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one server thread per client connection
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms ACK delay)
    log = logging.getLogger("test.logging_app.app")

    def do_GET(self) -> None:
        rid = self.headers["X-Request-Id"]
        token = request_id.set(rid)
        try:
            self.log.info("start %s", rid)
            self.log.info("work %s", rid)
            self.log.info("end %s", rid)
        finally:
            request_id.reset(token)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr


@pytest.fixture(name="configured_app")
def fixture_configured_app(tmp_path: Path) -> Iterator[Path]:
    """dictConfig as an app would write it; everything closed and the default loop reset."""
    testing.reset_default()
    path = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "line": {"format": "%(threadName)s|%(filter_rid)s|%(enricher_rid)s|%(message)s"}
            },
            "filters": {"request_id": {"()": "tests.test_logging_app.RequestIdFilter"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(path),
                    "formatter": "line",
                    "filters": ["request_id"],
                },
                "background": {
                    "()": "loopthread.logging.LoopHandler",
                    "handler_names": ["file"],
                    "enrichers": ["ext://tests.test_logging_app.enrich_request"],
                    "enrich_timeout": 5.0,
                },
            },
            "loggers": {
                "test.logging_app": {
                    "handlers": ["background"],
                    "level": "INFO",
                    "propagate": False,
                }
            },
        }
    )
    app_logger = logging.getLogger("test.logging_app")
    try:
        yield path
    finally:
        for handler in list(app_logger.handlers):
            app_logger.removeHandler(handler)
            handler.close()
        logging.shutdown()
        testing.reset_default()


def _client(port: int, c: int, failures: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i in range(REQUESTS):
            connection.request("GET", "/", headers={"X-Request-Id": f"c{c}-{i}"})
            response = connection.getresponse()
            if response.read() != b"ok":
                failures.append(f"c{c}-{i}: {response.status}")
    finally:
        connection.close()


def test_every_line_of_a_threaded_server_is_right(configured_app: Path) -> None:
    """8 clients x 200 requests x 3 lines through a ThreadingHTTPServer: 0 lines with another
    request's id (filter, enricher and message agree), 0 lost, 0 duplicated, and each server
    thread's lines in the order it logged them."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="acceptor")
    serving.start()
    failures: list[str] = []
    try:
        clients = [
            threading.Thread(target=_client, args=(server.server_address[1], c, failures))
            for c in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        server.shutdown()
        server.server_close()
        serving.join()
    assert failures == []
    (handler,) = [
        h for h in logging.getLogger("test.logging_app").handlers if isinstance(h, LoopHandler)
    ]
    handler.flush()

    lines = configured_app.read_text().splitlines()
    pattern = re.compile(
        r"^(?P<thread>[^|]+)\|(?P<f>[^|]+)\|(?P<e>[^|]+)\|(?P<phase>\w+) (?P<rid>\S+)$"
    )
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m][:3]
    matches = [m for m in parsed if m is not None]
    wrong = [m.group(0) for m in matches if not m["f"] == m["e"] == m["rid"]]
    counts = collections.Counter((m["rid"], m["phase"]) for m in matches)
    expected = {(f"c{c}-{i}", p) for c in range(CLIENTS) for i in range(REQUESTS) for p in PHASES}
    lost = expected - set(counts)
    duplicated = {key: n for key, n in counts.items() if n > 1}
    by_thread: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for m in matches:
        by_thread[m["thread"]].append((m["rid"], m["phase"]))
    out_of_order = []
    for name, seen in by_thread.items():
        prefix = seen[0][0].split("-")[0]
        order = [(f"{prefix}-{i}", p) for i in range(REQUESTS) for p in PHASES]
        if seen != order:
            out_of_order.append(name)
    assert (len(wrong), len(lost), len(duplicated), len(out_of_order)) == (0, 0, 0, 0), (
        f"wrong id: {wrong[:3]}, lost: {sorted(lost)[:3]}, duplicated: {list(duplicated)[:3]}, "
        f"out of order: {out_of_order}"
    )
    assert len(lines) == CLIENTS * REQUESTS * len(PHASES)
    assert len(by_thread) == CLIENTS  # one server thread per keep-alive client
    stats = handler.stats()
    assert (stats.dropped, stats.handler_errors) == (0, 0)
