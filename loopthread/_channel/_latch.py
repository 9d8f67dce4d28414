"""Signal-safe waiting for the channel: a latch whose setter never blocks, and the signal a
stdlib ``Condition`` wait hides behind a ``RuntimeError``.

Why not ``threading.Event``: its ``wait()`` and ``set()`` both take the Event's own
``Condition`` with ``with self._cond:``, and ``Condition.__enter__`` is a Python frame. A signal
handler (they run in the main thread, between bytecodes) that raises there, after the C acquire
and before the ``with`` block owns the lock, leaves the lock held: the loop thread's later
``set()`` then blocks forever, and with it the whole loop. Here each waiter blocks on a fresh C
lock of its own and :meth:`Latch.set` only releases locks (a release never blocks): an
interrupted waiter can break nobody but itself.

Kept in the channel package while ``loopthread/_util.py`` is reworked elsewhere; the same
contract as ``loopthread._util.Latch`` / ``interrupt_behind`` there, so that moving it is a
change of import.
"""

from __future__ import annotations

import threading

__all__ = ["Latch", "interrupt_behind", "lock_wait"]


def lock_wait(timeout: float | None) -> float:
    """``timeout`` as the second argument of ``Lock.acquire(True, timeout)``: -1 for no limit,
    capped at ``threading.TIMEOUT_MAX`` (above it ``acquire`` raises ``OverflowError``)."""
    if timeout is None:
        return -1
    return min(max(0.0, timeout), threading.TIMEOUT_MAX)


class Latch:
    """A one-shot "it happened" flag: ``set()`` from any thread never blocks; ``wait()`` blocks
    on a C lock of its own.

    Lost wake-ups: a waiter registers its lock, then looks at the flag; :meth:`set` raises the
    flag, then pops and releases every registered lock. Under the GIL one of the two sees the
    other. A waiter interrupted by a signal at any point leaves at worst its own lock in the
    list, which the next ``set()`` releases for nobody (harmless).
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[threading.Lock] = []

    def set(self) -> None:
        """Mark it happened and wake every waiter (idempotent, any thread, never blocks)."""
        self._set = True
        waiters = self._waiters
        while True:
            try:
                lock = waiters.pop()  # atomic: each lock is released by one setter only
            except IndexError:
                return
            lock.release()

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` (None: no limit); True if set."""
        if self._set:
            return True
        lock = threading.Lock()
        lock.acquire()
        self._waiters.append(lock)
        try:
            if not self._set:
                lock.acquire(True, lock_wait(timeout))
            return self._set
        finally:
            try:
                self._waiters.remove(lock)
            except ValueError:  # set() took it already
                pass


#: What ``threading`` raises when a signal interrupted a ``Condition.wait`` between releasing
#: the lock and the ``try`` that takes it back, and the caller's ``with`` then released it again
#: (RLock; a plain Lock says "release unlocked lock").
_LOCK_ERRORS = frozenset({"cannot release un-acquired lock", "release unlocked lock"})


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The exception a signal handler raised (KeyboardInterrupt or any other) that a
    ``RuntimeError`` from an interrupted stdlib ``Condition`` wait hides in ``__context__``,
    if that is what ``exc`` is; else None."""
    context = exc.__context__
    if type(exc) is RuntimeError and context is not None and str(exc) in _LOCK_ERRORS:
        return context
    return None
