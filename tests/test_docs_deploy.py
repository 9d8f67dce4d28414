"""The deploy guide's gunicorn + structlog recipe, run as a reader would run it.

``app.py`` and ``gunicorn.conf.py`` are taken from docs/guide/deploy.md as they are printed there
(its ``docs-test: file`` blocks) and served by a real gunicorn (3 sync workers, ``--preload``,
prometheus_client's multiprocess mode, as the guide's config and commands say) against a real
async upstream, with stdout going to a file as it would to a log collector. Checked: every
request answered 200 through each worker's own pool; one scrape of ``/metrics`` counts loopthread's
calls; on SIGTERM gunicorn exits 0 within its graceful timeout; and stdout holds exactly one JSON
line per request, rendered by structlog on the loop thread, with the request's bound context.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

import loopthread
from tests.test_docs import DOCS, blocks
from tests.test_gunicorn import (
    GRACEFUL,
    Upstream,
    _free_port,
    upstream,  # noqa: F401 - the fixture
)
from tests.test_gunicorn_metrics import Gunicorn, booted, booted_pids

GUIDE = DOCS / "guide" / "deploy.md"
REQUESTS = 60


def _get(port: int, path: str, request_id: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close", "X-Request-Id": request_id})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_the_guides_gunicorn_structlog_setup_serves_and_logs_every_request_once(
    upstream: tuple[Upstream, int, loopthread.LoopThread],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    files = {b.arg: b.code for b in blocks(GUIDE) if b.kind == "file"}
    assert set(files) == {"app.py", "gunicorn.conf.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code + "\n")
    up, upstream_port, _ = upstream
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = _free_port()
    stdout = tmp_path / "stdout.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(tmp_path / "gunicorn.conf.py"),
        "--chdir",
        str(tmp_path),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        str(GRACEFUL),
        "app:app",
    ]
    # stdout to a file through the shell, as a container's log collector would read it; exec
    # keeps gunicorn's pid the one signalled.
    shell = f"exec {shlex.join(command)} > {shlex.quote(str(stdout))}"
    env = {
        **os.environ,
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    server = Gunicorn(["sh", "-c", shell], env)
    try:
        workers = booted_pids(server.wait_for("3 workers", boot=(booted, 3))["boot"])
        ids = [f"r-{i}" for i in range(REQUESTS)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda rid: _get(port, f"/users/{rid}", rid), ids))
        assert answers == [(200, "hello")] * REQUESTS
        assert up.requests == REQUESTS
        assert up.opened <= len(workers)  # one pool per worker, reused by its requests
        status, scrape = _get(port, "/metrics", "scrape")
        assert status == 200
        assert "loopthread_calls_total" in scrape
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        returncode = server.proc.wait(timeout=GRACEFUL + 10)
        exit_seconds = time.monotonic() - sigterm_at
    finally:
        server.close()
    log = "".join(server.output)
    assert returncode == 0, log[-3000:]
    assert exit_seconds < GRACEFUL, exit_seconds
    assert "Traceback" not in log, log[-3000:]
    lines = [json.loads(line) for line in stdout.read_text().splitlines()]
    served = [line for line in lines if line["event"] == "request served"]
    assert sorted(line["request_id"] for line in served) == sorted(ids)  # each exactly once
    for line in served:
        assert line["path"] == f"/users/{line['request_id']}"
        assert (line["level"], line["logger"], line["upstream_status"]) == ("info", "app", 200)
        assert line["pid"] in workers
        assert line["timestamp"].endswith("Z")
