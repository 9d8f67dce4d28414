"""The one primitive every crossing from a caller's thread into the loop goes through.

A :class:`Call` carries the coroutine, the caller's ``contextvars`` context and its own way of
waking the caller: a bare lock for the blocking facade (cheaper than an Event, a Future or a
Condition), a ``concurrent.futures.Future`` for ``submit``. The loop stores the outcome in the
call and wakes the caller directly: no done-callbacks, no extra loop iteration.

The caller takes the outcome out with :meth:`Call.unwrap`, which drops the call's references
to it first, as trio's ``outcome.unwrap()`` does: a failed call frees its exception, frames
and LoopThread as soon as the caller drops the exception, not at the next cyclic GC.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import CancelledError, Future, InvalidStateError
from types import CoroutineType
from typing import Any, Literal, TypeVar

from loopthread._exceptions import WouldDeadlockError
from loopthread._util import MAIN_SLICE, acquire, interrupt_behind, new_thread, remaining

__all__ = [
    "BlockingCall",
    "Call",
    "CancelReason",
    "FutureCall",
    "SubmitFuture",
    "close_if_unstarted",
]

T = TypeVar("T")

CancelReason = Literal["timeout", "interrupted", "cancelled", "stop"]


class Call:
    """One hand-off from a caller's thread to the loop, and its outcome."""

    __slots__ = ("cancel_reason", "context", "coro", "done", "error", "inner", "result", "task")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        inner: list[Coroutine[Any, Any, Any]] | None = None,
    ) -> None:
        self.coro = coro
        self.context = context
        # Coroutines that ``coro`` would have awaited (lt.gather): closed with it if it never ran.
        self.inner = inner
        self.task: asyncio.Task[None] | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel_reason: CancelReason | None = None

    def finish(self, result: Any, error: BaseException | None) -> None:
        """Store the outcome and wake the caller; the first outcome wins."""
        # A call failed by a dying loop may still be finished later by its own task.
        if self.done:
            return
        self.done = True
        self.result = result
        self.error = error
        self._wake()

    def close_unstarted(self) -> bool:
        """Close the coroutine (and the inner ones) if it never ran: no "never awaited".

        Returns True if it was closed here (it had not started)."""
        if not close_if_unstarted(self.coro):
            return False
        for inner in self.inner or ():
            close_if_unstarted(inner)
        return True

    def unwrap(self) -> Any:
        """Return the result or raise the error, dropping the call's references to both."""
        error, result = self.error, self.result
        self.error = self.result = None
        self.coro = None  # type: ignore[assignment]
        self.inner = None
        if error is not None:
            try:
                raise error
            finally:
                del error
        return result

    def _wake(self) -> None:
        raise NotImplementedError


class BlockingCall(Call):
    """A call whose caller blocks on a bare lock."""

    __slots__ = ("lock",)

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        inner: list[Coroutine[Any, Any, Any]] | None = None,
    ) -> None:
        super().__init__(coro, context, inner)
        self.lock = threading.Lock()
        self.lock.acquire()

    def _wake(self) -> None:
        self.lock.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until the outcome is in or ``timeout`` (None: no limit) expired."""
        return acquire(self.lock, timeout)


class FutureCall(Call):
    """A call whose outcome goes into a ``concurrent.futures.Future`` (``submit``)."""

    __slots__ = ("future",)

    def __init__(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context, future: Future[Any]
    ) -> None:
        super().__init__(coro, context)
        self.future = future

    def future_cancelled(self) -> bool:
        """True if the caller cancelled the future (read without its lock: see _wake)."""
        return getattr(self.future, "_state", None) in ("CANCELLED", "CANCELLED_AND_NOTIFIED")

    def _wake(self) -> None:
        # The loop thread never waits on a lock that a caller can leave held. Callers enter
        # the future's Condition through Python-level code (result(), done(), and
        # concurrent.futures.wait(), which acquires several in a loop), where a Ctrl-C can
        # land after the lock was taken and before anything owns it: the lock then stays held
        # for good. The same goes for the Event of every wait()/as_completed() waiting on the
        # future, which set_result() sets. So the outcome is set here only if the future's
        # lock is free at once and nobody waits through wait()/as_completed(); otherwise a
        # completer thread sets it (if a lock never comes free, only this future is stuck).
        future = self.future
        lock = getattr(getattr(future, "_condition", None), "_lock", None)
        if lock is None or not hasattr(lock, "acquire"):  # not CPython's Future: no choice
            self._set_outcome()
            return
        if lock.acquire(False):
            try:
                # A done-callback of the user's (beyond submit's own) may block: it runs in the
                # completer thread, as concurrent.futures runs callbacks in the setting thread.
                callbacks = getattr(future, "_done_callbacks", ())
                if not getattr(future, "_waiters", None) and len(callbacks) <= 1:
                    self._set_outcome()  # re-enters the (reentrant) lock
                    return
            finally:
                lock.release()
        _COMPLETER.run(self._set_outcome)

    def _set_outcome(self) -> None:
        # The future stays PENDING while the coroutine runs, so the user can still cancel() it;
        # if they did, setting the outcome is refused, and that is fine.
        error, self.error = self.error, None
        result, self.result = self.result, None
        try:
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)
        except InvalidStateError:
            pass
        finally:
            del error
            if isinstance(self.future, SubmitFuture):
                self.future.ended()


class _Completer:
    """Threads that set the outcomes the loop thread must not wait to set (see
    ``FutureCall._wake``): started when none is idle, idle ones blocked in ``get()`` (no
    wake-ups), as many as ever were busy at once. A thread stuck on a lock that a caller left
    held is lost, and the next job starts another."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are gone
                self._jobs, self._idle, self._pid = queue.SimpleQueue(), 0, os.getpid()
            self._jobs.put(job)
            if self._idle:
                self._idle -= 1
                return
        try:
            new_thread(self._work, self._jobs, name="loopthread-completer").start()
        except RuntimeError:  # no new threads at interpreter shutdown: do it here
            with self._lock:
                if self._jobs.empty():
                    return
            self._jobs.get()()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            job = jobs.get()
            try:
                job()
            except Exception:  # noqa: BLE001 - a done-callback's fault is the stdlib's to log
                pass
            del job
            with self._lock:
                if jobs is not self._jobs:
                    return
                self._idle += 1


_COMPLETER = _Completer()


class SubmitFuture(Future[T]):
    """The ``concurrent.futures.Future`` that ``lt.submit()`` returns.

    A signal (Ctrl-C) that lands inside the stdlib's wait in :meth:`result` or
    :meth:`exception`, between its Condition releasing the lock and the ``try`` that takes it
    back, comes out as ``RuntimeError: cannot release un-acquired lock``; here the caller gets
    the signal's own exception instead, as with ``lt.run()``.
    """

    #: The thread of the loop that sets this future: waiting for it there would deadlock.
    loop_thread_id: int | None = None
    _ended = False
    _when_ended: list[Callable[[], None]] | None = None

    def when_ended(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from any thread) once the coroutine is over, its cleanup
        included, even if the future was cancelled long before (at once if it is over)."""
        if self._when_ended is None:
            self._when_ended = []
        self._when_ended.append(callback)
        if self._ended:
            callback()

    def ended(self) -> None:
        """The coroutine is over (or will never run): run the ``when_ended`` callbacks."""
        self._ended = True
        for callback in self._when_ended or ():
            callback()

    def result(self, timeout: float | None = None) -> T:
        self._check_not_on_loop("result")
        timeout = self._wait_in_slices(timeout)
        try:
            return super().result(timeout)
        except RuntimeError as exc:
            raise _signal_of(self, exc) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._check_not_on_loop("exception")
        timeout = self._wait_in_slices(timeout)
        try:
            return super().exception(timeout)
        except RuntimeError as exc:
            raise _signal_of(self, exc) from None

    def _check_not_on_loop(self, method: str) -> None:
        if self.loop_thread_id == threading.get_ident() and not self.done():
            raise WouldDeadlockError(
                f"lt.submit(...).{method}() was called on the loop thread that runs the "
                "coroutine; it would wait forever for itself. In a coroutine, await the "
                "coroutine itself, or asyncio.wrap_future(future)."
            )

    def _wait_in_slices(self, timeout: float | None) -> float | None:
        # In the main thread, wait in slices so that a signal cannot be slept through (see
        # loopthread._util.MAIN_SLICE); returns the timeout left for the final wait.
        if threading.current_thread() is not threading.main_thread() or self.done():
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done() and (deadline is None or remaining(deadline) > MAIN_SLICE):
            try:
                super().exception(MAIN_SLICE)
            except TimeoutError:
                continue
            except RuntimeError as exc:
                raise _signal_of(self, exc) from None
            except CancelledError:
                break
        return None if deadline is None else remaining(deadline)


def _signal_of(future: Future[Any], exc: RuntimeError) -> BaseException:
    # The coroutine's own RuntimeError (stored in the future) is the caller's to see as is.
    stored: object = getattr(future, "_exception", None)
    if stored is exc:
        return exc
    return interrupt_behind(exc) or exc


def close_if_unstarted(coro: Coroutine[Any, Any, Any] | None) -> bool:
    """Close a coroutine that never ran, so it does not warn "never awaited"; True if closed.

    This may run on another thread than the loop's (stop() giving up on a blocked loop); a
    coroutine the loop thread is executing right then refuses, and is left to its task.
    """
    if coro is not None and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        try:
            coro.close()
        except (ValueError, RuntimeError):
            return False
        return True
    return False


async def invoke(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    """Call ``fn(*args, **kwargs)`` on the loop and await its result (``lt.call``)."""
    awaitable = fn(*args, **kwargs)
    if not is_awaitable(awaitable):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"lt.call() expects an async function; {name}(...) returned "
            f"{type(awaitable).__name__}, not an awaitable. Call a plain function directly, "
            "or run it in the executor: await loop.run_in_executor(None, fn)."
        )
    return await awaitable


def is_awaitable(value: object) -> bool:
    """True for a coroutine or any object with ``__await__``."""
    return type(value) is CoroutineType or hasattr(value, "__await__")


async def gather(coros: list[Coroutine[Any, Any, Any]], return_exceptions: bool) -> list[Any]:
    """``asyncio.gather`` as one coroutine (``lt.gather``)."""
    return list(await asyncio.gather(*coros, return_exceptions=return_exceptions))
