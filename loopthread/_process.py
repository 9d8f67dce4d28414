"""All of loopthread's per-process global state, and the only fork and exit hooks.

Owned here, and nowhere else:

* the registry of LoopThreads, held weakly in creation order under one lock, so that
  interpreter exit stops (and drains) every one of them together, and a forked child tells
  each one that its thread is gone;
* every module-level lock of the package (:func:`fork_safe_lock`): after ``fork()`` only the
  forking thread exists, so a lock another thread held then would stay held forever; the
  fork hook re-creates all of them before anything else runs in the child;
* the after-fork callbacks of modules that keep per-process state (the default loop,
  metrics' collectors, the write locks of structlog's loggers), run after the locks;
* the one ``os.register_at_fork`` hook and the one exit hook.

It knows LoopThreads only through the :class:`Member` protocol and imports nothing of the
package but :mod:`loopthread._util`, so no import cycle runs through it.

Exit: the hook runs from ``atexit``, after non-daemon threads were joined (they may use the
loops until then) and before ``logging.shutdown`` (registered earlier by ``import logging``,
so it runs later): log records queued to a loop are written before logging closes its
handlers. A ``multiprocessing`` child started by fork ends with ``os._exit()``, where
``atexit`` never runs; multiprocessing runs its own finalizers first, and the same hook is
registered there. All loops share one deadline, :data:`EXIT_TIMEOUT`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "EXIT_TIMEOUT",
    "Member",
    "after_exit",
    "exiting",
    "fork_safe_lock",
    "members",
    "on_exit",
    "on_fork_in_child",
    "register",
    "unregister",
]

#: Seconds that interpreter exit gives all live LoopThreads, together, to drain and stop.
EXIT_TIMEOUT = 5.0


class Member(Protocol):
    """What the registry needs of a LoopThread."""

    def begin_exit(self, deadline: float) -> None:
        """Ask to stop by ``deadline`` (a ``time.monotonic()`` value); do not wait."""

    def finish_exit(self, deadline: float) -> None:
        """Wait, at most until ``deadline``, for the stop begun by :meth:`begin_exit`."""

    def after_fork_in_child(self) -> bool:
        """Called in a forked child (only the forking thread exists); True: stay registered."""
        ...


# Plain C locks, not a wrapper: a wrapper's Python-level __enter__ can be interrupted by a
# signal right after the C acquire, before the `with` block is armed, and the lock stays held
# (bpo-29988). The fork hook resets them with _at_fork_reinit(), as the stdlib's logging,
# threading and concurrent.futures do with theirs.
#
# The registry is a dict of weak references touched only under _locks_guard, which the child
# re-creates first, and never by a weakref callback (dead entries are pruned as it grows). A
# WeakSet was used before: its set is mutated without a lock of ours (add, and the callbacks
# of dying locks), and on free-threaded builds a set's own mutex, contended when fork() came,
# can be handed to a thread that is paused for the fork (CPython gh-144513): the child then
# finds it held forever and hung in this very hook (1 child in 10-60 on 3.13t, while other
# threads created EventBuses). Under one guard of ours, no two threads ever wait for the
# dict's mutex, so none can be handed it.
_locks_guard = threading.Lock()
_locks: dict[int, weakref.ref[threading.Lock]] = {}
_locks_pruned_at = 0  # len(_locks) after the last prune


def fork_safe_lock() -> threading.Lock:
    """A new ``threading.Lock`` that the fork hook re-creates (releases) in a forked child."""
    global _locks_pruned_at
    lock = threading.Lock()
    ref = weakref.ref(lock)
    with _locks_guard:
        if len(_locks) >= 2 * _locks_pruned_at + 64:  # amortised: O(1) per lock made
            for key in [k for k, r in _locks.items() if r() is None]:
                del _locks[key]
            _locks_pruned_at = len(_locks)
        _locks[id(ref)] = ref
    return lock


_lock = fork_safe_lock()
_registry: dict[int, weakref.ref[Member]] = {}  # id -> ref, in creation order; under _lock
_exiting = False
_fork_callbacks: list[Callable[[], None]] = []
_exit_callbacks: list[Callable[[], None]] = []
_after_exit_callbacks: list[Callable[[], None]] = []


def register(member: Member) -> None:
    """Track ``member`` for fork and exit handling (until it unregisters or is collected)."""
    key = id(member)

    def forget(ref: weakref.ref[Member]) -> None:
        with _lock:
            if _registry.get(key) is ref:
                del _registry[key]

    ref = weakref.ref(member, forget)
    with _lock:
        _registry[key] = ref


def unregister(member: object) -> None:
    """Forget ``member`` (it stopped)."""
    with _lock:
        ref = _registry.get(id(member))
        if ref is not None and ref() is member:
            del _registry[id(member)]


def members() -> list[Member]:
    """The registered members, oldest first (a snapshot taken under the registry's lock)."""
    with _lock:
        refs = list(_registry.values())
    return [m for m in (ref() for ref in refs) if m is not None]


def exiting() -> bool:
    """True once the exit hook began: new LoopThreads would not be drained any more."""
    return _exiting


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback()`` in every forked child, after the locks were re-created."""
    _fork_callbacks.append(callback)


def on_exit(callback: Callable[[], None]) -> None:
    """Run ``callback()`` at the start of the exit hook, before the loops are stopped."""
    _exit_callbacks.append(callback)


def after_exit(callback: Callable[[], None]) -> None:
    """Run ``callback()`` at the end of the exit hook, once every loop stopped (or gave up)."""
    _after_exit_callbacks.append(callback)


def _stop_all_at_exit() -> None:
    global _exiting
    with _lock:
        if _exiting:
            return  # atexit and multiprocessing's finalizer may both call it
        _exiting = True
    for callback in list(_exit_callbacks):
        try:
            callback()
        except Exception:  # noqa: BLE001 - nothing may keep the loops from draining
            pass
    deadline = time.monotonic() + EXIT_TIMEOUT
    live = list(reversed(members()))
    # Ask every loop to stop first, then wait: one deadline for all of them together. A
    # signal's exception landing here (before the exit callbacks shielded the drain) must not
    # skip the other loops: each wait is bounded by the shared deadline anyway.
    for member in live:
        try:
            member.begin_exit(deadline)
        except BaseException:  # noqa: BLE001 - the drain of the others goes on
            pass
    for member in live:
        try:
            member.finish_exit(deadline)
        except BaseException:  # noqa: BLE001 - the drain of the others goes on
            pass
    for callback in list(_after_exit_callbacks):
        try:
            callback()
        except Exception:  # noqa: BLE001 - exit goes on
            pass


def _after_fork_in_child() -> None:
    global _exiting
    _locks_guard._at_fork_reinit()  # type: ignore[attr-defined]
    for ref in list(_locks.values()):
        lock = ref()
        if lock is not None:
            lock._at_fork_reinit()  # type: ignore[attr-defined]
    _exiting = False
    for callback in list(_fork_callbacks):
        callback()
    for member in members():
        if not member.after_fork_in_child():
            unregister(member)


def _register_multiprocessing_finalizer() -> None:
    # A multiprocessing child clears the finalizer registry it inherited before it runs the
    # target, then runs the after-fork callbacks it inherited: the exit hook is added there.
    try:
        from multiprocessing import util
    except ImportError:  # pragma: no cover - platforms without multiprocessing
        return
    util.register_after_fork(_MP_TOKEN, _add_finalizer)


class _Token:
    """A weakly referenceable key for ``multiprocessing.util.register_after_fork``."""


_MP_TOKEN = _Token()


def _add_finalizer(_token: object) -> None:
    from multiprocessing import util

    util.Finalize(None, _stop_all_at_exit, exitpriority=100)


atexit.register(_stop_all_at_exit)
_register_multiprocessing_finalizer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
