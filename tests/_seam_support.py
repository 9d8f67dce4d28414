"""Helpers of the ``tests/test_seam_*.py`` regression tests: bounded child processes.

Every helper here turns a hang into an answer: a child that does not finish within its bound is
killed (with everything it forked: each script runs in a session of its own) and reported as
hung, so a regression fails its test instead of hanging the suite.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

#: True where ``os.fork`` exists (the fork tests skip elsewhere).
HAS_FORK = hasattr(os, "fork")


@dataclass(frozen=True)
class ChildResult:
    """How a child interpreter ended: its exit code (None: it hung and was killed), output."""

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def hung(self) -> bool:
        """True when the child did not finish within its bound and was killed."""
        return self.returncode is None

    def describe(self) -> str:
        """A summary for assertion messages."""
        state = "hung (killed)" if self.hung else f"exit code {self.returncode}"
        return (
            f"{state}\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


def run_python(code: str, *args: str, timeout: float = 30.0) -> ChildResult:
    """Run ``code`` (dedented) in a fresh interpreter with ``args``; kill it after ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, err = proc.communicate()
        return ChildResult(None, out, err)
    return ChildResult(proc.returncode, out, err)


def kill_session(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` and every process of its session (started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def in_forked_child(body: Callable[[], str], timeout: float) -> str:
    """Fork; the child runs ``body`` and sends back what it returns, then leaves by os._exit.

    Returns the child's answer, ``"error: ..."`` if ``body`` raised, or ``"hung"`` when no
    answer came within ``timeout`` (the child is then killed). Never waits longer.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            answer = body()
        except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
            answer = f"error: {exc!r}"
        os.write(write_fd, answer.encode() or b"?")
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
