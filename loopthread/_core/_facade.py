"""The blocking facade: handing calls to the loop, waiting for them, running them there.

See :mod:`loopthread._core._loop` for how a call travels.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from types import CoroutineType
from typing import Any, TypeVar, TypeVarTuple, Unpack

from loopthread._core._base import CoreBase
from loopthread._core._call import (
    BlockingCall,
    Call,
    CancelReason,
    FutureCall,
    SubmitFuture,
    gather,
    invoke,
    is_awaitable,
)
from loopthread._core._guards import call_context, warn_if_in_a_loop
from loopthread._core._state import State
from loopthread._exceptions import (
    LoopNotRunningError,
    LoopThreadError,
    WouldDeadlockError,
)
from loopthread._validate import as_coroutine, check_timeout, close_awaitables

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


# Python 3.12+ can run a Task's first step synchronously ("eager"): a coroutine that finishes
# without suspending then costs no extra loop iteration. 3.11 has no such option.
_EAGER = sys.version_info >= (3, 12)

__all__ = ["CallFacade"]


class CallFacade(CoreBase):
    """``run``/``call``/``gather``/``submit`` and their loop-side half."""

    def run(self, awaitable: Awaitable[T], /, *, timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop and block until it is done; return its result.

        The caller's ``contextvars`` are visible inside. On ``timeout`` or
        ``KeyboardInterrupt`` the coroutine is cancelled on the loop and its cleanup gets up to
        ``cancel_grace`` seconds before this raises.

        Raises:
            TypeError: ``awaitable`` is not awaitable (e.g. ``lt.run(fetch)``).
            ValueError: ``timeout`` is negative.
            WouldDeadlockError: called from the loop's own thread; ``await`` instead.
            LoopNotRunningError: the loop is not running (or stopped while this waited).
            TimeoutError: ``timeout`` expired.
            BaseException: whatever the coroutine raised, with its traceback.
        """
        coro = (
            awaitable
            if type(awaitable) is CoroutineType
            else as_coroutine(awaitable, "lt.run", self._loop)
        )
        return self._run(coro, timeout, "lt.run")  # type: ignore[no-any-return]

    def call(
        self,
        async_fn: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: *Ts,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Call ``async_fn(*args, **kwargs)`` on the loop and block until it is done.

        The function itself is called on the loop thread (so it may use the running loop).
        Positional arguments are type-checked; pass required keyword-only ones via partial.

        Raises:
            TypeError: ``async_fn`` is not callable (a coroutine passed here: use ``lt.run``).
            ValueError, WouldDeadlockError, LoopNotRunningError, TimeoutError: as :meth:`run`.
        """
        if not callable(async_fn):
            close_awaitables([async_fn])
            if is_awaitable(async_fn):
                raise TypeError(
                    "lt.call() takes an async function and its arguments, not an awaitable: "
                    "use lt.run(fetch(x)) or lt.call(fetch, x)."
                )
            raise TypeError(
                f"lt.call() takes an async function; got {type(async_fn).__name__} {async_fn!r}."
            )
        return self._run(invoke(async_fn, args, kwargs), timeout, "lt.call")  # type: ignore[no-any-return]

    def gather(
        self,
        *awaitables: Awaitable[Any],
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run many awaitables concurrently on the loop with one hand-off; block for all.

        Results come back in argument order. With ``return_exceptions=False`` the first
        exception is raised (the others keep running until done, as ``asyncio.gather``).

        Raises:
            TypeError: one of the arguments is not awaitable (all coroutines are closed).
            ValueError, WouldDeadlockError, LoopNotRunningError, TimeoutError: as :meth:`run`.
        """
        coros: list[Coroutine[Any, Any, Any]] = []
        for index, item in enumerate(awaitables):
            try:
                coros.append(as_coroutine(item, "lt.gather", self._loop))
            except (TypeError, LoopThreadError) as exc:
                close_awaitables(awaitables)
                close_awaitables(coros)
                raise type(exc)(f"lt.gather() argument {index}: {exc}") from None
        if not coros:
            return []
        outer = gather(coros, return_exceptions)
        try:
            timeout = check_timeout(timeout)
        except Exception:
            outer.close()
            close_awaitables(coros)
            raise
        call = BlockingCall(outer, call_context(), inner=coros)
        self._enqueue_guarded(call, "lt.gather")
        return self._wait(call, timeout, "lt.gather")  # type: ignore[no-any-return]

    def submit(self, awaitable: Awaitable[T], /) -> Future[T]:
        """Schedule ``awaitable`` on the loop and return a ``concurrent.futures.Future`` at once.

        Never blocks, not even while the loop is busy, and is safe from the loop thread.
        Cancelling the returned future cancels the coroutine on the loop: one cancelled before
        the loop started it never runs (on every Python version); one already running gets
        ``CancelledError`` at its current ``await`` (its ``finally`` runs).
        ``concurrent.futures.wait()`` and ``as_completed()`` see the cancellation. Waiting on
        the future from the loop's own thread raises ``WouldDeadlockError``.

        Raises:
            TypeError: ``awaitable`` is not awaitable.
            LoopNotRunningError: the loop is not running.
        """
        coro = (
            awaitable
            if type(awaitable) is CoroutineType
            else as_coroutine(awaitable, "lt.submit", self._loop)
        )
        future: SubmitFuture[T] = SubmitFuture()
        future.loop_thread_id = self._thread_id
        call = FutureCall(coro, call_context(), future)
        self._enqueue_guarded(call, None)

        def on_done(fut: Future[T]) -> None:
            if fut.cancelled():
                # cancel() leaves a future CANCELLED; only set_running_or_notify_cancel() tells
                # concurrent.futures.wait()/as_completed() waiting on it (anyio's #575).
                fut.set_running_or_notify_cancel()
                self._cancel_soon(call, "cancelled")

        future.add_done_callback(on_done)
        return future

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float | None, api: str) -> Any:
        if timeout is not None:
            try:
                timeout = check_timeout(timeout)
            except (TypeError, ValueError):
                coro.close()
                raise
        call = BlockingCall(coro, call_context())
        self._enqueue_guarded(call, api)
        return self._wait(call, timeout, api)

    def _check_accepting(self, blocking_api: str | None) -> None:
        """Raise if a call made now would be refused (the state is checked again on enqueue)."""
        if blocking_api is not None and threading.get_ident() == self._thread_id:
            raise WouldDeadlockError(
                f"{blocking_api}() was called from the loop thread of LoopThread "
                f"{self._name!r}; it would wait forever for itself. Inside a coroutine, "
                "await the coroutine instead (result = await fetch()), or use lt.submit()."
            )
        if self._state is not State.RUNNING:
            raise LoopNotRunningError(self._not_running_message())

    def _enqueue_guarded(self, call: Call, blocking_api: str | None) -> None:
        if blocking_api is not None and _get_running_loop() is not None:
            warn_if_in_a_loop(call, blocking_api, self._name, self._thread_id)
        try:
            self._enqueue(call, blocking_api)
        except LoopThreadError:
            raise  # refused: nothing was queued
        except BaseException:
            # A signal (Ctrl-C) can raise between any two bytecodes of _enqueue, e.g. after
            # the call was queued or the wake-up flag set, but before the loop was woken.
            # Cancelling through the loop also drains the inbox, which repairs the flag.
            if isinstance(call, BlockingCall):
                self._cancel_and_wait(call, "interrupted")
            else:
                self._cancel_soon(call, "interrupted")
            raise

    def _enqueue(self, call: Call, blocking_api: str | None) -> None:
        if blocking_api is not None and threading.get_ident() == self._thread_id:
            call.close_unstarted()
            self._check_accepting(blocking_api)
        with self._state_lock:
            accepting = self._state is State.RUNNING
            if accepting:
                self._pending.add(call)
                self._inbox.append(call)
                if self._wake_scheduled:
                    return
                self._wake_scheduled = True
        if not accepting:
            call.close_unstarted()
            raise LoopNotRunningError(self._not_running_message())
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:
            # The loop closed under us (it died); the death path fails every pending call.
            pass

    def _wait(self, call: BlockingCall, timeout: float | None, api: str) -> Any:
        try:
            finished = call.wait(timeout)
        except BaseException:
            # KeyboardInterrupt (or SystemExit from a signal handler) while waiting: cancel the
            # coroutine on the loop and give its cleanup cancel_grace before re-raising. A call
            # already done has nothing to clean up, and its wake-up may be consumed already
            # (the interrupt landed just after the lock was acquired): waiting would only
            # burn cancel_grace.
            if not call.done:
                self._cancel_and_wait(call, "interrupted")
            raise
        if not finished:
            self._cancel_and_wait(call, "timeout")
            if not (call.done and call.cancel_reason is None):
                cleanup = (
                    "its cleanup finished"
                    if call.done
                    else f"its cleanup was still running after cancel_grace={self._cancel_grace}s"
                )
                call.error = call.result = None  # nothing of the cancelled run is kept
                raise TimeoutError(
                    f"{api}() did not finish within timeout={timeout}s; the coroutine was "
                    f"cancelled on the loop and {cleanup}."
                )
            # It finished before the cancellation reached it: the result is not lost.
        return call.unwrap()

    def _cancel_soon(self, call: Call, reason: CancelReason) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(self._cancel_on_loop, call, reason)
        except RuntimeError:  # the loop is closed; the call was failed when it closed
            return False
        return True

    def _cancel_and_wait(self, call: BlockingCall, reason: CancelReason) -> None:
        if self._cancel_soon(call, reason):
            call.wait(self._cancel_grace)

    def _drain_inbox(self) -> None:
        # Reset the flag before draining: a call appended after this line schedules a new
        # drain, and one appended before it is taken by the loop below. No call is left behind.
        self._wake_scheduled = False
        inbox = self._inbox
        while inbox:
            call = inbox.popleft()
            if call.done:  # cancelled before it started
                continue
            if isinstance(call, FutureCall) and call.future_cancelled():
                # Cancelled before the loop took it up: it never runs, on every Python (3.12+
                # would otherwise run it to its first await in the eager first step).
                call.cancel_reason = "cancelled"
                call.close_unstarted()
                self._finish_failed(call, asyncio.CancelledError())
                continue
            self._calls_started += 1
            call.task = self._new_task(self._execute(call), call.context, call.coro)

    def _new_task(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context, user: object
    ) -> asyncio.Task[None]:
        # Named for stall reports, asyncio.all_tasks() and `python -m asyncio ps` (3.14).
        name = f"loopthread:{self._name}:{getattr(user, '__qualname__', '?')}"
        loop = self._loop
        assert loop is not None
        if _EAGER and loop.get_task_factory() is None:
            return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return loop.create_task(coro, name=name, context=context)

    async def _execute(self, call: Call) -> None:
        if call.done:  # cancelled between its task's creation and this first step
            return
        durations = self._call_durations
        started = time.perf_counter() if durations is not None else 0.0
        try:
            result = await call.coro
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the caller
            # SystemExit and KeyboardInterrupt raised by the coroutine reach the caller and do
            # not stop the loop, which is why this catches BaseException.
            call.close_unstarted()  # a task cancelled before its first step
            self._finish_failed(call, exc)
            del exc
        else:
            self._pending.discard(call)
            if call.cancel_reason == "timeout":
                self._calls_timed_out += 1
            else:
                self._calls_ok += 1
            call.finish(result, None)
            del result
        if durations is not None:  # after finish(): the caller is not kept waiting for this
            durations.observe(time.perf_counter() - started)

    def _finish_failed(self, call: Call, exc: BaseException) -> None:
        self._pending.discard(call)
        reason = call.cancel_reason
        if reason == "timeout":
            self._calls_timed_out += 1
        elif reason == "stop":
            self._calls_cancelled += 1
            stopped = LoopNotRunningError(
                f"cancelled because LoopThread {self._name!r} was stopped before the "
                "coroutine finished (stop() deadline reached)."
            )
            stopped.__cause__ = exc
            exc = stopped
        elif reason is not None or isinstance(exc, asyncio.CancelledError):
            self._calls_cancelled += 1
        else:
            self._calls_failed += 1
        call.finish(None, exc)

    def _cancel_on_loop(self, call: Call, reason: CancelReason) -> None:
        if not call.done:
            call.cancel_reason = reason
            task = call.task
            if task is None or call.close_unstarted():
                # Not started: it never will. Cancelling a task before its first step would
                # skip _execute entirely (and with it the caller's wake-up), so finish the call
                # here; _execute, if its task runs later, sees it done and returns.
                call.close_unstarted()  # (if the task is None)
                self._finish_failed(call, asyncio.CancelledError())
            else:
                task.cancel()
        # See _enqueue_guarded: a caller interrupted between setting the wake-up flag and waking
        # the loop leaves the flag set; draining here resets it (even with an empty inbox).
        if self._state is State.RUNNING:
            self._drain_inbox()

    def _cancel_for_stop(self, call: Call) -> None:
        self._cancel_on_loop(call, "stop")
