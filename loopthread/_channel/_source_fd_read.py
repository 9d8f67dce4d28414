"""Watching and reading an fd on the loop thread, for ``lt.channel_from`` (see :mod:`._source_fd`).

* A ``multiprocessing.Queue`` is read as its ``get()`` reads it: under the queue's read lock
  (``_rlock``, shared by every process that reads the queue), releasing its put semaphore
  (``_sem``) once per message. The lock is only ever *tried* (``acquire(False)``): the loop
  thread never waits for a lock another process holds. While another reader holds it, the fd
  is unwatched and re-armed after a short backoff (1 ms doubling to 100 ms), so contention
  costs a few wake-ups instead of a busy loop; with the channel as the only reader it never
  happens. A frame cut by the end of one read keeps the lock until its rest is read.
* The fd is never switched to non-blocking mode (the file description is shared with the
  writers and every forked process): a read asks for at most what ``FIONREAD`` said is there,
  so it returns at once; a readable fd with nothing to read is the writers' EOF.
* When ``maxsize`` items wait in the channel, the fd is unwatched: the items wait in the
  source (a bounded ``multiprocessing.Queue`` then blocks its writers) until the consumer makes
  room (the reader waits for it like an ``aput()`` on the loop). One read may take the channel
  past ``maxsize`` by what that read returned.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loopthread._channel._framing import Framer, FramingError, log_unreadable
from loopthread._util import INF, Latch

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows: no add_reader for pipes there either
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from loopthread._channel._source import SourceChannel


__all__ = ["CHUNK", "FdReading"]

#: The most one wake-up reads: a pipe's whole buffer on Linux.
CHUNK = 65536
BACKOFF_FIRST = 0.001
BACKOFF_MAX = 0.1


class FdReading:
    """Watching and reading one fd, on the loop thread; the lifecycle is :class:`FdReader`'s."""

    how = "add_reader"

    def __init__(
        self,
        channel: SourceChannel[Any],
        *,
        kind: str,
        fd: int,
        framer: Framer,
        decode: Callable[[bytes], object] | None,
        rest_is_frame: bool = False,
        lock: Any = None,
        sem: Any = None,
        is_closed: Callable[[], bool] | None = None,
    ) -> None:
        self._ch = channel
        self.kind = kind
        self._source_fd = fd  # the source's fd: never read, the user may close and reuse it
        self.fd = -1  # our own duplicate of it, read and watched until reading ends
        self._is_closed = is_closed  # whether the user closed the source in this process
        self._source_gone = False
        self._framer = framer
        self._decode = decode
        self._rest_is_frame = rest_is_frame  # a last line without newline is a line at EOF
        self._lock = lock  # a multiprocessing queue's read lock, shared with every reader
        self._sem = sem  # its put semaphore: released once per message, as get() does
        self._locked = False
        self._registered = False
        self._watching = False
        self._paused = False  # unwatched until the consumer makes room
        self._retry: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None  # closing: the rest of a frame is late
        self._backoff = BACKOFF_FIRST
        self._done = False  # reading is over (see ``ended``); set on the loop
        self.ended: str | None = None
        self.reads = 0
        self.unreadable = 0
        self._bytes = 0  # read from the fd so far
        self._marks: list[tuple[int, Callable[[], None]]] = []  # (bytes to reach, resolve)
        self._stop_target: int | None = None
        self._stopped: asyncio.Future[None] | None = None
        # Latches of flush() callers in other threads: released if the loop goes away.
        self._pending: set[Latch] = set()
        self._pending_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # stops started by close_from_thread
        self._available_buf = array.array("i", [0])

    # ---------------------------------------------------------------- start and watch

    def register(self) -> bool:
        """Watch the fd; False if this loop cannot (``add_reader`` not implemented)."""
        if fcntl is None:  # pragma: no cover - Windows
            return False
        # A duplicate of our own: if the user closes the source and its fd number is reused
        # (a new pipe, a socket), reading it still reads the source, never what took the number.
        fd = os.dup(self._source_fd)
        try:
            self._ch._loop.add_reader(fd, self._on_readable)
        except NotImplementedError:
            os.close(fd)
            return False
        self.fd = fd
        self._registered = self._watching = True
        return True

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def _check_source(self) -> None:
        """The user closed the source (in this process): close the channel after what the
        fd holds now (read through our duplicate), as close() does. Once; on the loop."""
        if self._source_gone or self._is_closed is None or not self._is_closed():
            return
        self._source_gone = True
        self._ch._log(
            "channel.source_closed",
            level="warning",
            source=self.kind,
            hint="the source was closed while channel_from read it; close the channel first "
            "(ch.close()), then the source",
        )
        self._ch._spawn_close(INF)

    def _watch(self) -> None:
        if not self._watching and not self._done:
            self._ch._loop.add_reader(self.fd, self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            with contextlib.suppress(Exception):  # a closed fd or loop: nothing to unwatch
                self._ch._loop.remove_reader(self.fd)

    def _available(self) -> int:
        fcntl.ioctl(self.fd, termios.FIONREAD, self._available_buf, True)
        return self._available_buf[0]

    # ---------------------------------------------------------------- reading

    def _on_readable(self) -> None:
        try:
            self._read(ready=True)
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - a bug of ours
            self._end("error", exc)

    def _read(self, *, ready: bool) -> None:
        """Read once. ``ready``: the selector said readable (else: a flush or close asking)."""
        if self._done:
            return
        self._check_source()
        ch = self._ch
        if ch._closed:  # closed by another path (the consumer crashed, the loop stopped)
            self._finish("closed")
        elif len(ch._items) >= ch._maxsize:
            self._pause()
        elif self._take_lock():
            try:
                data = self._read_bytes(ready)
            except OSError as exc:
                self._end("error", exc)
                return
            if data is None:
                self._release_lock()
                self._maybe_drained()
            elif not data:
                self._end("eof")
            else:
                self._frames(data)

    def _take_lock(self) -> bool:
        lock = self._lock
        if lock is None or self._locked:
            return True
        if not lock.acquire(False):
            self._maybe_drained()  # another reader may have taken what a flush waits for
            self._contended()
            return False
        self._locked = True
        return True

    def _frames(self, data: bytes) -> None:
        self.reads += 1
        self._bytes += len(data)
        self._backoff = BACKOFF_FIRST
        corrupt: FramingError | None = None
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            frames, corrupt = exc.frames, exc
        if self._framer.needed() == 0:
            self._release_lock()
        self._deliver(frames)
        if corrupt is not None:
            self._end("error", corrupt)
        else:
            self._check_marks()

    def _read_bytes(self, ready: bool) -> bytes | None:
        """What the fd holds now (b"" at EOF), or None if there is nothing to read."""
        n = self._available()
        if n <= 0:
            # Readable with no byte buffered is the writers' EOF (or an error); anything else
            # (another reader was faster, a flush asking) is nothing to read. Checked, since a
            # read of a blocking fd with nothing in it would block the loop.
            if not ready or not _readable_now(self.fd):
                return None
            return os.read(self.fd, CHUNK)
        want = CHUNK
        if self._stop_target is not None and self._bytes >= self._stop_target:
            want = self._framer.needed() or CHUNK  # closing: finish this frame, no more
        try:
            return os.read(self.fd, min(n, want))
        except BlockingIOError:  # a non-blocking fd another reader emptied meanwhile
            return None

    def _deliver(self, frames: list[bytes]) -> None:
        sem = self._sem
        if sem is not None:
            for _ in frames:
                with contextlib.suppress(ValueError):  # released too often by someone else
                    sem.release()
        decode = self._decode
        if decode is None:
            self._ch._feed(frames)
            return
        items: list[object] = []
        for frame in frames:
            try:
                items.append(decode(frame))
            except BaseException as exc:  # noqa: BLE001 - a bad message never kills the loop
                self._unreadable(exc)
        self._ch._feed(items)

    def _unreadable(self, exc: BaseException | None, what: str = "could not be decoded") -> None:
        self.unreadable += 1
        ch = self._ch
        total = self.unreadable
        log_unreadable(ch, ch._log_limiter, source=self.kind, total=total, exc=exc, what=what)

    def _release_lock(self) -> None:
        if self._locked:
            self._locked = False
            self._lock.release()

    def _pause(self) -> None:
        # The channel is full: leave the items in the source until the consumer makes room.
        if self._paused:
            return
        self._paused = True
        self._unwatch()
        room: asyncio.Future[None] = self._ch._loop.create_future()
        room.add_done_callback(self._resume)
        self._ch._room_waiters.append(room)

    def _resume(self, _: object = None) -> None:
        self._paused = False
        if self._done:
            return
        if self._ch._closed:
            self._finish("closed")
            return
        self._watch()

    def _contended(self) -> None:
        # Another reader holds the queue's read lock: try again later, without spinning.
        self._unwatch()
        delay, self._backoff = self._backoff, min(self._backoff * 2, BACKOFF_MAX)
        self._retry = self._ch._loop.call_later(delay, self._rearm)
        suppressed = self._ch._log_limiter.allow("source_contended")
        if suppressed is not None:
            self._ch._log(
                "channel.source_contended",
                level="warning",
                source=self.kind,
                suppressed=suppressed,
                hint="another reader holds the queue's read lock; channel_from should be the "
                "queue's only reader",
            )

    def _rearm(self) -> None:
        self._retry = None
        self._maybe_drained()
        if not self._paused:
            self._watch()

    def _maybe_drained(self) -> None:
        """A flush or close waits and the fd holds nothing: what it held at their call was
        consumed (by us or by another reader of the queue), so they are done."""
        if self._done or (not self._marks and self._stop_target is None):
            return
        try:
            empty = self._available() == 0
        except OSError:
            return
        if empty:
            self._drained()

    # The lifecycle's part (FdReader).

    def _drained(self) -> None:  # pragma: no cover - overridden by FdReader
        raise NotImplementedError

    def _check_marks(self) -> None:  # pragma: no cover - overridden by FdReader
        raise NotImplementedError

    def _end(self, reason: str, exc: BaseException | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _finish(self, reason: str, exc: BaseException | None = None) -> None:  # pragma: no cover
        raise NotImplementedError


def _readable_now(fd: int) -> bool:
    """One non-blocking look at ``fd`` (no timeout: not a poll loop)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    ready, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - no poll() (Windows)
    return bool(ready)
