"""The pytest plugin (``loopthread.pytest_plugin``), run on inner test files with ``pytester``.

Each case runs a small test file in a fresh pytest session (in this process, unless it touches
the process-wide default loop: then in a child process) and checks its outcome and message.
The inner sessions stop their LoopThreads within ``loopthread_stop_timeout = 0.5``.
"""

from __future__ import annotations

import pytest

import loopthread
import loopthread.pytest_plugin

INI = """
[pytest]
loopthread_stop_timeout = 0.5
"""

#: Plugins the inner sessions do without (hypothesis' summary alone costs seconds per session).
QUIET = ("-p", "no:hypothesispytest", "-p", "no:anyio", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *, subprocess: bool = False) -> pytest.RunResult:
    """Run the inner session: in this process, or in a child process."""
    if subprocess:
        return pytester.runpytest_subprocess(*QUIET)
    return pytester.runpytest(*QUIET)


@pytest.fixture(name="inner")
def fixture_inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory whose sessions stop LoopThreads within 0.5 s."""
    pytester.makeini(INI)
    return pytester


def test_the_plugin_is_loaded_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    """pytest found the plugin by the ``pytest11`` entry point named ``loopthread``."""
    plugin = pytestconfig.pluginmanager.get_plugin("loopthread")
    assert plugin is loopthread.pytest_plugin


def test_a_clean_test_passes_and_its_loop_is_stopped(inner: pytest.Pytester) -> None:
    """The happy path: calls and a channel used and finished; the loop is stopped afterwards."""
    inner.makepyfile(
        """
        import asyncio

        SEEN = []

        async def double(x):
            await asyncio.sleep(0)
            return 2 * x

        def test_uses_the_loop(loop_thread):
            SEEN.append(loop_thread)
            assert loop_thread.running and loop_thread.name == "test-loop"
            assert loop_thread.run(double(21)) == 42
            channel = loop_thread.channel(lambda batch: None)
            channel.put(1)
            assert channel.flush(5)

        def test_the_loop_was_stopped_after_the_test():
            assert SEEN[0].state == "stopped"
            assert not SEEN[0].thread.is_alive()

        def test_each_test_gets_a_fresh_loop(loop_thread):
            assert loop_thread is not SEEN[0] and loop_thread.running
        """
    )
    run(inner).assert_outcomes(passed=3)


def test_a_leaked_task_fails_the_test(inner: pytest.Pytester) -> None:
    """A task the test left running on the loop: cancelled by stop(), named in the error."""
    inner.makepyfile(
        """
        import asyncio

        TASKS = []

        async def forever():
            await asyncio.Event().wait()

        async def spawn():
            TASKS.append(asyncio.get_running_loop().create_task(forever(), name="the-leak"))

        def test_leaks_a_task(loop_thread):
            loop_thread.run(spawn())
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*loop_thread: LoopThread 'test-loop' did not stop cleanly:",
            "*1 task(s) or call(s) still running when stop() was called were cancelled by it",
            "*'the-leak' running forever() at test_a_leaked_task_fails_the_test.py:*",
        ]
    )


def test_a_call_left_in_flight_fails_the_test(inner: pytest.Pytester) -> None:
    """A submit() nobody waited for: the stop is not clean and the message says why."""
    inner.makepyfile(
        """
        import asyncio

        def test_forgets_a_call(loop_thread):
            loop_thread.submit(asyncio.sleep(60))
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*did not stop cleanly:",
            "*cancelled by it (1 call(s) were in flight: a submit() nobody waited for?)",
            "*call sleep() at tasks.py:*",
            "*stop() cut a phase short at its 0.5 s deadline*",
            "*ShutdownReport(finished=True, completed=0, cancelled=1,*",
        ]
    )


def test_lost_items_fail_the_test(inner: pytest.Pytester) -> None:
    """Items a channel accepted and never handled are counted and the channel is named."""
    inner.makepyfile(
        """
        import asyncio

        async def stuck(batch):
            await asyncio.Event().wait()

        def test_loses_items(loop_thread):
            channel = loop_thread.channel(stuck, name="orders")
            for i in range(5):
                assert channel.put(i)
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*did not stop cleanly:",
            "*5 item(s) accepted by channels were never handled (lost)",
            "*channel 'orders' lost 5: put=5, handled=0, failed=0, dropped=0",
        ]
    )


def test_a_blocked_loop_fails_the_test(inner: pytest.Pytester) -> None:
    """A loop blocked at the end of the test: stop() gives up at its deadline, the test fails.

    The inner ``gate`` fixture is set up before ``loop_thread``, so it is torn down after it:
    it releases the loop once the check has run.
    """
    inner.makeconftest(
        """
        import pytest

        @pytest.fixture
        def loop_thread_options():
            return {"cancel_grace": 0.1}
        """
    )
    inner.makepyfile(
        """
        import threading

        import pytest

        @pytest.fixture
        def gate():
            event = threading.Event()
            yield event
            event.set()

        def test_blocks_the_loop(gate, loop_thread):
            loop_thread.loop.call_soon_threadsafe(gate.wait, 30)
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*stop() did not finish within 0.5 s: the loop is blocked by a callback or coroutine*"]
    )


def test_a_failing_test_is_not_also_reported_for_its_loop(inner: pytest.Pytester) -> None:
    """A test that failed gets its failure only; its loop is still stopped."""
    inner.makepyfile(
        """
        import asyncio

        SEEN = []

        def test_fails_with_a_call_in_flight(loop_thread):
            SEEN.append(loop_thread)
            loop_thread.submit(asyncio.sleep(60))
            assert False, "the test's own failure"

        def test_the_loop_was_stopped_anyway():
            assert SEEN[0].state == "stopped"
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*did not stop cleanly*")


def test_a_loop_the_test_stopped_itself_is_the_tests_to_judge(inner: pytest.Pytester) -> None:
    """The test stopped the loop (here on purpose with work cut short): nothing is added."""
    inner.makepyfile(
        """
        import asyncio

        def test_stops_it_with_work_in_flight(loop_thread):
            loop_thread.submit(asyncio.sleep(60))
            assert not loop_thread.stop(0).clean
        """
    )
    run(inner).assert_outcomes(passed=1)


def test_options_are_overridable_in_a_conftest(inner: pytest.Pytester) -> None:
    """``loop_thread_options`` gives the LoopThread its keyword arguments."""
    inner.makeconftest(
        """
        import pytest

        @pytest.fixture
        def loop_thread_options():
            return {"name": "mine", "executor_workers": 2, "metrics_registry": None}
        """
    )
    inner.makepyfile(
        """
        def test_options(loop_thread):
            assert loop_thread.name == "mine"
            assert loop_thread.stats().executor_workers == 2
        """
    )
    run(inner).assert_outcomes(passed=1)


def test_a_stop_timeout_that_is_not_a_number_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A typo in the ini option stops the session before any test runs, saying what is wrong."""
    pytester.makeini("[pytest]\nloopthread_stop_timeout = soon\n")
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*loopthread_stop_timeout must be a number of seconds*'soon'*"])


DEFAULT_TESTS = """
import asyncio

import loopthread
from loopthread import testing

SEEN = []

async def noop():
    await asyncio.sleep(0)

def test_uses_the_default_loop():
    loopthread.run(noop())
    SEEN.append(testing.current_default())

def test_the_next_test_sees_it():
    assert SEEN[0] is not None
    {check}
"""


def test_the_default_loop_is_kept_between_tests_unless_asked(inner: pytest.Pytester) -> None:
    """Without ``loopthread_reset_default`` the plugin leaves ``default()`` alone."""
    inner.makepyfile(
        DEFAULT_TESTS.format(
            check="assert testing.current_default() is SEEN[0] and SEEN[0].running"
        )
    )
    run(inner, subprocess=True).assert_outcomes(passed=2)


def test_reset_default_ini_option_resets_it_after_every_test(pytester: pytest.Pytester) -> None:
    """With ``loopthread_reset_default = true`` the default loop is stopped and forgotten."""
    pytester.makeini(INI + "loopthread_reset_default = true\n")
    pytester.makepyfile(
        DEFAULT_TESTS.format(
            check="assert testing.current_default() is None and SEEN[0].state == 'stopped'"
        )
    )
    run(pytester, subprocess=True).assert_outcomes(passed=2)


def test_reset_default_checks_the_default_loop_too(pytester: pytest.Pytester) -> None:
    """A default loop left with a task running fails its test when the option resets it."""
    pytester.makeini(INI + "loopthread_reset_default = true\n")
    pytester.makepyfile(
        """
        import asyncio

        import loopthread

        def test_leaves_a_call_on_the_default_loop():
            loopthread.default().submit(asyncio.sleep(60))
        """
    )
    result = run(pytester, subprocess=True)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*loopthread.default(): LoopThread 'loopthread-default' did not stop cleanly:"]
    )


def test_loopthread_default_fixture_gives_a_fresh_default(inner: pytest.Pytester) -> None:
    """``loopthread_default`` is ``default()`` for one test, stopped and forgotten after it."""
    inner.makepyfile(
        """
        import loopthread
        from loopthread import testing

        SEEN = []

        def test_before():
            SEEN.append(loopthread.default())

        def test_gets_a_fresh_one(loopthread_default):
            assert loopthread.default() is loopthread_default
            assert loopthread_default is not SEEN[0] and SEEN[0].state == "stopped"
            SEEN.append(loopthread_default)

        def test_after():
            assert SEEN[1].state == "stopped"
            assert testing.current_default() is None
        """
    )
    run(inner, subprocess=True).assert_outcomes(passed=3)
