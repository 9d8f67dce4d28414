"""Reading a source that has no fd to wait on: one thread blocked in its ``get()``.

A ``queue.Queue`` (or ``SimpleQueue``, a manager's queue proxy, any object with a blocking
``get()`` and a ``put()``) wakes its readers through a lock, which no event loop can wait on,
so a thread has to block in ``get()``: one per source, named ``<loop>-source-<channel>``,
daemon. It hands each item to the channel with ``put()`` (which waits for room while the
channel is full: the items wait in the source meanwhile). It is idle in ``get()``: no
wake-ups. A ``multiprocessing.Queue`` on a loop that cannot watch fds (Windows' proactor)
is read this way too.

Nothing can interrupt a ``get()`` but an item, so the channel talks to its thread through the
queue itself, with :class:`Control` items the thread takes out of the stream:

* ``flush()`` puts a *mark* and waits until the thread reads it: everything the queue held
  before the mark was handed to the channel by then;
* ``close()`` puts a *stop*: the thread hands over what comes before it and ends.

Both are the reason the channel must be the queue's only reader: another reader would get
them. A control item of another channel (a stop left behind by one whose close hit its
deadline) is skipped. They pickle by reference, so they travel through manager proxies too.
Once the thread ended, the ones it left (a flush or close that timed out) are taken out of a
``queue.Queue`` again (:meth:`QueuePump._purge`); other sources keep them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from loopthread._channel._framing import log_unreadable
from loopthread._exceptions import ChannelClosedError
from loopthread._log import RateLimiter
from loopthread._util import INF, Latch, describe, new_thread, remaining, wait_arg

if TYPE_CHECKING:
    from loopthread._channel._source import SourceChannel


__all__ = ["Control", "QueuePump"]

MARK = "mark"
STOP = "stop"
#: get() failing this many times in a row ends the reading (a source that is broken for good).
MAX_FAILURES = 100

_ids = itertools.count(1)


class Control(NamedTuple):
    """A mark or stop put into the source by a channel (``owner``) for its own thread."""

    kind: str
    owner: str
    seq: int


class QueuePump:
    """The reading thread of one queue-like source, and how the channel talks to it."""

    how = "thread"

    def __init__(
        self,
        channel: SourceChannel[Any],
        *,
        kind: str,
        source: Any,
        ends: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._ch = channel
        self.kind = kind
        self._source = source
        self._ends = ends  # what get() raises once the source is gone (EOF, shut down)
        self._put_timeout = _takes_timeout(source.put)
        # queue.Queue.join() waits for a task_done() per item: ours too (marks and stops).
        self._task_done = getattr(source, "task_done", None) if kind == "queue" else None
        self._token = f"{os.getpid()}-{id(self)}-{next(_ids)}"
        self._lock = threading.Lock()
        self._marks: dict[int, Latch] = {}
        self._seq = itertools.count(1)
        self._exited = Latch()
        self._on_exit: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._stop_sent = False
        self._stop_lock = threading.Lock()  # one stop put at a time
        self.ended: str | None = None
        self.reads = 0
        self.unreadable = 0
        self._log_limiter = RateLimiter()  # used by the reading thread only

    def start(self) -> bool:
        """Start the reading thread."""
        if self._ch._closed:
            return True
        name = f"{self._ch._lt.name}-source-{self._ch.name}"
        self._thread = new_thread(self._run, name=name)
        self._thread.start()
        return True

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        reason, error = "closed", None
        failures = 0
        get, closed_error = self._source.get, ChannelClosedError
        try:
            while True:
                try:
                    item = get()
                except self._ends as exc:
                    # EOF, a queue shut down: the end; OSError: a broken pipe (logged)
                    reason, error = ("error" if isinstance(exc, OSError) else "eof"), exc
                    break
                except Exception as exc:  # noqa: BLE001 - an unreadable item is counted
                    if getattr(self._source, "_closed", False):  # a multiprocessing.Queue
                        reason, error = "error", exc  # closed in this process
                        break
                    failures += 1
                    self._unreadable(exc)
                    if failures >= MAX_FAILURES:
                        reason, error = "error", exc
                        break
                    continue
                failures = 0
                self.reads += 1
                if self._task_done is not None:
                    with contextlib.suppress(ValueError):
                        self._task_done()
                if type(item) is Control:
                    if item.owner != self._token:
                        continue  # another channel's, left behind
                    if item.kind == STOP:
                        break
                    self._reached(item.seq)
                    continue
                try:
                    self._ch.put(item)
                except closed_error:
                    self._ch._count_lost(1)  # taken from the source, refused: counted
                    break
        finally:
            self._exit(reason, error)

    def _unreadable(self, exc: BaseException) -> None:
        self.unreadable += 1
        what = "get() raised"
        log_unreadable(
            self._ch, self._log_limiter, source=self.kind, total=self.unreadable, exc=exc, what=what
        )

    def _reached(self, seq: int) -> None:
        with self._lock:
            latch = self._marks.pop(seq, None)
        if latch is not None:
            latch.set()

    def _exit(self, reason: str, error: BaseException | None) -> None:
        with self._lock:
            if self.ended is None:
                self.ended = reason
            marks = list(self._marks.values())
            self._marks.clear()
            callbacks, self._on_exit = self._on_exit, []
            self._exited.set()
        for latch in marks:
            latch.set()
        self._purge()
        for callback in callbacks:
            callback()
        if reason != "closed":
            self._ch._source_ended_threadsafe(reason, error)

    def _purge(self) -> None:
        """The thread ended: take this channel's marks and stops still queued (a flush or
        close that timed out) out of a ``queue.Queue``, under its own mutex, as get() would
        (with their task_done()). Other sources keep them: a channel_from reader skips them."""
        source = self._source
        if not isinstance(source, queue.Queue) or isinstance(source, queue.PriorityQueue):
            return
        token = self._token
        with source.mutex:
            items = source.queue
            mine = [x for x in items if type(x) is Control and x.owner == token]
            for control in mine:
                items.remove(control)
            if mine:
                source.not_full.notify(len(mine))
                source.unfinished_tasks = max(0, source.unfinished_tasks - len(mine))
                if source.unfinished_tasks == 0:
                    source.all_tasks_done.notify_all()

    # ---------------------------------------------------------------- flush and stop

    def _send(self, kind: str, seq: int, timeout: float | None) -> bool:
        control = Control(kind, self._token, seq)
        try:
            if self._put_timeout:
                self._source.put(control, True, wait_arg(timeout))
            else:
                self._source.put(control)
        except queue.Full:
            return False
        except Exception as exc:  # noqa: BLE001 - a source that refuses puts: logged
            self._ch._log("channel.source_put_failed", level="error", error=describe(exc))
            return False
        if self._exited.is_set():  # the thread ended meanwhile: nobody will take it out
            self._purge()
        return True

    def mark(self, timeout: float | None) -> bool:
        """Block until everything the source holds now was handed to the channel (or the
        thread ended); False if ``timeout`` expired first (or the mark could not be put)."""
        deadline = INF if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._exited.is_set() or self._thread is None:
                return True
            seq = next(self._seq)
            latch = Latch()
            self._marks[seq] = latch
        try:
            if not self._send(MARK, seq, timeout):
                return False
            return latch.wait(wait_arg(remaining(deadline)))
        finally:
            with self._lock:
                self._marks.pop(seq, None)

    async def amark(self, timeout: float | None) -> bool:  # noqa: ASYNC109 - mirrors mark()
        """:meth:`mark` from the loop: the wait runs in the loop's executor."""
        return await asyncio.get_running_loop().run_in_executor(None, self.mark, timeout)

    def _request_stop(self, deadline: float) -> None:
        # Sent once: marked only once the stop is in the queue (a put cut short by its
        # timeout or by Ctrl-C sent nothing, and the next close() tries again).
        with self._stop_lock:
            if not self._stop_sent and self._send(STOP, 0, remaining(deadline)):
                self._stop_sent = True

    def close_from_thread(self, deadline: float) -> None:
        """From a thread other than the loop's: stop the thread after what the source holds
        now; wait for it by ``deadline``."""
        if self._thread is None or self._exited.is_set():
            return
        self._request_stop(deadline)
        self._exited.wait(wait_arg(remaining(deadline)))

    async def stop(self, deadline: float) -> None:
        """:meth:`close_from_thread` on the loop: the put runs in the executor (it may wait for
        room in a bounded queue), the thread's end is awaited. Idempotent."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def tell() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_set_none, ended)

        with self._lock:
            if self._exited.is_set():
                return
            self._on_exit.append(tell)
        await loop.run_in_executor(None, self._request_stop, deadline)
        await asyncio.wait({ended}, timeout=None if deadline == INF else remaining(deadline))

    def on_closed(self, on_loop_thread: bool) -> None:
        """The loop is gone. Off the loop thread (a blocked loop given up on), ask the thread
        to stop without waiting; on it, ``stop()`` did (the drain phase ran)."""
        if not on_loop_thread and not self._exited.is_set() and self._thread is not None:
            with contextlib.suppress(Exception):
                if not self._stop_sent:
                    self._source.put_nowait(Control(STOP, self._token, 0))
                    self._stop_sent = True

    def after_fork_in_child(self) -> None:
        """The thread is the parent's."""
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._marks = {}
        self._on_exit = []
        self._exited = Latch()
        self._exited.set()
        self.ended = "forked"


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _takes_timeout(put: Callable[..., object]) -> bool:
    """Whether ``put`` takes ``(item, block, timeout)`` (``multiprocessing.SimpleQueue``'s
    takes only the item)."""
    try:
        params = list(inspect.signature(put).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len(params) >= 3
