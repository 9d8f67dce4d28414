"""A WSGI app that calls an async HTTP client through loopthread: the gunicorn recipe of
docs/guide/deploy.md, with a plain-logging file log. It works as written with sync and gthread
workers, with and without ``--preload``, and needs no ``post_fork`` hook::

    UPSTREAM_URL=http://127.0.0.1:8001 LOG_FILE=app.log \\
        gunicorn --preload --workers 3 --chdir examples/gunicorn app:app

Why it works under ``--preload`` (the master imports this module, then forks the workers):
nothing here starts a loop at import. ``loopthread.resource()`` only declares the client; each
worker creates its own on its own default loop the first time a request needs it, and closes
it when the worker exits. ``loopthread.run()`` finds the worker's default loop at the point
of use. The ``LoopHandler`` also binds to the default loop at its first record, in each worker.
On SIGTERM gunicorn lets each worker finish its request and exit normally; loopthread's exit
hook then writes the queued log records and closes the client, within its 5 s deadline.

``/metrics`` is the Prometheus scrape. Under prometheus_client's multiprocess mode it serves
every worker's series, whichever worker answers::

    rm -rf /tmp/app-metrics && mkdir /tmp/app-metrics
    PROMETHEUS_MULTIPROC_DIR=/tmp/app-metrics UPSTREAM_URL=http://127.0.0.1:8001 \
        gunicorn -c examples/gunicorn/gunicorn.conf.py --preload --workers 3 \
        --chdir examples/gunicorn app:app

(``gunicorn.conf.py`` removes a dead worker's live gauges.) Without the variable it serves
the answering worker's own registry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

import loopthread
from loopthread.logging import LoopHandler

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8001")


async def make_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=UPSTREAM, timeout=5.0)


# One connection pool per worker process, created on first use, closed at the worker's exit.
upstream = loopthread.resource(make_client, name="upstream")

log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.propagate = False
if os.environ.get("LOG_FILE"):
    file_handler = logging.FileHandler(os.environ["LOG_FILE"])  # O_APPEND: one line per write
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(LoopHandler(file_handler))


async def fetch(path: str) -> tuple[int, str, int]:
    client = await upstream.get()
    response = await client.get(path)
    return response.status_code, response.text, id(client)


def metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The scrape: in multiprocess mode every worker's files (a fresh registry per scrape, as
    prometheus_client documents), else this worker's registry."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = generate_latest(registry)
    start_response(
        "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
    )
    return [body]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        return metrics(environ, start_response)
    status, text, pool = loopthread.run(fetch(path), timeout=5.0)
    log.info("served %s pid=%d", path, os.getpid())
    body = f"{text} pid={os.getpid()} pool={pool}\n".encode()
    start_response(
        f"{200 if status == 200 else 502} OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
