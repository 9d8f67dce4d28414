"""Small helpers shared by every module: deadlines, waits that never overflow, histograms.

Nothing here knows a LoopThread; the core and every component import from here.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Buckets", "HistogramSnapshot", "remaining", "wait_arg"]

INF = float("inf")


def new_thread(
    target: Callable[..., object], *args: object, name: str, daemon: bool = True
) -> threading.Thread:
    """A thread that runs ``target(*args)`` in an empty ``contextvars.Context``.

    Up to 3.13 every new thread starts with an empty context; from 3.14 a thread can inherit
    its creator's (the default on free-threaded builds, ``-X thread_inherit_context``). A
    thread of loopthread's is started by whichever caller came first, and that caller's
    variables (a request id) must not become the loop's, or every later callback's.
    """
    return threading.Thread(
        target=contextvars.Context().run, args=(target, *args), name=name, daemon=daemon
    )


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value), never negative."""
    return max(0.0, deadline - time.monotonic())


def wait_arg(seconds: float | None) -> float | None:
    """``seconds`` as a timeout that ``Lock.acquire``/``Event.wait``/``join`` accept.

    ``None`` and infinity both mean "no limit" (None); anything above
    ``threading.TIMEOUT_MAX`` would raise ``OverflowError`` there, so it is capped.
    """
    if seconds is None or math.isinf(seconds):
        return None
    return min(max(0.0, seconds), threading.TIMEOUT_MAX)


def lock_timeout(seconds: float | None) -> float:
    """Like :func:`wait_arg`, for ``Lock.acquire(True, timeout)``, where -1 means no limit."""
    value = wait_arg(seconds)
    return -1 if value is None else value


#: True on a free-threaded build running with the GIL off (3.13t and later).
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()

#: The longest the main thread sleeps in one ``Lock.acquire``. A signal that arrives just
#: before a thread parks in ``acquire()`` does not wake it (CPython runs Python-level handlers
#: between bytecodes, and interrupts a wait only on EINTR): Ctrl-C would wait for the wait to
#: end. Rare with the GIL, often seen with it off, where the loop thread runs truly in
#: parallel. Only the main thread runs signal handlers, so only it waits in slices.
MAIN_SLICE = 0.05 if FREE_THREADED else 0.5


def acquire(lock: threading.Lock, timeout: float | None) -> bool:
    """``lock.acquire(True, timeout)`` (None or inf: no limit) that a signal cannot sleep
    through in the main thread (see :data:`MAIN_SLICE`); True if acquired."""
    if threading.current_thread() is not threading.main_thread():
        return lock.acquire(True, lock_timeout(timeout))
    deadline = None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout
    while True:
        step = MAIN_SLICE if deadline is None else min(MAIN_SLICE, remaining(deadline))
        if lock.acquire(True, step):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Per-bucket counts (not cumulative; the last one is +Inf) and the sum of a histogram."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """How many observations in all."""
        return sum(self.counts)


class Buckets:
    """Histogram bucket counts written by one thread (the loop thread) and read by any.

    Cheaper than ``prometheus_client.Histogram``, which takes a lock per observation: with a
    single writer there is nothing to lock. A reader copies ``counts`` (one atomic C call)
    and derives the total count from that copy, so buckets and count always agree; only
    ``sum`` may be one observation ahead or behind.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (loop thread only)."""
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Return (per-bucket counts, sum); the counts are not cumulative."""
        return list(self.counts), self.sum

    def frozen(self) -> HistogramSnapshot:
        """A :class:`HistogramSnapshot` of the counts now."""
        counts, total = self.snapshot()
        return HistogramSnapshot(self.bounds, tuple(counts), total)


def describe(value: object) -> str:
    """``repr(value)``, or a stand-in if that raises: an exception whose ``repr()`` fails (a
    detached ORM object in its args) must not escape the code that isolates it."""
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - the point is to never raise
        return f"<{type(value).__name__} object (repr() failed)>"


class Latch:
    """A one-shot "it happened" flag whose setter never blocks, waited on with plain C locks.

    ``threading.Event`` goes through a stdlib ``Condition`` whose ``__enter__`` is a Python
    frame: a signal (Ctrl-C) in a waiting caller can raise after the lock was taken and before
    the ``with`` block owns it, leaving it held, and then ``Event.set()`` in the thread the
    caller waits for (the loop thread) blocks forever. Here each waiter blocks on its own fresh
    lock and :meth:`set` only releases locks: an interrupted waiter can break nobody but itself.

    Lost wake-ups: a waiter registers its lock, then looks at the flag; :meth:`set` raises the
    flag, then releases what is registered. One of the two sees the other.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: deque[threading.Lock] = deque()

    def set(self) -> None:
        """Mark it happened and wake every waiter (idempotent, from any thread, never blocks)."""
        self._set = True
        waiters = self._waiters
        while True:
            try:
                waiters.popleft().release()
            except IndexError:
                return
            except RuntimeError:  # released already by a concurrent set()
                continue

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` (None: no limit); True if set."""
        if self._set:
            return True
        waiter = threading.Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        try:
            if self._set:
                return True
            acquire(waiter, timeout)
            return self._set
        finally:
            with contextlib.suppress(ValueError):  # set() took it already
                self._waiters.remove(waiter)


#: What the stdlib's ``threading`` raises when a signal interrupted a ``Condition`` between
#: releasing its lock and the ``try`` that would take it back (a plain lock, an RLock).
_LOCK_ERRORS = frozenset({"release unlocked lock", "cannot release un-acquired lock"})


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The exception a signal handler raised (KeyboardInterrupt, SystemExit, any other) that a
    ``RuntimeError`` from an interrupted stdlib ``Condition`` wait hides in ``__context__``,
    if that is what ``exc`` is; else None."""
    context = exc.__context__
    if type(exc) is RuntimeError and context is not None and str(exc) in _LOCK_ERRORS:
        return context
    return None
