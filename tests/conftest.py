"""Shared fixtures. Every test runs under pytest-timeout (see pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import loopthread


@pytest.fixture(name="lt")
def fixture_lt() -> Iterator[loopthread.LoopThread]:
    """A started LoopThread, stopped (and checked to have stopped) after the test."""
    lt = loopthread.LoopThread("test-loop")
    lt.start()
    try:
        yield lt
    finally:
        report = lt.stop(timeout=5.0)
        assert not lt.running
        assert report.finished, report
        assert lt.state in ("stopped", "dead"), lt.state


@pytest.fixture(name="_stop_default_loop_at_session_end", scope="session", autouse=True)
def fixture_stop_default_loop_at_session_end() -> Iterator[None]:
    """Stop the default loop before pytest prints its summary, so its exit logs come first."""
    yield
    from loopthread import testing

    testing.reset_default()
