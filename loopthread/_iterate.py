"""``for item in lt.iterate(agen)``: an async iterable read on the loop, from sync code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Generic, TypeVar

from loopthread._core._call import SubmitFuture
from loopthread._enter import _failure
from loopthread._exceptions import LoopNotRunningError, WouldDeadlockError
from loopthread._log import logger
from loopthread._util import Latch, describe, remaining
from loopthread._validate import check_timeout, close_awaitables

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

T = TypeVar("T")

__all__ = ["iterate"]


class _Pump(Generic[T]):
    """Reads an async iterable on the loop into a bounded buffer that a sync thread empties.

    The two sides meet under ``_lock`` (a C lock, held for a few bytecodes, entered with
    ``with``: a signal cannot leave it held): the reader registers its Latch and looks at the
    buffer in one critical section, the pump appends and takes the Latch in another; the same
    for the pump's "full" flag. No ordering argument needed, with or without the GIL.
    """

    def __init__(self, source: AsyncIterable[T], read_ahead: int) -> None:
        self.source = source
        self.read_ahead = read_ahead
        self.buffer: deque[T] = deque()
        self.error: BaseException | None = None
        self.over = False
        self.closing = False  # the reader asked the pump to stop (break, close, timeout)
        self._lock = threading.Lock()
        self._reader: Latch | None = None
        self._full = False
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        room = self._room = asyncio.Event()
        iterator: AsyncIterator[T] | None = None
        try:
            iterator = aiter(self.source)
            while True:
                room.clear()
                with self._lock:
                    self._full = len(self.buffer) >= self.read_ahead
                    full = self._full
                if full:
                    await room.wait()
                    continue
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                with self._lock:
                    self.buffer.append(item)
                    reader, self._reader = self._reader, None
                if reader is not None:
                    reader.set()
        except asyncio.CancelledError as exc:
            if not self.closing:  # not the reader's doing: the LoopThread stopped
                self.error = LoopNotRunningError(
                    "lt.iterate(): the LoopThread stopped while the source was being read."
                )
                self.error.__cause__ = exc
            raise
        except BaseException as exc:
            self.error = exc
            if self.closing:  # the reader is gone: nobody else will see it
                logger.warning("loop_thread.iterate_close_failed", error=describe(exc))
            raise
        finally:
            await self._aclose(iterator)
            self.end()

    async def _aclose(self, iterator: AsyncIterator[T] | None) -> None:
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except BaseException as exc:  # noqa: BLE001 - the reader gets it, or it is logged
            if self.error is None and not self.closing:
                self.error = exc  # the reader is still there: it gets the error
            elif not isinstance(exc, asyncio.CancelledError):
                logger.warning("loop_thread.iterate_aclose_failed", error=describe(exc))

    def end(self, error: BaseException | None = None) -> None:
        """The source is done (or will never be read: ``error``); wake the reader."""
        with self._lock:
            if error is not None and self.error is None and not self.over:
                self.error = error
            self.over = True
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.set()

    def take(self, lt: LoopThread, timeout: float | None) -> list[T] | None:
        """Everything buffered (at least one item), or None once the source is exhausted.

        Raises:
            TimeoutError: no item within ``timeout``.
            LoopNotRunningError: the LoopThread stopped, died or is the parent's (fork).
            BaseException: what the source raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            latch = Latch()
            with self._lock:
                items = list(self.buffer)
                self.buffer.clear()
                room = items and self._full
                if not items and not self.over:
                    self._reader = latch
            if room and self._room is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed
                    self._loop.call_soon_threadsafe(self._room.set)
            if items:
                return items
            if self.over:
                if self.error is not None:
                    raise self.error
                return None
            if lt.pid != os.getpid():
                raise LoopNotRunningError(
                    f"lt.iterate(): LoopThread {lt.name!r} runs in process {lt.pid}; this is a "
                    "forked child, where its loop does not exist. Iterate in the child on "
                    "loopthread.default() or a LoopThread made there."
                )
            left = None if deadline is None else remaining(deadline)
            if (left is not None and left <= 0) or not latch.wait(left):
                raise TimeoutError(f"lt.iterate(): no item within timeout={timeout}s.")


def iterate(
    lt: LoopThread, source: AsyncIterable[T], timeout: float | None, read_ahead: int
) -> Iterator[T]:
    """A plain iterator over an async iterable read on ``lt``'s loop (see LoopThread.iterate)."""
    if not hasattr(type(source), "__aiter__"):
        close_awaitables([source])
        raise TypeError(
            "lt.iterate() takes an async iterable (an async generator, an object with "
            f"__aiter__); got {type(source).__name__}. For a coroutine use lt.run()."
        )
    timeout = check_timeout(timeout)
    if lt.in_loop_thread():
        raise WouldDeadlockError(
            "lt.iterate() was called on the loop thread, which is the one that reads the "
            "source: it would wait for itself. In a coroutine, use `async for` directly."
        )
    if type(read_ahead) is not int or read_ahead < 1:
        raise ValueError(f"read_ahead must be an int >= 1; got {read_ahead!r}.")
    pump = _Pump(source, read_ahead)
    task = lt.submit(pump.run())  # refused at once if the LoopThread does not run
    return _iterate(lt, pump, task, timeout)


def _iterate(
    lt: LoopThread, pump: _Pump[T], task: Future[None], timeout: float | None
) -> Iterator[T]:
    if isinstance(task, SubmitFuture):
        # A pump that never ran (its loop died or was abandoned first) still ends the read.
        task.when_ended(lambda: pump.end(_failure(task)))
    try:
        while True:
            items = pump.take(lt, timeout)
            if items is None:
                return
            yield from items
    finally:
        # Exhausted, a break, close(), garbage collection, a timeout, Ctrl-C, an error: the
        # pump's task ends (cancelled if still reading) and the source is aclose()d on the
        # loop, its `finally` blocks included, before this returns (at most cancel_grace;
        # not waited for on the loop thread itself, where a finalizer may run this).
        pump.closing = True
        if not task.done():
            task.cancel()
        if isinstance(task, SubmitFuture) and not lt.in_loop_thread():
            over = Latch()
            task.when_ended(over.set)
            over.wait(lt.cancel_grace)
