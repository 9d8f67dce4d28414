"""Regressions where loopthread's own logging meets the application's logging setup.

* Stopping the default loop while structlog is routed through stdlib logging into a
  ``LoopHandler`` on that loop: "stopping" was logged before the stop was requested, the
  handler rebound (calling ``default()`` under its lock), the new default loop's metrics name
  clash was logged through the same handler from the new loop thread: deadlock.
* ``fork()`` while another thread writes through structlog's default ``PrintLogger``: the
  child inherited structlog's write lock held, and its first ``loopthread.run()`` hung forever
  (the new loop thread blocked logging ``loop_thread.started``).

Both run in child interpreters with a hard timeout: a hang fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._seam_support import HAS_FORK, run_python

_STOP_DEFAULT_WITH_LOOPHANDLER = """
import logging
import sys

import structlog

import loopthread
from loopthread.logging import LoopHandler

structlog.configure(
    processors=[structlog.processors.KeyValueRenderer()],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
)
handler = LoopHandler(logging.FileHandler(sys.argv[1]))
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.INFO)
logging.getLogger("app").info("hello through the loop")
handler.flush(5)  # the handler is now bound to the default loop (metrics on: the default)
print("bound", flush=True)
report = loopthread.default().stop(5)
print(f"stopped finished={report.finished}", flush=True)
"""


def test_stopping_default_loop_with_structlog_through_loophandler_does_not_deadlock(
    tmp_path: Path,
) -> None:
    """``loopthread.default().stop()`` returns (finished) when structlog goes through stdlib
    logging into a LoopHandler on that default loop with metrics on; it used to deadlock
    between the handler's lock and the replacement default loop's start-up log."""
    log_file = tmp_path / "app.log"
    result = run_python(_STOP_DEFAULT_WITH_LOOPHANDLER, str(log_file), timeout=20.0)
    assert not result.hung, f"default().stop() deadlocked: {result.describe()}"
    assert result.returncode == 0, result.describe()
    assert "stopped finished=True" in result.stdout, result.describe()
    assert "hello through the loop" in log_file.read_text()


_FORK_WHILE_STRUCTLOG_WRITES = """
import asyncio
import os
import select
import signal
import sys
import threading

report = sys.stdout
sys.stdout = open(os.devnull, "w")  # structlog's default PrintLogger writes here

import structlog

import loopthread

children, bound = int(sys.argv[1]), float(sys.argv[2])
log = structlog.get_logger()  # unconfigured: the default PrintLogger
stop = threading.Event()


def hammer():
    while not stop.is_set():
        log.info("parent thread line", payload="x" * 200)


thread = threading.Thread(target=hammer)
thread.start()
answers = []
try:
    for _ in range(children):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                value = loopthread.run(asyncio.sleep(0, 1))
                answer = "ok" if value == 1 else f"wrong result {value!r}"
            except BaseException as exc:
                answer = f"error {exc!r}"
            os.write(write_fd, answer.encode())
            os._exit(0)
        os.close(write_fd)
        ready, _, _ = select.select([read_fd], [], [], bound)
        if ready:
            answers.append(os.read(read_fd, 1000).decode())
        else:
            answers.append("hung")
            os.kill(pid, signal.SIGKILL)
        os.close(read_fd)
        os.waitpid(pid, 0)
        if answers[-1] != "ok":
            break  # one failure is enough; do not spend the bound on every child
finally:
    stop.set()
    thread.join(5)
print("|".join(answers), file=report, flush=True)
"""


@pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
def test_fork_while_structlog_writes_first_run_in_child_answers() -> None:
    """Each of 10 children forked while a parent thread logs hard through structlog's
    default PrintLogger gets the answer of its first ``loopthread.run()`` within 5 s (it used
    to hang forever: the inherited structlog write lock was held)."""
    children = 10
    result = run_python(_FORK_WHILE_STRUCTLOG_WRITES, str(children), "5.0", timeout=45.0)
    assert not result.hung, result.describe()
    assert result.returncode == 0, result.describe()
    answers = result.stdout.strip().split("|")
    assert answers == ["ok"] * children, (
        f"first loopthread.run() in forked children: {answers} ('hung' = no answer in 5 s)"
    )
