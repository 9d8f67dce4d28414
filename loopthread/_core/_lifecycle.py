"""The lifecycle: start, stop, the loop thread's body, death, exit and fork.

See :mod:`loopthread._core._shutdown` for the phases that the loop thread runs at the end.
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Self, TypeVar

from loopthread import _process
from loopthread._core._base import thread_stack
from loopthread._core._shutdown import CLOSE_FLOOR
from loopthread._core._state import ShutdownReport, State
from loopthread._core._thread import LoopThreadBody
from loopthread._exceptions import LoopNotRunningError, LoopThreadError
from loopthread._util import (
    INF,
    Latch,
    describe,
    interrupt_behind,
    new_thread,
    remaining,
    wait_arg,
)
from loopthread._validate import check_timeout

T = TypeVar("T")


# How long past its deadline stop() waits for the loop thread before declaring it stuck.
_STOP_FLOOR = 0.25
# How long a late stop() waits for the loop to answer a ping before calling it blocked.
_PING = 0.15

__all__ = ["Lifecycle"]


class Lifecycle(LoopThreadBody):
    """The state machine and the thread that owns the loop."""

    def start(self) -> Self:
        """Start the thread and return once its loop runs; a no-op while already running.

        Raises:
            LoopThreadError: the LoopThread was stopped (or died); create a new one instead.
            LoopNotRunningError: no thread can be started (interpreter shutdown).
        """
        self._start()
        return self

    def _start(self) -> None:
        while not self._start_once():
            pass  # a start in another thread was interrupted before its thread ran: retry

    def _start_once(self) -> bool:
        """Start (or wait for the start in progress); False if that start was undone."""
        thread: threading.Thread | None = None
        try:
            with self._state_lock:
                started = self._started
                state = self._state
                if state is State.NEW:
                    thread = new_thread(self._thread_main, name=self._name)
                    self._thread = thread
                    self._state = State.STARTING
                elif state not in (State.STARTING, State.RUNNING):
                    raise LoopThreadError(
                        f"LoopThread {self._name!r} is {state.value}{self._death_suffix()}; "
                        "a stopped LoopThread cannot be restarted. Create a new LoopThread()."
                    )
            if thread is not None:
                thread.start()
        except BaseException as exc:
            signal_exc = interrupt_behind(exc)
            if thread is not None:
                self._start_interrupted(thread, signal_exc or exc)
            if signal_exc is not None:
                # A signal landed inside the stdlib's own wait in Thread.start() (its Event's
                # Condition), which then failed to restore its lock: the caller gets the
                # signal's exception it would have got, not "release unlocked lock".
                raise signal_exc from None
            raise
        started.wait()
        if self._state is State.NEW:
            return False
        if self._start_error is not None:
            raise self._start_error
        return True

    def _start_interrupted(self, thread: threading.Thread, exc: BaseException) -> None:
        """start() failed or was interrupted (Ctrl-C) before the thread was running."""
        if thread.ident is not None:
            return  # the thread runs: it moves the state on itself; the caller sees the signal
        if isinstance(exc, RuntimeError):  # "can't create new thread at interpreter shutdown"
            with self._state_lock:
                self._state = State.DEAD
                self._death_reason = f"the thread could not start: {describe(exc)}"
            self._started.set()
            self._stopped.set()
            _process.unregister(self)
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} could not start its thread ({exc}). Start loop "
                "threads before interpreter shutdown (not from atexit handlers)."
            ) from exc
        # Interrupted before any thread ran: as if start() had not been called. Callers
        # waiting for this start are woken (on the old event) and start it themselves.
        with self._state_lock:
            if self._state is State.STARTING and self._thread is thread:
                self._state = State.NEW
                self._thread = None
                waiters, self._started = self._started, Latch()
            else:
                return
        waiters.set()

    def stop(self, timeout: float | None = 5.0) -> ShutdownReport:
        """Stop accepting work, let work in flight finish, cancel what is left, close the loop.

        Idempotent. Bounded by ``timeout``: running work gets until the deadline less a
        reserve for cancellation and for closing resources. Called from the loop thread
        itself or one of its executor workers, it requests the shutdown and returns at once
        (``report.finished`` is False).

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else INF
        state = self._initiate_stop(deadline)
        if state is State.NEW:
            return self._report or ShutdownReport(finished=True)
        if state is State.STARTING:
            # Let the start in progress finish, then stop it (once: no recursion). The request
            # is recorded first: if the start outlasts this wait, the loop stops itself as soon
            # as it runs instead of coming up for good.
            with self._state_lock:
                if self._state is State.STARTING:
                    self._stop_when_running = min(self._stop_when_running, deadline)
            if not self._started.wait(wait_arg(remaining(deadline) + _STOP_FLOOR)):
                return ShutdownReport(
                    finished=False, deadline_hit=True, duration=time.monotonic() - started
                )
            state = self._initiate_stop(deadline)
            if state is State.NEW:  # pragma: no cover - a LoopThread never returns to NEW
                return self._report or ShutdownReport(finished=True)
        if self.owns_current_thread():
            return ShutdownReport(finished=False)
        if state in (State.STOPPED, State.DEAD) and self._stopped.is_set():
            return self._report or ShutdownReport(finished=True)
        # The caller whose deadline the shutdown runs by waits for it to finish (floors
        # included); one with a shorter deadline waits only that long.
        until = self._shutdown_due() if deadline >= self._stop_deadline else deadline + _STOP_FLOOR
        return self._wait_stopped(until, started)

    def _initiate_stop(self, deadline: float) -> State:
        """Move to STOPPING and stop the loop; return the prior state."""
        with self._state_lock:
            state = self._state
            if state is State.NEW:
                self._state = State.STOPPED
                self._report = ShutdownReport(finished=True)
            elif state is State.RUNNING:
                self._state = State.STOPPING
                self._stop_deadline = deadline
                self._stop_began = time.monotonic()
        if state is State.STOPPING and not self._driving:
            # An earlier stop() may have been interrupted (Ctrl-C) between the state change
            # and telling the loop: tell it again (loop.stop() is idempotent).
            self._stop_loop()
        if state is State.NEW:
            self._seal()
            self._close_components()
            self._stopped.set()
            _process.unregister(self)
        elif state is State.RUNNING:
            self._seal()
            # Logged before the loop is told, so that "stopping" always comes before the loop
            # thread's "stopped". No lock is held; a Ctrl-C here leaves STOPPING with the loop
            # not told, which the next stop() repairs (above).
            self._log_event("loop_thread.stopping", level="debug")
            self._stop_loop()
        return state

    def _stop_loop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # the loop is closed already: its thread is finishing
            pass

    def _wait_stopped(
        self, until: float, started: float, *, exiting: bool = False
    ) -> ShutdownReport:
        """Wait for the loop thread until ``until`` (this caller's deadline plus slack).

        The loop thread runs the shutdown by the deadline of the *first* ``stop()``; a later
        caller with a shorter timeout gets ``finished=False`` at its own deadline without
        touching a loop that is still shutting down in time. Only when the shutdown's own
        deadline, plus what its floors may add, has passed is the loop declared blocked.
        """
        if self._stopped.wait(wait_arg(until - time.monotonic())) and self._report is not None:
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                # The thread has only its return left; joining makes stop() mean "gone".
                thread.join(wait_arg(max(0.1, until - time.monotonic())))
            return self._report
        if time.monotonic() < self._shutdown_due():
            return ShutdownReport(
                finished=False, deadline_hit=True, duration=time.monotonic() - started
            )
        if not exiting and self._still_alive():
            # Late but answering (starved of the GIL by busy threads, not blocked): finished.
            return self._report or ShutdownReport(
                finished=True, deadline_hit=True, duration=time.monotonic() - started
            )
        # The loop thread did not finish in time: something blocks the loop (a coroutine that
        # calls time.sleep, a callback that never returns). Nothing may wait on it any longer.
        stuck, unhandled = self._abandon()
        return ShutdownReport(
            finished=False,
            abandoned=stuck,
            items_unhandled=unhandled,
            deadline_hit=True,
            duration=time.monotonic() - started,
        )

    def _still_alive(self) -> bool:
        """Past the due time: wait a little longer (at most 2 s) while the loop thread still
        answers, so a loop starved of the GIL by busy threads is not taken for a blocked one.
        True once it finished. A blocked loop costs one unanswered 0.15 s ping."""
        cap = time.monotonic() + 2.0
        loop = self._loop
        while time.monotonic() < cap:
            if loop is not None and not loop.is_closed():
                answered = Latch()
                try:
                    loop.call_soon_threadsafe(answered.set)
                except RuntimeError:  # closed meanwhile: the thread is closing up
                    pass
                else:
                    if not answered.wait(_PING):
                        return False  # the loop runs nothing: blocked
            # Answering, or past the loop phases (closing up): give it a moment.
            if self._stopped.wait(_PING):
                return self._report is not None
        return False

    def _shutdown_due(self) -> float:
        """When a healthy loop thread has finished the shutdown at the latest: its deadline,
        plus the floors its phases may add past it (each close component, the final waits),
        plus scheduling slack."""
        closers = sum(1 for c in self._sealed if c.stop_phase in ("close", "close_last"))
        return self._stop_deadline + _STOP_FLOOR + CLOSE_FLOOR * (2 + 2 * closers)

    def _abandon(self) -> tuple[int, int]:
        """Give up on a blocked loop: fail its callers, close its components (from this
        thread), log it with what was lost; return (calls failed, items unhandled)."""
        with self._state_lock:
            if self._state is State.STOPPING:
                self._state = State.DEAD
                self._death_reason = "stop() timed out while the loop was blocked"
        stack = thread_stack(self._thread_id)
        stuck = self._fail_pending("the loop thread did not stop in time (its loop is blocked)")
        unhandled = self._close_components()
        self._log_event(
            "loop_thread.stop_timed_out",
            level="error",
            calls_failed=stuck,
            items_unhandled=unhandled,
            loop_stack=stack,
        )
        return stuck, unhandled

    def begin_exit(self, deadline: float) -> None:
        """Interpreter exit: ask to stop by ``deadline`` (a loop still starting, once it runs)."""
        with self._state_lock:
            if self._state is State.STARTING:
                self._stop_when_running = min(self._stop_when_running, deadline)
        self._initiate_stop(deadline)

    def finish_exit(self, deadline: float) -> None:
        """Interpreter exit: wait for the stop, at most until ``deadline`` (plus a floor)."""
        if self._state in (State.STOPPING, State.STOPPED, State.DEAD) and (
            not self._stopped.is_set()
        ):
            if self.owns_current_thread():
                return
            # The floors of the phases may add a little past the shared deadline; a second
            # at most, so the exit stays bounded whatever the components are.
            floor = deadline + _STOP_FLOOR
            self._wait_stopped(
                max(floor, min(self._shutdown_due(), floor + 1.0)), time.monotonic(), exiting=True
            )

    def after_fork_in_child(self) -> bool:
        """In a forked child: a NEW LoopThread stays usable; a started one is dead here."""
        self._state_lock = threading.Lock()
        self.components.after_fork_in_child()
        self._pending.clear()
        self._inbox.clear()
        self._wake_scheduled = False
        self._thread_id = None
        if self._state is State.NEW:
            self._pid = os.getpid()
            return True
        self._stopped = Latch()
        self._stopped.set()
        self._started = Latch()
        self._started.set()
        if self._state is not State.STOPPED:
            self._state = State.DEAD
            self._death_reason = f"it was started in process {self._pid}, before fork()"
        self._closed_components = True  # what they hold belongs to the parent
        return False

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
