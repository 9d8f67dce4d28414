"""The state every part of the LoopThread core shares, its properties and messages."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from loopthread._core._call import (
    Call,
)
from loopthread._core._component import Component, Components
from loopthread._core._executor import LoopExecutor
from loopthread._core._state import LoopStats, ShutdownReport, State
from loopthread._exceptions import LoopNotRunningError
from loopthread._log import logger
from loopthread._util import Buckets, Latch

T = TypeVar("T")


__all__ = ["CoreBase", "thread_stack", "uvloop_factory"]


class CoreBase:
    """Attributes, read-only properties and messages of the core (no behaviour)."""

    # The state every part of the core shares; set by LoopThreadCore.__init__.
    _name: str
    _loop_factory: Callable[[], asyncio.AbstractEventLoop]
    _executor_workers: int | None
    _cancel_grace: float
    _state: State
    _state_lock: threading.Lock
    _started: Latch
    _stopped: Latch
    _start_error: BaseException | None
    _death_reason: str
    _report: ShutdownReport | None
    _stop_deadline: float
    _stop_began: float
    _pid: int
    _closed_components: bool
    _driving: bool
    _stop_when_running: float  # a stop() that came while starting: its deadline
    _unhandled_at_close: int  # the loop thread runs the shutdown driver
    _sealed: list[Component]
    _thread: threading.Thread | None
    _thread_id: int | None
    _loop: asyncio.AbstractEventLoop | None
    _executor: LoopExecutor | None
    _inbox: deque[Call]
    _wake_scheduled: bool
    _pending: set[Call]
    components: Components
    _loops_created: int
    _calls_started: int
    _calls_ok: int
    _calls_failed: int
    _calls_timed_out: int
    _calls_cancelled: int
    _call_durations: Buckets | None

    @property
    def name(self) -> str:
        """The name given at construction."""
        return self._name

    @property
    def running(self) -> bool:
        """True while the loop accepts work."""
        return self._state is State.RUNNING

    @property
    def state(self) -> str:
        """``new``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``dead``."""
        return self._state.value

    @property
    def pid(self) -> int:
        """The process this LoopThread was created (or, if NEW across fork, last moved) in."""
        return self._pid

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (closed once stopped).

        Raises:
            LoopNotRunningError: the LoopThread was never started.
        """
        if self._loop is None:
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} has no loop yet: call lt.start() first."
            )
        return self._loop

    @property
    def loop_started(self) -> bool:
        """True once ``start()`` created the thread (whatever happened to it since)."""
        return self._thread is not None

    @property
    def thread(self) -> threading.Thread:
        """The daemon thread that runs the loop (created by ``start()``).

        Raises:
            LoopNotRunningError: the LoopThread was never started.
        """
        if self._thread is None:
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} has no thread yet: call lt.start() first."
            )
        return self._thread

    @property
    def executor(self) -> LoopExecutor:
        """The loop's default executor, shared by all blocking work on this loop.

        Raises:
            LoopNotRunningError: the LoopThread was never started.
        """
        if self._executor is None:
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} has no executor yet: call lt.start() first."
            )
        return self._executor

    @property
    def cancel_grace(self) -> float:
        """Seconds a caller that gives up waits for the cancelled coroutine's cleanup."""
        return self._cancel_grace

    def in_loop_thread(self) -> bool:
        """True when called from this LoopThread's own thread."""
        return threading.get_ident() == self._thread_id

    def owns_current_thread(self) -> bool:
        """True on the loop thread or one of its executor workers (work this loop runs)."""
        if threading.get_ident() == self._thread_id:
            return True
        executor = self._executor
        return executor is not None and executor.owns_current_thread()

    def stats(self) -> LoopStats:
        """A consistent-enough snapshot of the counters (each field is read atomically)."""
        executor = self._executor
        queued, busy = executor.counts() if executor is not None else (0, 0)
        durations = self._call_durations
        return LoopStats(
            name=self._name,
            state=self._state.value,
            loops_created=self._loops_created,
            calls_started=self._calls_started,
            calls_ok=self._calls_ok,
            calls_failed=self._calls_failed,
            calls_timed_out=self._calls_timed_out,
            calls_cancelled=self._calls_cancelled,
            in_flight=len(self._pending),
            executor_workers=executor.max_workers if executor is not None else 0,
            executor_queue_depth=queued,
            executor_busy=busy,
            call_durations=durations.frozen() if durations is not None else None,
        )

    def __repr__(self) -> str:
        return (
            f"<LoopThread {self._name!r} {self._state.value} "
            f"in_flight={len(self._pending)} calls={self._calls_started}>"
        )

    def _initiate_stop(self, deadline: float) -> State:
        """Move to STOPPING and stop the loop (see ``Lifecycle``)."""
        raise NotImplementedError

    def _not_running_message(self) -> str:
        state = self._state
        if state is State.NEW:
            return (
                f"LoopThread {self._name!r} is not started: call lt.start() first, use "
                "`with LoopThread() as lt:`, or use loopthread.default()."
            )
        if state is State.STARTING:
            return f"LoopThread {self._name!r} is still starting: wait for lt.start() to return."
        if state is State.DEAD and self._pid != os.getpid():
            return (
                f"LoopThread {self._name!r} was started in process {self._pid}, and its thread "
                f"does not exist in this forked child (process {os.getpid()}). Call "
                "loopthread.default() (or loopthread.run()) where the work is done, not once "
                "at import: the child gets its own default loop; declare values such as "
                "connection pools with loopthread.resource(make). Or create a new LoopThread "
                "in the child (e.g. in gunicorn's post_fork)."
            )
        return (
            f"LoopThread {self._name!r} is {state.value}{self._death_suffix()}: it takes no more "
            "work. Create a new LoopThread, or use loopthread.default()."
        )

    def _death_suffix(self) -> str:
        return f" ({self._death_reason})" if self._death_reason else ""

    def _log_event(self, event: str, *, level: str = "info", **fields: Any) -> None:
        getattr(logger, level)(event, loop_thread=self._name, **fields)


def thread_stack(thread_id: int | None) -> str:
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError as exc:
        raise ImportError(
            "LoopThread(uvloop=True) needs uvloop: pip install 'loopthread[uvloop]'."
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
