"""install_signal_handlers(): SIGTERM becomes an orderly, draining exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import loopthread


def test_sigterm_exits_in_order_and_runs_pending_work() -> None:
    """SIGTERM with handlers installed: the blocked caller's coroutine is cancelled, work that
    was submitted finishes at exit, and the exit code says "terminated by SIGTERM"."""
    source = textwrap.dedent(
        """
        import asyncio, logging, os, signal, sys, loopthread
        logging.getLogger("loopthread").setLevel(logging.INFO)  # shows signal_received
        logging.getLogger("loopthread").addHandler(logging.StreamHandler(sys.stdout))
        loopthread.install_signal_handlers()
        async def background():
            await asyncio.sleep(0.2)
            print("background finished", flush=True)
        async def blocked():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.Event().wait()
            finally:
                print("blocked cleanup", flush=True)
        loopthread.default().submit(background())
        loopthread.run(blocked())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "blocked cleanup" in proc.stdout
    assert "background finished" in proc.stdout
    assert "loop_thread.signal_received" in proc.stdout


def test_returns_previous_handlers_and_can_restore() -> None:
    """The previous handlers are returned so they can be put back."""
    previous = loopthread.install_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGTERM) is not previous[signal.SIGTERM]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert signal.getsignal(signal.SIGTERM) == previous[signal.SIGTERM]


def test_refused_outside_main_thread() -> None:
    """Only the main thread may install signal handlers: a clear ValueError elsewhere."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            loopthread.install_signal_handlers()
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert len(errors) == 1
    with pytest.raises(ValueError, match="main thread"):
        raise errors[0]
