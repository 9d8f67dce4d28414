"""``with lt.enter(async_cm)``: an async context manager used from sync code, entered and
exited in one task on the loop (see :class:`EnteredContext`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import CancelledError, Future, InvalidStateError
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from loopthread._core._call import SubmitFuture
from loopthread._exceptions import LoopNotRunningError, LoopThreadError, WouldDeadlockError
from loopthread._util import Latch
from loopthread._validate import close_awaitables

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from loopthread._loopthread import LoopThread

T = TypeVar("T")

__all__ = ["EnteredContext"]


class EnteredContext(Generic[T]):
    """``with lt.enter(async_cm) as value:`` — an async context manager used from sync code.

    ``__aenter__`` and ``__aexit__`` run on the loop in one task, which waits between them;
    the exception that leaves the ``with`` block is passed to ``__aexit__`` as it is, and what
    ``__aexit__`` returns decides whether it is suppressed, as with ``async with``.
    """

    __slots__ = ("_cm", "_entered", "_exc", "_exit", "_held", "_lt", "_task")

    def __init__(self, lt: LoopThread, cm: AbstractAsyncContextManager[T]) -> None:
        if not (hasattr(type(cm), "__aenter__") and hasattr(type(cm), "__aexit__")):
            close_awaitables([cm])
            hint = (
                " It is a coroutine: await-able, not an async context manager; use lt.run()."
                if asyncio.iscoroutine(cm)
                else ""
            )
            raise TypeError(
                f"lt.enter() takes an async context manager (an object with __aenter__ and "
                f"__aexit__, e.g. httpx.AsyncClient()); got {type(cm).__name__}.{hint}"
            )
        self._lt = lt
        self._cm = cm
        self._entered: Future[T] = Future()
        self._exit: asyncio.Event | None = None
        self._exc: tuple[Any, Any, Any] = (None, None, None)
        self._held: Future[bool] | None = None
        self._task: asyncio.Task[bool] | None = None

    async def _hold(self) -> bool:
        cm = self._cm
        kind = type(cm)
        exit_ = asyncio.Event()
        self._exit = exit_
        try:
            value = await kind.__aenter__(cm)
        except asyncio.CancelledError as exc:
            # Not the caller's doing (it cancels only after giving up): the LoopThread stopped.
            stopped = LoopNotRunningError(
                f"lt.enter(): LoopThread {self._lt.name!r} stopped while __aenter__ ran."
            )
            stopped.__cause__ = exc
            _fail(self._entered, stopped)
            raise
        except BaseException as exc:
            _fail(self._entered, exc)
            raise
        self._entered.set_result(value)
        try:
            await exit_.wait()
        except BaseException as exc:  # cancelled while entered (stop(), Ctrl-C): as async with
            if not await kind.__aexit__(cm, type(exc), exc, exc.__traceback__):
                raise
            return False
        return bool(await kind.__aexit__(cm, *self._exc))

    def __enter__(self) -> T:
        if self._held is not None:
            raise LoopThreadError("this lt.enter(...) context was entered already; make another.")
        if self._lt.in_loop_thread():
            close_awaitables([self._cm])
            raise WouldDeadlockError(
                "lt.enter() was used on the loop thread, which runs __aenter__: it would wait "
                "for itself. In a coroutine, use `async with` directly."
            )
        held = None
        try:
            held = self._held = self._lt.submit(self._hold())
            if isinstance(held, SubmitFuture):  # a hold that never ran still answers
                held.when_ended(lambda: _fail(self._entered, _failure(held)))
            return self._entered.result()
        except BaseException as exc:
            # __aenter__ failed (its error is raised here): nothing to exit, as with `async
            # with`. Interrupted (Ctrl-C) while __aenter__ ran: the task is cancelled on the
            # loop; if __aenter__ finished meanwhile, the context is exited with the interrupt.
            if held is not None and not held.done():
                if self._entered.done() and self._entered.exception() is None:
                    self._exc = (type(exc), exc, exc.__traceback__)
                    self._signal_exit()
                else:
                    held.cancel()
                self._wait_over(held)
            raise

    def _signal_exit(self) -> bool:
        exit_ = self._exit
        if exit_ is None:
            return False
        try:
            self._lt.loop.call_soon_threadsafe(exit_.set)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        held = self._held
        assert held is not None
        self._exc = (exc_type, exc, tb)
        gone = self._lt.pid != os.getpid() or held.done() or not self._signal_exit()
        if gone and not held.done():  # a forked child, or a loop that closed without it
            raise LoopNotRunningError(
                f"lt.enter(): the loop of LoopThread {self._lt.name!r} is gone (stopped, or "
                "this is a forked child): __aexit__ could not run."
            )
        try:
            return held.result()
        except BaseException as raised:
            if raised is exc:
                return False  # __aexit__ re-raised the block's own exception
            if not held.done():  # interrupted while __aexit__ ran
                held.cancel()
                self._wait_over(held)
            if gone and isinstance(raised, CancelledError | asyncio.CancelledError):
                if exc is not None:
                    return False  # the block's own exception goes on
                raise LoopNotRunningError(
                    f"the async context entered by lt.enter() was exited when LoopThread "
                    f"{self._lt.name!r} stopped (its __aexit__ ran with CancelledError)."
                ) from None
            raise

    def enter_for_lifetime(self) -> T:
        """Enter in a plain task of the loop (not a call: stop() cancels calls before its
        hooks run), to be exited by :meth:`aexit` from a stop hook."""
        if self._lt.in_loop_thread():
            close_awaitables([self._cm])
            raise WouldDeadlockError(
                "lt.enter_context() was called on the loop thread, which runs __aenter__: it "
                "would wait for itself. In a coroutine, use `async with` (or an AsyncExitStack)."
            )
        self._task = self._lt.run(self._spawn())
        try:
            return self._entered.result()
        except BaseException:
            if not self._entered.done():  # interrupted (Ctrl-C): __aenter__ is cancelled
                with contextlib.suppress(RuntimeError):
                    self._lt.loop.call_soon_threadsafe(self._task.cancel)
            raise

    async def _spawn(self) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(self._hold(), name="loopthread-enter")
        task.add_done_callback(_retrieve)
        return task

    async def aexit(self) -> None:
        """On the loop (a stop hook): exit the lifetime context, no exception, and wait."""
        task, exit_ = self._task, self._exit
        if task is None or exit_ is None or task.done():
            return
        exit_.set()
        await task

    def _wait_over(self, held: Future[bool]) -> None:
        over = Latch()
        if isinstance(held, SubmitFuture):
            held.when_ended(over.set)
            over.wait(self._lt.cancel_grace)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failure is raised to whoever waits, not logged


def _failure(future: Future[Any]) -> BaseException:
    """Why a submitted coroutine ended without telling (it never ran: the loop died)."""
    if future.cancelled():
        return LoopNotRunningError("cancelled before it started.")
    error = future.exception(0)
    return error if error is not None else LoopNotRunningError("it ended without a result.")


def _fail(future: Future[Any], error: BaseException) -> None:
    """Fail ``future`` unless it has its outcome already."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
