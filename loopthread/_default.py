"""The process-wide default LoopThread behind ``loopthread.default()``; its only owner.

Created lazily, started outside the lock (``start()`` waits for another thread, and nothing
here waits while holding a lock), replaced once it stopped or died, and forgotten in a forked
child, where its thread does not exist. Work that the default loop itself runs (on its loop
thread or in its executor) gets that loop, even while it is stopping or draining at exit:
asking for "the default loop" from inside it never starts a second one.
"""

from __future__ import annotations

from loopthread import _process
from loopthread._exceptions import LoopNotRunningError
from loopthread._loopthread import LoopThread

__all__ = ["default"]

_lock = _process.fork_safe_lock()
_default: LoopThread | None = None


def default() -> LoopThread:
    """Return the process-wide LoopThread, started; create (or replace a dead) one if needed.

    Raises:
        LoopNotRunningError: the interpreter is shutting down.
    """
    lt = _default
    if lt is not None and (lt.running or lt.owns_current_thread()):  # the hot path: no lock
        return lt
    return _make_default()


def current_default() -> LoopThread | None:
    """The default LoopThread as it is now (None if none was made in this process)."""
    return _default


def _make_default() -> LoopThread:
    global _default
    with _lock:
        lt = _default
        if lt is None or lt.state in ("stopping", "stopped", "dead"):
            if _process.exiting():
                raise LoopNotRunningError(
                    "the interpreter is shutting down and loopthread's default loop has stopped; "
                    "work submitted from atexit handlers cannot run on it."
                )
            lt = LoopThread("loopthread-default")
            _default = lt
    lt.start()  # concurrent callers share it: start() is idempotent and waits for the loop
    return lt


def _forget_in_child() -> None:
    global _default
    _default = None


_process.on_fork_in_child(_forget_in_child)
