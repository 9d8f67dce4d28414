"""A real gunicorn (3 sync workers, ``--preload``) runs ``examples/gunicorn/app.py`` under
prometheus_client's multiprocess mode, with ``examples/gunicorn/gunicorn.conf.py`` (its
``child_exit`` hook marks dead workers) and the app's ``/metrics`` route serving
``MultiProcessCollector``, against the async upstream of tests/test_gunicorn.py.

Checked: two scrapes under load, wherever they land, show every loopthread series (written
at 0 when each worker's loop started, then at most every 0.5 s while it works) only going
up; after a rolling restart (SIGHUP: every worker replaced) the counters are still there and
still never went down, and ``loopthread_calls_total{outcome="ok"}`` summed over the workers
is exactly the number of requests served (each served request is one ``loopthread.run``),
as is the number of records put into the LoopHandler's channel; the dead workers' live gauges
are gone. After SIGTERM the directory, read by this process, still adds up.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import loopthread
from tests.test_gunicorn import (
    APP_DIR,
    GRACEFUL,
    Upstream,
    _free_port,
    _get,
    upstream,  # noqa: F401 - the fixture
)

REQUESTS = 150
WORKERS = 3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("loopthread_")
    }


def counters(samples: Samples) -> Samples:
    """Every sample of loopthread's counters, histograms and summaries: none may go down."""
    gauges = ("_in_flight", "_depth", "_workers", "_high_water", "_circuit_state")
    return {key: v for key, v in samples.items() if not key[0].endswith(gauges)}


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = frozenset(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def assert_only_went_up(before: Samples, after: Samples) -> None:
    assert counters(before), "no loopthread counters scraped"
    for key, value in counters(before).items():
        assert key in after, f"{key} disappeared"
        assert after[key] >= value, (key, value, after[key])


class Gunicorn:
    """gunicorn as a subprocess, its log read line by line in a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)  # gunicorn exited

    def wait_for(
        self, what: str, **wanted: tuple[Callable[[str], bool], int]
    ) -> dict[str, list[str]]:
        """Read the log until, for each name, ``count`` lines were accepted by its predicate
        (in any order; 30 s at most); return them by name."""
        matched: dict[str, list[str]] = {name: [] for name in wanted}
        deadline = time.monotonic() + 30
        while any(len(matched[name]) < count for name, (_, count) in wanted.items()):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"gunicorn: no {what}:\n{''.join(self.output)[-4000:]}")
            for name, (found, _) in wanted.items():
                if found(line):
                    matched[name].append(line)
        return matched

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)


def booted(line: str) -> bool:
    return "Booting worker with pid" in line


def marked(line: str) -> bool:  # logged by gunicorn.conf.py's child_exit
    return "its live gauges removed" in line


def booted_pids(lines: list[str]) -> set[int]:
    return {int(re.findall(r"Booting worker with pid: (\d+)", line)[0]) for line in lines}


@pytest.fixture(name="gunicorn")
def fixture_gunicorn(
    upstream: tuple[Upstream, int, loopthread.LoopThread],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> Iterator[tuple[Gunicorn, int, Path]]:
    _, upstream_port, _ = upstream
    files = tmp_path / "prometheus"
    files.mkdir()
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(APP_DIR / "gunicorn.conf.py"),
        "--chdir",
        str(APP_DIR),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        "--graceful-timeout",
        str(GRACEFUL),
        "--log-level",
        "info",
        "--preload",
        "app:app",
    ]
    env = {
        **os.environ,
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "LOG_FILE": str(tmp_path / "app.log"),
        "PROMETHEUS_MULTIPROC_DIR": str(files),
    }
    server = Gunicorn(args, env)
    try:
        yield server, port, files
    finally:
        server.close()


def scrape(port: int) -> Samples:
    status, text = _get(port, "/metrics")
    assert status == 200, text
    return parse(text)


@pytest.mark.timeout(120)
def test_multiprocess_metrics_add_up_across_workers_and_never_go_down(
    gunicorn: tuple[Gunicorn, int, Path],
) -> None:
    server, port, files = gunicorn
    first = booted_pids(server.wait_for("boot", booted=(booted, WORKERS))["booted"])
    served = 0
    progress = threading.Condition()

    def request(path: str) -> int:
        nonlocal served
        status, _ = _get(port, path)
        with progress:
            served += 1
            progress.notify_all()
        return status

    scrapes: list[Samples] = []
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(request, f"/r{i}") for i in range(REQUESTS)]
        for mark in (REQUESTS // 3, 2 * REQUESTS // 3):  # two scrapes while the load runs
            with progress:
                progress.wait_for(lambda m=mark: served >= m, timeout=60)  # type: ignore[misc]
            scrapes.append(scrape(port))
        statuses = [f.result(60) for f in futures]
    assert statuses == [200] * REQUESTS
    assert_only_went_up(scrapes[0], scrapes[1])
    # A busy worker's files lag by up to 0.5 s: a short load may not show in them yet.
    assert total(scrapes[1], "loopthread_calls_total", outcome="ok") <= REQUESTS

    # Rolling restart: every worker exits (writing its final counts) and is replaced.
    server.proc.send_signal(signal.SIGHUP)
    seen = server.wait_for("restart", booted=(booted, WORKERS), dead=(marked, WORKERS))
    assert {int(re.findall(r"worker (\d+) exited", line)[0]) for line in seen["dead"]} == first
    assert not booted_pids(seen["booted"]) & first
    after = scrape(port)
    assert_only_went_up(scrapes[1], after)
    assert total(after, "loopthread_calls_total", outcome="ok") == REQUESTS
    assert total(after, "loopthread_calls_total", outcome="error") == 0
    assert total(after, "loopthread_call_duration_seconds_count") == REQUESTS
    assert total(after, "loopthread_channel_put_total") == REQUESTS  # one log record each
    assert total(after, "loopthread_channel_handled_total") == REQUESTS
    assert 1 <= total(after, "loopthread_loops_created_total") <= WORKERS
    # The old workers' live gauges went with child_exit; the new ones started no loop.
    assert not [key for key in after if key not in counters(after)]
    assert any(key[0] == "loopthread_executor_max_workers" for key in scrapes[1])

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=GRACEFUL + 10) == 0
    assert "Traceback" not in "".join(server.output)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(files))  # type: ignore[no-untyped-call]
    final = parse(generate_latest(registry).decode())
    assert counters(final) == counters(after)
