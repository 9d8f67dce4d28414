"""The loop thread's body: create the loop, run it, then drive the shutdown and close.

See :mod:`loopthread._core._shutdown` for the phases it runs after ``run_forever()`` returned.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TypeVar

from loopthread import _process
from loopthread._core._component import Component
from loopthread._core._executor import LoopExecutor
from loopthread._core._facade import CallFacade
from loopthread._core._shutdown import CLOSE_FLOOR, drive_shutdown
from loopthread._core._state import ShutdownReport, State
from loopthread._exceptions import LoopNotRunningError
from loopthread._util import INF, describe, remaining

T = TypeVar("T")


# How long past its deadline stop() waits for the loop thread before declaring it stuck.
_STOP_FLOOR = 0.25

__all__ = ["LoopThreadBody"]


class LoopThreadBody(CallFacade):
    """What runs on the loop thread, from its first line to its last."""

    def _thread_main(self) -> None:
        with self._state_lock:
            # A start() interrupted (Ctrl-C) while this thread was being created was undone:
            # this thread is not the LoopThread's any more and must not run a loop.
            if self._thread is not threading.current_thread():
                return
            # From the first line on: anything this thread logs while the loop is being made
            # (asyncio logs "Using selector" at DEBUG) may reach a LoopHandler that asks for
            # default(); it must be told "that is you", not wait for this very start.
            self._thread_id = threading.get_ident()
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
            self._thread_id = None
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
        # Logged before start() returns, so that "started" always comes before anything the
        # caller does next (its stop() logs "stopping" from its own thread).
        for name, error in failures:
            self._log_event(
                "loop_thread.component_start_failed", level="error", component=name, error=error
            )
        self._log_event(
            "loop_thread.started", level="debug", thread=threading.current_thread().name
        )
        with self._state_lock:
            self._state = State.RUNNING
            stop_by = self._stop_when_running
        self._started.set()
        if stop_by != INF:  # stop() (or exit) came while this loop was still starting
            self._initiate_stop(stop_by)

    def _after_run_forever(
        self, loop: asyncio.AbstractEventLoop, executor: LoopExecutor, crash: BaseException | None
    ) -> None:
        self._driving = True
        with self._state_lock:
            requested = self._state is State.STOPPING
            abandoned = self._state is State.DEAD  # stop() gave up on it; now it unblocked
            if not requested and not abandoned:
                self._state = State.DEAD
                self._death_reason = (
                    f"its loop crashed with {crash!r}"
                    if crash is not None
                    else "its loop was stopped by code running on it (loop.stop())"
                )
            deadline = self._stop_deadline
        failed = 0
        if not requested and not abandoned:
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
        # Components first: the loop no longer runs, so the monitor stops watching it (joining
        # the executor below is not a stalled loop iteration) and channels count what is left.
        unhandled = self._close_components()
        grace = self._cancel_grace
        join = max(CLOSE_FLOOR, min(grace, remaining(deadline)))
        stuck = executor.shutdown_bounded(wait=True, cancel_futures=True, timeout=join)
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
                return self._unhandled_at_close  # the same answer for every caller
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
        self._unhandled_at_close = unhandled
        return unhandled

    def _fail_pending(self, reason: str) -> int:
        calls = list(self._pending)
        self._pending.clear()
        self._inbox.clear()
        for call in calls:
            call.close_unstarted()
            call.finish(None, LoopNotRunningError(f"LoopThread {self._name!r}: {reason}."))
        return len(calls)
