"""Every example runs as ``python examples/NAME.py``, exits 0 and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    """Run one example in a fresh interpreter; return its stdout (stderr in the failure)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_every_example_is_tested() -> None:
    """Each file in examples/ has a test below (a new example needs one)."""
    tested = {
        name.removeprefix("test_")
        for name in globals()
        if name.startswith("test_") and name != "test_every_example_is_tested"
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} <= tested


def test_blocking_facade() -> None:
    """run, the decorator, gather, submit and a timeout on the default loop."""
    out = run_example("blocking_facade")
    assert "req-3: apple costs 1.26" in out
    assert "pear via @blocking: 0.8" in out
    assert "gather: [1.25, 0.8, 0.0]" in out
    assert "timeout: the coroutine was cancelled on the loop" in out
    assert "loops created: 1" in out


def test_logging_handler() -> None:
    """Records from three threads are enriched on the loop and all written."""
    lines = run_example("logging_handler").splitlines()
    assert "INFO user 1 placed order 0 [region=eu-west]" in lines
    assert "INFO user 3 placed order 1 [region=ap-south]" in lines
    assert sum(" placed order " in line for line in lines) == 6
    assert lines[-1] == "emitted 6, written on the loop 6, dropped 0"


def test_dictconfig() -> None:
    """The dictConfig recipe writes to the console and, at WARNING, to the file."""
    lines = run_example("dictconfig").splitlines()
    assert lines == [
        "INFO app: configured from a dict",
        "WARNING app: disk at 91%",
        "the file got 1 line(s) (WARNING and up)",
    ]


def test_structlog_enrich() -> None:
    """Two events get the async fields; the slow one passes through, counted."""
    lines = run_example("structlog_enrich").splitlines()
    assert (
        "level='info' event='login' beta=True country='NZ' ip='192.0.2.1' user='ada' user_id=7"
        in lines
    )
    assert "level='info' event='login' ip='10.0.0.1' user_id=7" in lines
    assert any("event='enricher_chain.degraded'" in line for line in lines)
    assert lines[-1] == "events 3, enriched 2, passed through 1 (1 timed out), loopthread's own 1"


def test_structlog_offload() -> None:
    """The async sink gets every event, rendered on the loop, in batches."""
    out = run_example("structlog_offload")
    assert '{"event": "handled", "level": "info", "request": 0, "worker": 2}' in out
    match = re.search(r"401 events written by the async sink in (\d+) batches", out)
    assert match is not None, out
    assert 1 <= int(match.group(1)) < 401
    assert "offloaded 401, dropped 0, failed 0" in out
    assert "µs per log call" in out


def test_legacy_reporter() -> None:
    """Worker threads' events all reach the handlers on the loop."""
    lines = run_example("legacy_reporter").splitlines()
    assert "progress: resize=300, thumbnail=200, upload=100" in lines
    assert sum(" finished: digest " in line for line in lines) == 3
    assert lines[-1] == ("events handled 603, handler calls 603, failures 0, dashboard writes 3")


def test_shared_http_session() -> None:
    """200 sync calls share one session (at most one connection per calling thread)."""
    out = run_example("shared_http_session")
    assert "you asked for /items/0" in out
    assert "you asked for /items/199" in out
    match = re.search(r"200 sync calls, 1 session created, (\d) connections opened", out)
    assert match is not None, out
    assert 1 <= int(match.group(1)) <= 8
    assert "loops created: 1" in out
    assert "after stop(): session closed, 0 idle connections left" in out


@pytest.mark.parametrize("name", ["logging_handler", "dictconfig", "structlog_offload"])
def test_examples_keep_loopthread_lifecycle_quiet(name: str) -> None:
    """Examples that configure structlog show no loopthread INFO lifecycle lines."""
    assert "loop_thread.started" not in run_example(name)
