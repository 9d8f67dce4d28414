"""All of loopthread's per-process global state, and the hooks that keep it right.

* the default LoopThread behind ``loopthread.default()``: created lazily under a lock,
  replaced when it died, and replaced in a forked child;
* the registry of live LoopThreads, so that interpreter exit stops (and drains) every one of
  them, and a forked child marks the ones it inherited as dead instead of hanging on them.

Exit: the registry is stopped from an ``atexit`` handler. That runs after non-daemon threads
were joined (they may still use the loop until then) and before ``logging.shutdown`` (which
``import logging`` registered earlier, so it runs later), so log records queued to a loop are
written before logging closes its handlers. The shutdown path starts no thread, which
Python 3.12+ forbids at exit.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from loopthread._exceptions import LoopNotRunningError

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["EXIT_TIMEOUT", "default", "register", "unregister"]

#: Seconds that interpreter exit gives all live LoopThreads, together, to drain and stop.
EXIT_TIMEOUT = 5.0

_lock = threading.Lock()
_default: LoopThread | None = None
_exiting = False
# Live LoopThreads in creation order (dict as an ordered weak set).
_registry: weakref.WeakKeyDictionary[LoopThread, None] = weakref.WeakKeyDictionary()


def register(lt: LoopThread) -> None:
    """Track ``lt`` for fork and exit handling."""
    _registry[lt] = None


def unregister(lt: LoopThread) -> None:
    """Forget ``lt`` (it stopped)."""
    _registry.pop(lt, None)


def default() -> LoopThread:
    """Return the process-wide LoopThread, started; create (or replace a dead) one if needed.

    Raises:
        LoopNotRunningError: the interpreter is shutting down.
    """
    lt = _default
    if lt is not None and lt.running:  # the hot path takes no lock
        return lt
    return _make_default()


def _make_default() -> LoopThread:
    global _default
    from loopthread._loopthread import LoopThread

    with _lock:
        lt = _default
        if lt is not None and lt.running:
            return lt
        if _exiting:
            raise LoopNotRunningError(
                "the interpreter is shutting down and loopthread's default loop has stopped; "
                "work submitted from atexit handlers cannot run on it."
            )
        lt = LoopThread("loopthread-default")
        lt.start()
        _default = lt
        return lt


def _stop_all_at_exit() -> None:
    global _exiting
    _exiting = True
    deadline = time.monotonic() + EXIT_TIMEOUT
    live = [lt for lt in reversed(list(_registry.keys())) if lt.running]
    # Ask every loop to stop first, then wait: a slow one does not delay the others' drain.
    for lt in live:
        lt._initiate_stop(deadline)
    for lt in live:
        lt.stop(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    # A fresh lock: another thread of the parent may have held the old one at fork time, and
    # that thread does not exist here to release it.
    global _lock, _default
    _lock = threading.Lock()
    _default = None
    for lt in list(_registry.keys()):
        lt._after_fork_in_child()
    _registry.clear()


atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
