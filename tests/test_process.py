"""Per-process state: the default loop, fork, and interpreter exit (in subprocesses)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

import loopthread
from loopthread import LoopNotRunningError, testing

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Forking a multi-threaded process is exactly the scenario under test (3.12+ warns about it).
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


async def thread_ident() -> int:
    return threading.get_native_id()  # unique across processes, unlike get_ident()


def in_forked_child(body: Callable[[], str], timeout: float = 20.0) -> str:
    """Run ``body`` in a forked child and return what it returned (or why it failed).

    The child always leaves through ``os._exit``; a child that does not answer within
    ``timeout`` is killed and the test fails with that fact (a hang is a failure, not a wait).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            answer = body()
        except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
            answer = f"error: {exc!r}"
        os.write(write_fd, answer.encode())
        os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return "hung"
        return os.read(read_fd, 65536).decode()
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def test_default_is_started_and_shared() -> None:
    """default() returns one running LoopThread for the whole process."""
    first = loopthread.default()
    assert first.running
    assert loopthread.default() is first
    assert loopthread.run(thread_ident()) == first.thread.native_id


def test_default_replaced_after_death() -> None:
    """A dead default loop is replaced on the next default() call."""
    old = loopthread.default()

    async def kill() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.Event().wait()

    with pytest.raises(LoopNotRunningError):
        old.run(kill())
    old.thread.join(5)
    new = loopthread.default()
    assert new is not old
    assert new.running
    assert loopthread.run(thread_ident()) == new.thread.native_id


def test_default_concurrent_first_use_creates_one() -> None:
    """Many threads asking for the default at once while none exists get the same one."""
    testing.reset_default()
    assert testing.current_default() is None
    barrier = threading.Barrier(8)
    seen: list[loopthread.LoopThread] = []

    def ask() -> None:
        barrier.wait()
        seen.append(loopthread.default())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 8
    assert len({id(s) for s in seen}) == 1
    assert seen[0] is testing.current_default()
    assert seen[0].running


@needs_fork
def test_forked_child_gets_fresh_default() -> None:
    """After fork(), the child's default() is a new loop that works; the parent's is intact."""
    parent = loopthread.default()
    parent_ident = loopthread.run(thread_ident())

    def child() -> str:
        lt = loopthread.default()
        ident = loopthread.run(thread_ident(), timeout=5)
        return f"{lt is not parent} {ident != parent_ident} {lt.running}"

    assert in_forked_child(child) == "True True True"
    assert loopthread.run(thread_ident()) == parent_ident


@needs_fork
def test_forked_child_forks_again() -> None:
    """A grandchild (fork of a fork) also gets a working default loop."""
    loopthread.default()

    def child() -> str:
        loopthread.run(thread_ident(), timeout=5)
        return in_forked_child(lambda: str(loopthread.run(asyncio.sleep(0, "ok"), timeout=5)))

    assert in_forked_child(child) == "ok"


@needs_fork
def test_fork_while_another_thread_holds_the_default_lock() -> None:
    """The child must not inherit a held lock: a thread holding the locks that creating the
    default loop takes, while another thread forks, leaves the child able to create its own."""
    loopthread.default()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with testing.holding_default_locks():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        result = in_forked_child(lambda: str(loopthread.run(asyncio.sleep(0, 7), timeout=5)))
    finally:
        release.set()
        holder.join(5)
    assert not holder.is_alive()
    assert result == "7"


@needs_fork
def test_parent_loopthread_in_child_raises_not_hangs() -> None:
    """A LoopThread started by the parent is refused in the child, quickly and clearly."""
    with loopthread.LoopThread("parent-owned") as lt:

        def child() -> str:
            started = time.monotonic()
            try:
                lt.run(asyncio.sleep(0), timeout=5)
            except LoopNotRunningError as exc:
                quick = time.monotonic() - started < 1
                return f"{quick} {'forked child' in str(exc)} {lt.stop().finished}"
            return "no error"

        assert in_forked_child(child) == "True True True"


# ---------------------------------------------------------------- exit, in subprocesses


# loopthread logs through the stdlib logger "loopthread", silent by default (README, Logs):
# a child script that needs to show its lifecycle events starts with this.
SHOW_LOOPTHREAD_LOGS = """\
import logging as _logging, sys as _sys
_logging.getLogger("loopthread").setLevel(_logging.DEBUG)
_logging.getLogger("loopthread").addHandler(_logging.StreamHandler(_sys.stdout))
"""


def run_script(
    source: str, timeout: float = 30.0, *, show_logs: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter; a hang past ``timeout`` fails the test.

    ``show_logs``: loopthread's log events are written to the child's stdout.
    """
    script = textwrap.dedent(source)
    if show_logs:
        script = SHOW_LOOPTHREAD_LOGS + script
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_exit_stops_default_loop_and_finishes_work() -> None:
    """A program that submits work and simply returns: the work finishes before exit, and the
    exit hook's stop reports it completed, nothing cancelled."""
    proc = run_script(
        """
        import asyncio, loopthread
        async def slow():
            await asyncio.sleep(0.2)
            print("work finished", flush=True)
        loopthread.default().submit(slow())
        print("main returns", flush=True)
        """,
        show_logs=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("main returns") < out.index("work finished")
    assert out.index("work finished") < out.index("loop_thread.stopped")
    [stopped] = [line for line in out.splitlines() if line.startswith("loop_thread.stopped")]
    assert "finished=True, completed=1, cancelled=0, abandoned=0" in stopped


def test_exit_is_bounded_with_hanging_work() -> None:
    """Work that never finishes is cancelled at exit (its finally runs); exit is bounded."""
    started = time.monotonic()
    proc = run_script(
        """
        import asyncio, loopthread
        # The exit deadline is the module constant loopthread._process.EXIT_TIMEOUT (README,
        # Exit); set here, in the child only, so the test needs 1 s instead of 5.
        from loopthread import _process
        _process.EXIT_TIMEOUT = 1.0
        async def forever():
            try:
                await asyncio.Event().wait()
            finally:
                print("cleanup ran", flush=True)
        loopthread.default().submit(forever())
        """,
        show_logs=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("cleanup ran") < out.index("loop_thread.stopped")
    [stopped] = [line for line in out.splitlines() if line.startswith("loop_thread.stopped")]
    assert "finished=True, completed=0, cancelled=1, abandoned=0" in stopped
    assert "deadline_hit=True" in stopped
    assert time.monotonic() - started < 15


def test_exit_with_unhandled_exception_in_main() -> None:
    """An exception ending main does not hang exit (anyio's portal does, per PITFALLS): the
    traceback is printed, the exit code is 1, and the default loop is still stopped."""
    proc = run_script(
        """
        import loopthread, asyncio
        loopthread.run(asyncio.sleep(0))
        raise ValueError("main failed")
        """,
        show_logs=True,
    )
    assert proc.returncode == 1
    assert "ValueError: main failed" in proc.stderr
    assert "loop_thread.stopped" in proc.stdout


def test_exit_with_sys_exit_in_worker_thread() -> None:
    """sys.exit() in a worker thread ends only that thread; the program exits normally."""
    proc = run_script(
        """
        import sys, threading, loopthread, asyncio
        def worker():
            loopthread.run(asyncio.sleep(0))
            sys.exit(3)
        t = threading.Thread(target=worker); t.start(); t.join()
        print("after worker", loopthread.run(asyncio.sleep(0, "still works")), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "after worker still works" in proc.stdout


def test_exit_waits_for_non_daemon_threads_using_the_loop() -> None:
    """Non-daemon threads still running after main returns can keep using the default loop."""
    proc = run_script(
        """
        import threading, loopthread, asyncio
        go = threading.Event()
        def late_worker():
            go.wait()
            print("late", loopthread.run(asyncio.sleep(0.05, "ok")), flush=True)
        threading.Thread(target=late_worker).start()
        loopthread.run(asyncio.sleep(0))
        threading.Timer(0.1, go.set).start()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "late ok" in proc.stdout


def test_default_refused_during_exit() -> None:
    """default() asked from an atexit handler after loopthread's own hook ran: a clear error."""
    proc = run_script(
        """
        import atexit, asyncio
        def late():
            try:
                loopthread.run(asyncio.sleep(0))
                print("ran", flush=True)
            except loopthread.LoopNotRunningError as exc:
                print("refused:", exc, flush=True)
        atexit.register(late)  # before loopthread registers its hook, so it runs after it
        import loopthread
        loopthread.run(asyncio.sleep(0))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: the interpreter is shutting down" in proc.stdout
    assert "Traceback" not in proc.stderr
