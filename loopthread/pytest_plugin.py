"""The pytest plugin for code that uses loopthread (entry point ``loopthread`` in ``pytest11``).

pytest loads it by itself once loopthread is installed (``-p no:loopthread`` turns it off).

Fixtures:

* ``loop_thread``: a started :class:`~loopthread.LoopThread` for one test, stopped after it
  by :func:`loopthread.testing.stop_cleanly`. The test errors at teardown, with a message
  naming the culprit, when the stop did not finish or hit its deadline, when a task or call
  was still running (the test leaked it), when a channel lost items, or when the loop thread
  outlived the stop.
* ``loop_thread_options``: the keyword arguments that LoopThread is made with (``name``
  defaults to ``"test-loop"``). Override the fixture in a ``conftest.py`` to change them.
* ``loopthread_default``: a fresh ``loopthread.default()`` for one test, checked the same way
  after it, then forgotten (the next ``default()`` starts a new one).

Ini options:

* ``loopthread_reset_default`` (bool, default false): after *every* test, stop and forget
  ``loopthread.default()`` if the test made one, checked like ``loopthread_default``. Off by
  default: a suite may share one default loop across tests on purpose.
* ``loopthread_stop_timeout`` (seconds, default 5): the ``stop()`` timeout of the checks.

What is not checked: a test that failed (or was skipped or xfailed) is not also reported for
what it left behind, its loop is only stopped; a LoopThread that the test stopped itself (or
that died) is the test's to check: its report is not judged.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # loopthread itself is imported only once a fixture is used
    from pluggy import Result

    from loopthread import LoopThread

__all__ = ["loop_thread", "loop_thread_options", "loopthread_default"]

#: Set on a test item once its call phase passed (the checks run only then).
_PASSED = pytest.StashKey[bool]()

_DEFAULT_NAME = "test-loop"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's ini options."""
    parser.addini(
        "loopthread_reset_default",
        "stop, check and forget loopthread.default() after every test (default: false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "loopthread_stop_timeout",
        "stop() timeout, in seconds, of the loopthread fixtures' checks (default: 5)",
        default="5",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a stop timeout that is not a number, before any test runs."""
    _stop_timeout(config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    """Remember whether the test itself passed: the checks judge only tests that did."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_PASSED] = report.passed and not hasattr(report, "wasxfail")


@pytest.fixture
def loop_thread_options() -> dict[str, Any]:
    """Keyword arguments for the ``loop_thread`` fixture's LoopThread (override to change)."""
    return {}


@pytest.fixture
def loop_thread(
    request: pytest.FixtureRequest, loop_thread_options: dict[str, Any]
) -> Iterator[LoopThread]:
    """A started LoopThread for this test, stopped and checked after it."""
    from loopthread import LoopThread

    lt = LoopThread(**{"name": _DEFAULT_NAME, **loop_thread_options}).start()
    try:
        yield lt
    finally:
        _finish(request, lt, "loop_thread")


@pytest.fixture
def loopthread_default(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """A fresh ``loopthread.default()`` for this test, stopped, checked and forgotten after it."""
    import loopthread
    from loopthread import testing

    testing.reset_default()
    lt = loopthread.default()
    try:
        yield lt
    finally:
        _finish_default(request)


@pytest.fixture(autouse=True)
def _loopthread_reset_default(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ``loopthread_reset_default = true``: ``loopthread_default``'s teardown, every test."""
    yield
    if request.config.getini("loopthread_reset_default"):
        _finish_default(request)


def _finish_default(request: pytest.FixtureRequest) -> None:
    from loopthread import testing

    lt = testing.current_default()
    if lt is None:
        return
    try:
        _finish(request, lt, "loopthread.default()")
    finally:
        testing.reset_default(_stop_timeout(request.config))


def _finish(request: pytest.FixtureRequest, lt: LoopThread, what: str) -> None:
    """Stop ``lt``; fail the test if it passed and ``lt`` did not stop cleanly."""
    from loopthread import testing

    timeout = _stop_timeout(request.config)
    if lt.state != "running":  # the test stopped it (or let it die): its report is the test's
        lt.stop(timeout)
        return
    if not request.node.stash.get(_PASSED, False):
        lt.stop(timeout)
        return
    try:
        testing.stop_cleanly(lt, timeout)
    except AssertionError as exc:
        problem = str(exc)
    else:
        return
    pytest.fail(f"{what}: {problem}", pytrace=False)  # outside the except: no chained noise


def _stop_timeout(config: pytest.Config) -> float:
    raw = config.getini("loopthread_stop_timeout")
    try:
        timeout = float(raw)
    except (TypeError, ValueError):
        timeout = -1.0
    if not timeout >= 0:
        raise pytest.UsageError(
            f"loopthread_stop_timeout must be a number of seconds >= 0; got {raw!r}"
        )
    return timeout
