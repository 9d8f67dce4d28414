"""Shared helpers of the reliability suite: sizes, bounded waits, RSS, subprocesses, figures.

Sizes: every scenario has a CI size (``make test``) and a soak size (``make soak``, which sets
``LOOPTHREAD_SOAK=1``). Figures: each scenario records what it did (calls, events, faults
injected, what was lost) with :func:`record`; ``tests/reliability/conftest.py`` prints them as
a table at the end of the run (the source of the table in ``tests/reliability/README.md``).
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: True under ``make soak``: scenarios run at their full size.
SOAK = os.environ.get("LOOPTHREAD_SOAK", "") not in ("", "0")

#: Seconds within which every call must have an answer. A bound that fails loudly, not a wait:
#: a healthy run answers in milliseconds.
ANSWER_BOUND = 20.0 if SOAK else 10.0

#: Scheduling slack (seconds) allowed on top of a documented deadline on a loaded 2-core box.
SLACK = 0.5

#: Figures of the scenarios that ran, by scenario name, in run order.
FIGURES: dict[str, dict[str, Any]] = {}
_figures_lock = threading.Lock()

needs_fork = hasattr(os, "fork")


def scaled(ci: int, soak: int) -> int:
    """``ci`` in a normal run, ``soak`` under ``make soak``."""
    return soak if SOAK else ci


def record(scenario: str, **figures: Any) -> None:
    """Add ``figures`` (adding up numbers) to ``scenario``'s row of the end-of-run table."""
    with _figures_lock:
        row = FIGURES.setdefault(scenario, {})
        for key, value in figures.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key in row:
                row[key] += value
            else:
                row[key] = value


def rss_kib() -> int:
    """This process's resident set size in KiB, from ``/proc/self/status`` (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def answer_of(future: concurrent.futures.Future[Any], bound: float = ANSWER_BOUND) -> Any:
    """The outcome of ``future`` (its result, or the exception it holds, returned not raised).

    Fails the test when there is no answer within ``bound``: ``TimeoutError`` is a legitimate
    answer, so "no answer" is asked of ``wait()``, not of ``result()``.
    """
    done, _ = concurrent.futures.wait([future], timeout=bound)
    assert done, f"a call got no answer within {bound}s: it would have waited forever"
    if future.cancelled():
        return concurrent.futures.CancelledError()
    exc = future.exception()
    return exc if exc is not None else future.result()


def all_answers(
    futures: Iterable[concurrent.futures.Future[Any]], bound: float = ANSWER_BOUND
) -> list[Any]:
    """:func:`answer_of` for each future, with one shared bound."""
    futures = list(futures)
    _, not_done = concurrent.futures.wait(futures, timeout=bound)
    assert not not_done, f"{len(not_done)} calls got no answer within {bound}s"
    return [answer_of(f, 0) for f in futures]


def in_forked_child(body: Callable[[], str], timeout: float = 20.0) -> str:
    """Run ``body`` in a forked child and return what it returned (or why it failed).

    The child always leaves through ``os._exit`` (no parent cleanup runs twice); a child that
    does not answer within ``timeout`` is killed and the answer is ``"hung"``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            answer = body()
        except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
            answer = f"error: {exc!r}"
        os.write(write_fd, answer.encode())
        os._exit(0)
    os.close(write_fd)
    try:
        chunks: list[bytes] = []
        while True:
            ready, _, _ = select.select([read_fd], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return "hung"
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def run_python(
    args: list[str], timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter on ``args``; a hang past ``timeout`` fails the test."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
