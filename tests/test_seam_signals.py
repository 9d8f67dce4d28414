"""Regression: SIGTERM under ``install_signal_handlers()`` while the main thread is logging.

The handler used to log ``loop_thread.signal_received`` itself. When the signal lands while the
main thread is inside a structlog write (structlog's ``PrintLogger`` holds a per-file
``threading.Lock`` around ``print``), the handler runs on that same thread, logs, and blocks on
the lock its own thread holds: the process never exits. A signal handler must take no lock and
log nothing; SIGTERM must end the process with exit code 143 (128 + 15).
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._seam_support import kill_session, run_python

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")

#: Seconds a child has to exit after SIGTERM (a healthy one needs a few milliseconds).
EXIT_BOUND = 10.0

# Workers log hard through stdlib logging into a FileHandler; the main thread logs hard
# through structlog (to stdout, a file). "ready" on stderr: all threads are logging.
_LOGGING_CHILD = """
import logging
import sys
import threading

import structlog

import loopthread

structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
loopthread.install_signal_handlers()
log = structlog.get_logger("seam").bind()
stop = threading.Event()


def worker(n: int) -> None:
    std = logging.getLogger("seam.worker")
    while not stop.is_set():
        std.info("worker %d line", n)


threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
try:
    for thread in threads:
        thread.start()
    i = 0
    for i in range(20):
        log.info("main line", i=i)
    sys.stderr.write("ready\\n")
    sys.stderr.flush()
    while True:
        i += 1
        log.info("main line", i=i)
finally:
    stop.set()
    for thread in threads:
        thread.join(5)
"""


def _start_logging_child(tmp_path: Path, run: int) -> subprocess.Popen[str]:
    stdout = (tmp_path / f"stdout-{run}.txt").open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_LOGGING_CHILD), str(tmp_path / f"{run}.log")],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    finally:
        stdout.close()


def test_sigterm_while_main_thread_logs_exits_143(tmp_path: Path) -> None:
    """SIGTERM sent while the main thread and three worker threads log hard ends the process
    with exit code 143 within EXIT_BOUND seconds, in every one of 12 runs (it used to hang
    in about half of them: the handler logged and blocked on structlog's write lock)."""
    runs = 12
    children = [_start_logging_child(tmp_path, run) for run in range(runs)]
    outcomes: list[str] = []
    try:
        for child in children:
            assert child.stderr is not None
            ready, _, _ = select.select([child.stderr], [], [], 20.0)
            assert ready, "a child never started logging"
            assert child.stderr.readline().strip() == "ready"
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + EXIT_BOUND
        for child in children:
            try:
                code = child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                outcomes.append("hung")
            else:
                outcomes.append(str(code))
    finally:
        for child in children:
            if child.poll() is None:
                kill_session(child)
            child.wait()
            assert child.stderr is not None
            child.stderr.close()
    assert outcomes == ["143"] * runs, (
        f"SIGTERM while logging: exit codes {outcomes} (expected 143 each; 'hung' = did not "
        f"exit within {EXIT_BOUND}s)"
    )


_SELF_SIGNAL_CHILD = """
import os
import signal
import sys

import structlog

import loopthread

loopthread.install_signal_handlers()


class SignallingStdout:
    # A stdout whose third write() delivers SIGTERM: the signal lands while structlog's
    # PrintLogger holds its write lock for this file, inside the main thread's log call.
    def __init__(self, inner):
        self.inner = inner
        self.writes = 0

    def write(self, text):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner.write(text)

    def flush(self):
        self.inner.flush()


sys.stdout = SignallingStdout(sys.stdout)
log = structlog.get_logger("seam")
for i in range(100):
    log.info("line", i=i)
sys.stderr.write("SIGTERM did not end the program\\n")
"""


def test_sigterm_inside_structlog_write_exits_143() -> None:
    """SIGTERM delivered while the main thread is inside structlog's locked write (made
    deterministic: the stdout object sends it from write()) exits with code 143 promptly;
    the handler must not log (it used to deadlock on the lock its own thread held)."""
    result = run_python(_SELF_SIGNAL_CHILD, timeout=10.0)
    assert not result.hung, f"SIGTERM inside a log call hung the process: {result.describe()}"
    assert result.returncode == 143, result.describe()
