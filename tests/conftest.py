"""Shared fixtures. Every test runs under pytest-timeout (see pyproject.toml).

The LoopThread fixture is the pytest plugin's (``loopthread.pytest_plugin``, loaded through
its ``pytest11`` entry point like in any project that installs loopthread); ``lt`` is its short
name here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import loopthread

pytest_plugins = ("pytester",)


@pytest.fixture(name="lt")
def fixture_lt(loop_thread: loopthread.LoopThread) -> loopthread.LoopThread:
    """The plugin's ``loop_thread``: started, then stopped and checked to have stopped cleanly
    (no task left running, no item lost) after the test."""
    return loop_thread


@pytest.fixture(name="_stop_default_loop_at_session_end", scope="session", autouse=True)
def fixture_stop_default_loop_at_session_end() -> Iterator[None]:
    """Stop the default loop before pytest prints its summary, so its exit logs come first."""
    yield
    from loopthread import testing

    testing.reset_default()


@pytest.fixture(name="log")
def fixture_log() -> Iterator[logging.Logger]:
    """A private logger with no handlers (closed and removed afterwards), for the logging tests."""
    logger = logging.getLogger(f"test.log.{id(object())}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
