"""The loop thread core: thread, loop, executor, lifecycle, and the blocking facade.

Every crossing from a caller's thread into the loop goes through :mod:`._call`:

* the caller builds a call, appends it to ``_inbox`` and wakes the loop only if no wake-up is
  already scheduled, so a burst of calls from many threads costs one ``call_soon_threadsafe``;
* on the loop, ``_drain_inbox`` starts one Task per call, running ``_execute``, which stores
  the outcome (result or any exception, ``BaseException`` included) in the call and wakes the
  caller directly;
* a caller that gives up (``timeout=``, ``KeyboardInterrupt``) schedules ``_cancel_on_loop``
  and waits up to ``cancel_grace`` for the coroutine's cleanup: the work is cancelled, never
  orphaned.

Lifecycle: ``stop()`` moves the state to STOPPING and stops the loop; the loop thread then runs
the shutdown driver (:mod:`._shutdown`) as plain code after ``run_forever()`` returned. A loop
that stops without ``stop()`` (user code called ``loop.stop()``, or it crashed) fails its
callers at once and runs the same driver, so its components are still closed.

All counters are written by the loop thread only, so they need no lock; ``stats()`` reads them.
Nothing here logs while holding a lock, or between a state change and its action.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from loopthread import _process
from loopthread._core._base import uvloop_factory
from loopthread._core._call import (
    Call,
)
from loopthread._core._component import Component, Components
from loopthread._core._executor import LoopExecutor
from loopthread._core._lifecycle import Lifecycle
from loopthread._core._state import ShutdownReport, State
from loopthread._util import INF, Buckets, Latch
from loopthread._validate import check_positive_int, check_timeout

T = TypeVar("T")


__all__ = ["LoopThreadCore"]


class LoopThreadCore(Lifecycle):
    """The daemon thread, its loop and executor, the state machine and the blocking facade.

    :class:`loopthread.LoopThread` adds the monitor, metrics and the component conveniences;
    see its docstring for the arguments.
    """

    def __init__(
        self,
        name: str = "loopthread",
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        uvloop: bool = False,
        executor_workers: int | None = None,
        cancel_grace: float | None = 1.0,
        call_durations: Buckets | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str; got {name!r}.")
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(
                "loop_factory must be a callable that returns a new event loop, such as "
                f"asyncio.new_event_loop; got {loop_factory!r}."
            )
        if uvloop and loop_factory is not None:
            raise ValueError("pass either uvloop=True or loop_factory=..., not both.")
        if uvloop:
            loop_factory = uvloop_factory()
        if executor_workers is not None:
            check_positive_int(executor_workers, "executor_workers")
        grace = check_timeout(cancel_grace, "cancel_grace")
        self._name = name
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._executor_workers = executor_workers
        self._cancel_grace = grace if grace is not None else INF

        self._state = State.NEW
        self._state_lock = threading.Lock()
        self._started = Latch()
        self._stopped = Latch()
        self._start_error: BaseException | None = None
        self._death_reason = ""
        self._report: ShutdownReport | None = None
        self._stop_deadline = INF
        self._stop_began = 0.0
        self._pid = os.getpid()
        self._closed_components = False
        self._driving = False
        self._stop_when_running = INF
        self._unhandled_at_close = 0
        self._sealed: list[Component] = []  # the components stop() drives and closes

        # Created by start(): a Thread made before fork() cannot be started in the child (3.13).
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: LoopExecutor | None = None

        self._inbox: deque[Call] = deque()
        self._wake_scheduled = False
        self._pending: set[Call] = set()
        self.components = Components()
        """The components attached to this LoopThread (see ``loopthread._core._component``)."""

        self._loops_created = 0
        self._calls_started = 0
        self._calls_ok = 0
        self._calls_failed = 0
        self._calls_timed_out = 0
        self._calls_cancelled = 0
        self._call_durations = call_durations

        _process.register(self)
