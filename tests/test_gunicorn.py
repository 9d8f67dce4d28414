"""A real gunicorn on loopback runs ``examples/gunicorn/app.py`` (the README recipe) against a
real async upstream (an asyncio HTTP server on a LoopThread in this process, which counts its
connections), with 3 sync workers with and without ``--preload`` and 2 gthread workers.

Checked: every request answered 200 by the async client (the first one of every worker too),
one connection pool per worker process, every log line written once, and on SIGTERM an exit
within the graceful timeout with every pool closed (the upstream sees each connection end).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

import loopthread

APP_DIR = Path(__file__).resolve().parent.parent / "examples" / "gunicorn"
REQUESTS = 120
GRACEFUL = 10


class Upstream:
    """A minimal HTTP/1.1 keep-alive server that counts connections opened and closed."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.requests = 0
        self.all_closed: asyncio.Event | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()
            if self.all_closed is not None and self.closed == self.opened:
                self.all_closed.set()


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, int, loopthread.LoopThread]]:
    up = Upstream()
    with loopthread.LoopThread("upstream", metrics_registry=None) as lt:

        async def serve() -> asyncio.Server:
            up.all_closed = asyncio.Event()
            return await asyncio.start_server(up.handle, "127.0.0.1", 0)

        server = lt.run(serve(), timeout=10)
        port = server.sockets[0].getsockname()[1]
        yield up, port, lt

        async def shut() -> None:
            server.close()

        lt.run(shut(), timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("worker_class", "workers", "preload"),
    [("sync", 3, True), ("sync", 3, False), ("gthread", 2, True)],
)
def test_gunicorn_workers_share_one_pool_each_and_lose_nothing_at_sigterm(
    upstream: tuple[Upstream, int, loopthread.LoopThread],
    tmp_path: Path,
    worker_class: str,
    workers: int,
    preload: bool,
) -> None:
    up, upstream_port, upstream_lt = upstream
    port = _free_port()
    log_file = tmp_path / "app.log"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        str(APP_DIR),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--graceful-timeout",
        str(GRACEFUL),
        "--log-level",
        "info",
        *(["--threads", "4"] if worker_class == "gthread" else []),
        *(["--preload"] if preload else []),
        "app:app",
    ]
    env = {
        **os.environ,
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "LOG_FILE": str(log_file),
    }
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            output.append(line)
            lines.put(line)
        lines.put(None)  # gunicorn exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        booted = 0
        deadline = time.monotonic() + 30
        while booted < workers:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"gunicorn did not boot {workers} workers:\n{''.join(output)}")
            booted += "Booting worker with pid" in line
        paths = [f"/r{i}" for i in range(REQUESTS)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda p: _get(port, p), paths))
        assert all(status == 200 for status, _ in answers), answers
        pools: dict[int, set[str]] = defaultdict(set)
        for _, body in answers:
            match = re.fullmatch(r"hello pid=(\d+) pool=(\d+)\n", body)
            assert match, body
            pools[int(match[1])].add(match[2])
        assert all(len(ids) == 1 for ids in pools.values()), pools  # one pool per worker
        assert 1 <= len(pools) <= workers
        per_worker = 4 if worker_class == "gthread" else 1
        assert up.requests == REQUESTS
        assert up.opened <= len(pools) * per_worker, (up.opened, pools)
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=GRACEFUL + 10)
        exit_seconds = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    text = "".join(output)
    assert returncode == 0, text[-3000:]
    assert exit_seconds < GRACEFUL, exit_seconds
    assert "Traceback" not in text, text[-3000:]
    written = log_file.read_text().splitlines()
    assert sorted(written) == sorted(
        f"served {path} pid={pid}"
        for path, (_, body) in zip(paths, answers, strict=True)
        for pid in [int(re.findall(r"pid=(\d+)", body)[0])]
    )
    # Every worker's pool was closed at its exit: the upstream saw each connection end.

    async def closed() -> tuple[int, int]:
        assert up.all_closed is not None
        await asyncio.wait_for(up.all_closed.wait(), 10)
        return up.opened, up.closed

    opened, ended = upstream_lt.run(closed(), timeout=15)
    assert ended == opened
