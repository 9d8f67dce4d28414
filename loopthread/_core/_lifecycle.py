"""The lifecycle: start, stop, the loop thread's body, death, exit and fork.

See :mod:`loopthread._core._shutdown` for the phases that the loop thread runs at the end.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from types import TracebackType
from typing import Self, TypeVar

from loopthread import _process
from loopthread._core._base import thread_stack
from loopthread._core._component import Component
from loopthread._core._executor import LoopExecutor
from loopthread._core._facade import CallFacade
from loopthread._core._shutdown import CLOSE_FLOOR, drive_shutdown
from loopthread._core._state import ShutdownReport, State
from loopthread._exceptions import LoopNotRunningError, LoopThreadError
from loopthread._util import INF, describe, remaining, wait_arg
from loopthread._validate import check_timeout

T = TypeVar("T")


# How long past its deadline stop() waits for the loop thread before declaring it stuck.
_STOP_FLOOR = 0.25

__all__ = ["Lifecycle"]


class Lifecycle(CallFacade):
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
        with self._state_lock:
            state = self._state
            if state is State.NEW:
                self._state = State.STARTING
                thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
                self._thread = thread
            elif state not in (State.STARTING, State.RUNNING):
                raise LoopThreadError(
                    f"LoopThread {self._name!r} is {state.value}{self._death_suffix()}; "
                    "a stopped LoopThread cannot be restarted. Create a new LoopThread()."
                )
        if state is State.NEW:
            try:
                thread.start()
            except BaseException as exc:
                # "can't create new thread at interpreter shutdown", or Ctrl-C landing here:
                # either way no thread runs, and nothing may wait for one.
                with self._state_lock:
                    self._state = State.DEAD
                    self._death_reason = f"the thread could not start: {describe(exc)}"
                self._started.set()
                self._stopped.set()
                _process.unregister(self)
                if isinstance(exc, RuntimeError):
                    raise LoopNotRunningError(
                        f"LoopThread {self._name!r} could not start its thread ({exc}). "
                        "Start loop threads before interpreter shutdown (not from atexit "
                        "handlers)."
                    ) from exc
                raise
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

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
            # Let the start in progress finish, then stop it (once: no recursion).
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
        return self._wait_stopped(deadline + _STOP_FLOOR, started)

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
        if state is State.NEW:
            self._seal()
            self._close_components()
            self._stopped.set()
            _process.unregister(self)
        elif state is State.RUNNING:
            self._seal()
            loop = self._loop
            assert loop is not None
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop is closed already: its thread is finishing
                pass
            self._log_event("loop_thread.stopping", level="debug")
        return state

    def _wait_stopped(self, until: float, started: float) -> ShutdownReport:
        # The loop thread needs a moment past the deadline to finish (each close gets at
        # least CLOSE_FLOOR, then the executor and the loop are closed): `until` includes it.
        if self._stopped.wait(wait_arg(until - time.monotonic())) and self._report is not None:
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                # The thread has only its return left; joining makes stop() mean "gone".
                thread.join(wait_arg(max(0.1, until - time.monotonic())))
            return self._report
        # The loop thread did not finish in time: something blocks the loop (a coroutine that
        # calls time.sleep, a callback that never returns). Nothing may wait on it any longer.
        stuck = self._abandon()
        return ShutdownReport(
            finished=False,
            abandoned=stuck,
            items_unhandled=self._close_components(),
            deadline_hit=True,
            duration=time.monotonic() - started,
        )

    def _abandon(self) -> int:
        with self._state_lock:
            if self._state is State.STOPPING:
                self._state = State.DEAD
                self._death_reason = "stop() timed out while the loop was blocked"
        stack = thread_stack(self._thread_id)
        stuck = self._fail_pending("the loop thread did not stop in time (its loop is blocked)")
        self._log_event(
            "loop_thread.stop_timed_out", level="error", calls_failed=stuck, loop_stack=stack
        )
        return stuck

    def begin_exit(self, deadline: float) -> None:
        """Interpreter exit: ask to stop by ``deadline``."""
        self._initiate_stop(deadline)

    def finish_exit(self, deadline: float) -> None:
        """Interpreter exit: wait for the stop, at most until ``deadline`` (plus a floor)."""
        if self._state in (State.STOPPING, State.STOPPED, State.DEAD) and (
            not self._stopped.is_set()
        ):
            if self.owns_current_thread():
                return
            self._wait_stopped(deadline + _STOP_FLOOR, time.monotonic())

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
        self._stopped = threading.Event()
        self._stopped.set()
        self._started = threading.Event()
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

    def _thread_main(self) -> None:
        try:
            loop = self._loop_factory()
            if not isinstance(loop, asyncio.AbstractEventLoop):
                raise TypeError(
                    f"loop_factory returned {type(loop).__name__}, not an event loop; pass a "
                    "callable such as asyncio.new_event_loop or uvloop.new_event_loop."
                )
            executor = LoopExecutor(self._executor_workers, f"{self._name}-executor")
            loop.set_default_executor(executor)
            asyncio.set_event_loop(loop)
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            with self._state_lock:
                self._state = State.DEAD
                self._death_reason = f"the loop could not be created: {describe(exc)}"
            self._seal()
            self._close_components()
            self._started.set()
            self._stopped.set()
            _process.unregister(self)
            return
        self._loop = loop
        self._executor = executor
        self._thread_id = threading.get_ident()
        self._loops_created += 1
        failures: list[tuple[str, str]] = []
        # First in line: what the components schedule below runs once the loop is RUNNING.
        loop.call_soon(self._on_running, failures)
        for component in self.components:
            try:
                component.on_loop_start(loop)
            except Exception as exc:  # noqa: BLE001 - observability must never stop a loop
                failures.append((component.name, describe(exc)))
        crash: BaseException | None = None
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - a crash of the loop is reported, not lost
            crash = exc
        self._after_run_forever(loop, executor, crash)

    def _on_running(self, failures: list[tuple[str, str]]) -> None:
        with self._state_lock:
            self._state = State.RUNNING
        self._started.set()
        for name, error in failures:
            self._log_event(
                "loop_thread.component_start_failed", level="error", component=name, error=error
            )
        self._log_event(
            "loop_thread.started", level="debug", thread=threading.current_thread().name
        )

    def _after_run_forever(
        self, loop: asyncio.AbstractEventLoop, executor: LoopExecutor, crash: BaseException | None
    ) -> None:
        with self._state_lock:
            requested = self._state is State.STOPPING
            if not requested and self._state is not State.DEAD:
                self._state = State.DEAD
                self._death_reason = (
                    f"its loop crashed with {crash!r}"
                    if crash is not None
                    else "its loop was stopped by code running on it (loop.stop())"
                )
            deadline = self._stop_deadline
        failed = 0
        if not requested:
            self._seal()
            failed = self._fail_pending(self._death_reason)  # wake every caller at once
            self._log_event(
                "loop_thread.died",
                level="error",
                reason=self._death_reason,
                calls_failed=failed,
                exc_info=crash,
            )
            grace = self._cancel_grace
            deadline = time.monotonic() + (grace if grace != INF else 5.0)
        started = self._stop_began if requested else time.monotonic()
        try:
            outcome = drive_shutdown(
                loop,
                deadline=deadline,
                grace=self._cancel_grace,
                components=self._seal(),
                start_inbox=self._drain_inbox,
                pending_calls=lambda: list(self._pending),
                cancel_call=self._cancel_for_stop,
                finish_calls=requested,
            )
        except BaseException as exc:  # noqa: BLE001 - best effort; the loop must still close
            self._log_event("loop_thread.cleanup_failed", level="warning", error=describe(exc))
            from loopthread._core._shutdown import Outcome

            outcome = Outcome()
        grace = self._cancel_grace
        join = max(CLOSE_FLOOR, min(grace, remaining(deadline)))
        stuck = executor.shutdown_bounded(wait=True, cancel_futures=True, timeout=join)
        unhandled = self._close_components()
        try:
            loop.close()
        except Exception:  # noqa: BLE001 - a loop that will not close is left to the GC
            pass
        report = ShutdownReport(
            finished=True,
            completed=outcome.completed,
            cancelled=outcome.cancelled + failed,
            abandoned=outcome.abandoned + len(stuck),
            items_unhandled=unhandled,
            deadline_hit=outcome.deadline_hit,
            duration=time.monotonic() - started,
        )
        with self._state_lock:
            if self._state is State.STOPPING:
                self._state = State.STOPPED
            if self._report is None:
                self._report = report
        self._fail_pending(f"LoopThread {self._name!r} stopped")
        # Thread idents are reused once a thread ends: forget ours, or a new thread that gets
        # it would be taken for the loop thread by the deadlock guard.
        self._thread_id = None
        _process.unregister(self)
        self._log_event("loop_thread.stopped", level="debug", report=report)
        self._stopped.set()

    def _seal(self) -> list[Component]:
        """Refuse new components; remember the attached ones for the shutdown (once)."""
        sealed = self.components.seal(self._not_running_message())
        with self._state_lock:
            if not self._sealed:
                self._sealed = sealed
            return self._sealed

    def _close_components(self) -> int:
        """Every component's on_closed, once; return the items they could not handle."""
        with self._state_lock:
            if self._closed_components:
                return 0
            self._closed_components = True
            sealed = self._sealed or list(self.components)
        unhandled = 0
        for component in sealed:
            try:
                unhandled += component.on_closed()
            except Exception as exc:  # noqa: BLE001 - one component must not stop the others
                self._log_event(
                    "loop_thread.component_close_failed",
                    level="error",
                    component=component.name,
                    error=describe(exc),
                )
        return unhandled

    def _fail_pending(self, reason: str) -> int:
        calls = list(self._pending)
        self._pending.clear()
        self._inbox.clear()
        for call in calls:
            call.close_unstarted()
            call.finish(None, LoopNotRunningError(f"LoopThread {self._name!r}: {reason}."))
        return len(calls)
