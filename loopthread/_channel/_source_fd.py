"""Reading a pipe or socket on the loop itself: ``loop.add_reader`` on its fd, no thread.

The loop thread is woken by the fd becoming readable, the way it is woken by a socket: no
thread blocked in ``get()`` hands items over, so an event costs one wake-up of the loop thread
and nothing while idle. Each wake-up reads what the fd holds (``FIONREAD``; at most
:data:`~._source_fd_read.CHUNK` bytes), cuts it into frames (:mod:`._framing`), decodes them
and appends them to the channel in one go, then runs the consumer right there when it was
parked: a sync handler gets the batch in the same callback. How it reads (the queue's read
lock, back-pressure, EOF): :mod:`._source_fd_read`.

This module is the lifecycle: ``flush()`` asks how many bytes the fd holds at that moment and
waits until they were read (:meth:`FdReader.mark`) or the fd was seen empty (another reader
of the queue took them); ``close()`` does the same, then completes the frame being read (or,
when its rest stops coming for :data:`STALL` seconds, a writer killed mid-message, counts it
unreadable), and unwatches the fd (:meth:`FdReader.stop`); the source's end (EOF, an
error) stops the reading and closes the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from loopthread._channel._source_fd_read import FdReading
from loopthread._util import INF, Latch, remaining, wait_arg

__all__ = ["STALL", "FdReader"]

#: Closing, the bytes present at the call read: how long the rest of a frame may take to come
#: (each read of it starts anew) before the partial frame is counted unreadable.
STALL = 1.0


class FdReader(FdReading):
    """The loop-side reader of one fd (all methods but :meth:`mark` and
    :meth:`close_from_thread` run on the loop thread)."""

    # ---------------------------------------------------------------- flush and stop

    def mark(self, timeout: float | None) -> bool:
        """From a thread other than the loop's: block until the bytes the fd holds now were
        read (or reading ended); False if ``timeout`` expired first."""
        latch = Latch()
        with self._pending_lock:
            if self._done:
                return True
            self._pending.add(latch)
        try:
            try:
                self._ch._loop.call_soon_threadsafe(self._add_mark, latch.set)
            except RuntimeError:  # the loop is closed: nothing more will be read
                return True
            return latch.wait(timeout)
        finally:
            with self._pending_lock:
                self._pending.discard(latch)

    async def amark(self, timeout: float | None) -> bool:  # noqa: ASYNC109 - mirrors mark()
        """:meth:`mark` on the loop."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        self._add_mark(resolve)
        if not future.done():
            await asyncio.wait({future}, timeout=timeout)
        return future.done()

    def _add_mark(self, resolve: Callable[[], None]) -> None:
        if self._done:
            resolve()
            return
        self._check_source()
        try:
            target = self._bytes + self._available()
        except OSError:
            target = self._bytes
        if target <= self._bytes:
            resolve()
            return
        self._marks.append((target, resolve))
        if self._watching:
            self._read(ready=False)

    def _check_marks(self) -> None:
        if self._marks:
            got = self._bytes
            ready = [m for m in self._marks if m[0] <= got]
            if ready:
                self._marks = [m for m in self._marks if m[0] > got]
                for _, resolve in ready:
                    resolve()
        target = self._stop_target
        if target is not None and self._bytes >= target:
            if self._framer.needed() in (0, None):
                self._finish("closed")
            else:  # the frame's rest: while it keeps coming (a killed writer's never does)
                if self._stall is not None:
                    self._stall.cancel()
                self._stall = self._ch._loop.call_later(STALL, self._finish, "closed")

    def _drained(self) -> None:
        """The fd was seen empty: every byte it held when a flush or close was called was
        read, by us or by another reader of the queue (which bytes we will never count)."""
        marks, self._marks = self._marks, []
        for _, resolve in marks:
            resolve()
        if self._stop_target is not None:
            self._stop_target = min(self._stop_target, self._bytes)
            self._check_marks()

    async def stop(self, deadline: float) -> None:
        """Read what the fd holds now and the rest of the frame being read (unless it stalls:
        counted unreadable), then unwatch it.
        By ``deadline``; idempotent; on the loop."""
        if self._done:
            return
        if not self._registered:  # never watched: nothing was read, nothing to finish
            self._finish("closed")
            return
        if self._stopped is None:
            self._stopped = self._ch._loop.create_future()
            try:
                self._stop_target = self._bytes + self._available()
            except OSError:
                self._stop_target = self._bytes
            self._check_marks()
            if not self._done and self._watching:
                self._read(ready=False)
        stopped = self._stopped
        try:
            if not stopped.done():
                await asyncio.wait(
                    {stopped}, timeout=None if deadline == INF else remaining(deadline)
                )
        finally:
            self._finish("closed")

    def close_from_thread(self, deadline: float) -> None:
        """:meth:`stop`, from a thread other than the loop's: wait for it by ``deadline``
        (and a moment more: the loop must run the stop's last step)."""
        latch = Latch()
        with self._pending_lock:
            if self._done:
                return
            self._pending.add(latch)
        try:
            try:
                self._ch._loop.call_soon_threadsafe(self._spawn_stop, deadline, latch)
            except RuntimeError:  # the loop is closed: on_closed stopped the reading
                return
            latch.wait(wait_arg(remaining(deadline) + 0.5))
        finally:
            with self._pending_lock:
                self._pending.discard(latch)

    def _spawn_stop(self, deadline: float, latch: Latch) -> None:
        task = self._ch._loop.create_task(
            self.stop(deadline), name=f"loopthread-source-stop-{self._ch.name}"
        )
        self._tasks.add(task)  # a strong reference until it is done

        def done(_: object) -> None:
            self._tasks.discard(task)
            latch.set()

        task.add_done_callback(done)

    def _end(self, reason: str, exc: BaseException | None = None) -> None:
        """The source ended (EOF, an error): stop reading and close the channel."""
        if self._done:
            return
        self._finish(reason, exc)
        self._ch._source_ended(reason, exc)

    def _finish(self, reason: str, exc: BaseException | None = None) -> None:
        """Stop reading for good (idempotent; on the loop)."""
        if self._done:
            return
        self._done = True
        self.ended = reason
        self._unwatch()
        self._close_fd()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        rest = self._framer.take_rest()
        if rest and reason == "eof" and self._rest_is_frame:
            self._deliver([rest])
        elif rest:
            self._unreadable(
                exc,
                f"a partial message of {len(rest)} bytes was left when reading stopped ({reason})",
            )
        self._release_lock()
        marks, self._marks = self._marks, []
        for _, resolve in marks:
            resolve()
        with self._pending_lock:
            pending = list(self._pending)
        for latch in pending:
            latch.set()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def on_closed(self, on_loop_thread: bool) -> None:
        """The loop is gone. Off the loop thread (a blocked loop given up on) nothing of the
        loop's may be touched, not even the read lock it may be inside: only waiters wake."""
        if on_loop_thread:
            self._finish("closed")
            return
        with self._pending_lock:
            self._done = True
            self.ended = self.ended or "closed"
            pending = list(self._pending)
        for latch in pending:
            latch.set()

    def after_fork_in_child(self) -> None:
        """The loop thread (and the read lock it may hold) are the parent's."""
        self._done = True
        self.ended = "forked"
        self._locked = False
        self._watching = False
        with contextlib.suppress(OSError):  # the duplicate came with the fork: not read here
            self._close_fd()
        self._marks = []
        self._pending = set()
        self._pending_lock = threading.Lock()
