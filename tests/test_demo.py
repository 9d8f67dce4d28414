"""``python -m loopthread demo``: runs to the end and prints its summary."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest


def run_demo(*args: str) -> tuple[str, float]:
    """Run the demo in a fresh interpreter (stdout is a pipe, not a TTY)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "loopthread", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout, time.perf_counter() - started


@pytest.fixture(name="demo", scope="module")
def fixture_demo() -> tuple[str, float]:
    """One run of the demo without metrics, shared by the checks below."""
    return run_demo()


def row(out: str, what: str) -> str:
    """The summary-table row that starts with ``what``."""
    return next(line for line in out.splitlines() if line.startswith(what))


def test_progress_bar_prints_lines_when_not_a_tty(demo: tuple[str, float]) -> None:
    """Without a terminal the bar is printed as whole lines, one per quarter, ending at 100%."""
    out, _ = demo
    bars = [line for line in out.splitlines() if line.startswith("progress [")]
    assert "\r" not in out
    assert 2 <= len(bars) <= 5
    assert bars[-1] == "progress [##############################] 100% (160/160)"


def test_summary_table_shows_what_flowed_where(demo: tuple[str, float]) -> None:
    """Every component's stats are in the table, with nothing lost anywhere."""
    out, elapsed = demo
    assert re.search(
        r"facade calls \(lt\.run\)\s+160 ok\s+0 failed, 0 timed out, 1 event loop", out
    )
    assert re.search(r"shared async resource\s+1 client", out)
    assert re.search(r"progress events \(EventBus\)\s+160 events .* 0 handler failures", out)
    assert "160 written in" in row(out, "log records (LoopHandler)")
    assert "0 dropped; file: 160 lines" in row(out, "log records (LoopHandler)")
    chain = row(out, "enricher chain 'log-context'")
    assert "tenant 160/160 ok, region 160/160 ok, 0 degraded" in chain
    assert re.search(r"stop\(\)\s+clean\s+0 items unhandled", out)
    assert re.search(r"a log line: INFO worker-\d tenant=\w+ region=\S+ item \d+ checked", out)
    assert elapsed < 30  # ~1-2 s normally; generous for a loaded CI machine


def test_asyncio_run_comparison_is_measured_and_labelled(demo: tuple[str, float]) -> None:
    """The asyncio.run cost is a measurement of a few calls, extrapolated, and says so."""
    out, _ = demo
    assert "The same calls with asyncio.run per call (measured, then extrapolated):" in out
    assert re.search(r"asyncio\.run: [\d.]+ ms per call \(median of 10 ", out)
    assert re.search(r"lt\.run here: [\d.]+ ms per call \(median of 160\)", out)
    assert "160 loops and 160 clients instead of 1 and 1" in out
    assert "loop_thread.started" not in out  # lifecycle logs kept out of the way


def test_metrics_port_serves_prometheus_metrics() -> None:
    """--metrics-port 0 serves the metrics on a free port while the demo runs."""
    out, _ = run_demo("--metrics-port", "0")
    assert re.search(r"metrics: serving http://127\.0\.0\.1:\d+/metrics while the demo runs", out)
    assert re.search(r'loopthread_calls_total\{loop="demo",outcome="ok"\} 160\.0', out)
