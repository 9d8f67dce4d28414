"""``lt.channel_from(source, handler)``: a channel whose items come from an existing source.

A :class:`SourceChannel` is a :class:`~loopthread.Channel` (the same consumer, batches,
accounting, ``stats()``, ``flush``/``close``/``aflush``/``aclose``, stop and fork handling)
whose producer is a reader of the source instead of ``put()`` callers:

* sources with an fd (a ``multiprocessing.Queue``'s pipe, a ``Connection``, a pipe, a socket)
  are read by the loop itself when the fd is readable (:mod:`._source_fd`): no thread, no
  polling, one wake-up per burst;
* sources without one (``queue.Queue``) by one thread blocked in ``get()`` (:mod:`._source_pump`).

What the channel promises on top of a channel's:

* ``flush()`` covers what is inside the source at the time of the call: the bytes its fd
  holds then (items a writer process still keeps in its feeder thread's buffer are not in the
  pipe yet: a writer that called ``q.close(); q.join_thread()`` has written everything), or
  everything put into a queue before the call;
* ``close()`` (and ``lt.stop()``, and interpreter exit) first reads what the source holds
  then, within the deadline, then closes the channel like ``Channel.close``. Whatever arrives
  later stays in the source, which is the caller's: nothing is taken out of it that is not
  handled or counted;
* the source ending (EOF: every writer closed; an error) closes the channel by itself
  (``stats().ended`` says why);
* a message that cannot be decoded is counted (``stats().unreadable``), logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from loopthread._channel._api import Channel
from loopthread._channel._base import T
from loopthread._channel._source_fd import FdReader
from loopthread._channel._source_kinds import plan_for
from loopthread._channel._source_pump import QueuePump
from loopthread._exceptions import ChannelClosedError
from loopthread._stats import ChannelStats
from loopthread._util import INF, remaining
from loopthread._validate import check_timeout

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["Reader", "SourceChannel", "SourceStats"]


@dataclass(frozen=True, slots=True)
class SourceStats(ChannelStats):
    """A :class:`ChannelStats` with what the reader of the source saw.

    ``put`` counts the items read from the source (and ``put()`` calls, if any).

    Attributes:
        source: what is read: ``"multiprocessing.Queue"``, ``"socket"``, ``"fd"``, ``"queue"``...
        reader: ``"add_reader"`` (the loop watches its fd) or ``"thread"`` (one blocked in get()).
        reads: reads made on the source (each may bring many items).
        unreadable: messages read that could not be decoded (logged, then skipped).
        ended: why reading stopped: None while reading; ``"eof"`` (every writer closed),
            ``"error"`` (logged), ``"closed"`` (``close()``/``stop()``), ``"forked"``.
    """

    source: str = ""
    reader: str = ""
    reads: int = 0
    unreadable: int = 0
    ended: str | None = None


_CHANNEL_FIELDS = tuple(f.name for f in fields(ChannelStats))


class Reader(Protocol):
    """What a SourceChannel needs of the reader of its source (fd or thread)."""

    kind: str
    how: str
    ended: str | None
    reads: int
    unreadable: int

    def mark(self, timeout: float | None) -> bool: ...
    async def amark(self, timeout: float | None) -> bool: ...  # noqa: ASYNC109 - mark()'s
    async def stop(self, deadline: float) -> None: ...
    def close_from_thread(self, deadline: float) -> None: ...
    def on_closed(self, on_loop_thread: bool) -> None: ...
    def after_fork_in_child(self) -> None: ...


class SourceChannel(Channel[T]):
    """A channel fed by a source (see :meth:`LoopThread.channel_from`).

    The overflow policy is back-pressure into the source: while ``maxsize`` items wait, the
    source is not read (for an fd source one read may go past ``maxsize`` by what it brought).
    ``put()`` still works, as on any channel.
    """

    def __init__(
        self,
        loop_thread: LoopThread,
        source: object,
        handler: Callable[[list[T]], Awaitable[object] | None],
        *,
        framing: str | None = None,
        decode: Callable[[bytes], T] | None = None,
        maxsize: int = 10_000,
        batch_size: int = 256,
        name: str | None = None,
        run_in: str = "loop",
    ) -> None:
        plan = plan_for(source, framing, decode)
        self._source = source
        self._plan = plan
        self._source_tasks: set[asyncio.Task[Any]] = set()
        self._lost_from_source = 0
        self._reader: Reader = plan.primary(self)
        super().__init__(
            loop_thread,
            handler,
            maxsize=maxsize,
            overflow="block",
            batch_size=batch_size,
            name=name,
            run_in=run_in,
        )
        try:
            self._start_reader()
        except BaseException:
            Channel.close(self, 1.0)  # nothing was read: an empty channel, closed at once
            raise

    def _start_reader(self) -> None:
        plan = self._plan
        # On the loop thread (one registration at a time): refuse a second reader of the
        # source, and watch its fd there (add_reader is not thread-safe).
        if not self._lt.run_sync(self._watch_source):
            if plan.fallback is None:
                raise TypeError(
                    f"the event loop of LoopThread {self._lt.name!r} cannot watch file "
                    f"descriptors (add_reader is not implemented: Windows' proactor loop), so "
                    f"it cannot read a {plan.kind}. Use a multiprocessing.Queue or a "
                    "queue.Queue (a thread reads those there), or, for a socket, a loop that "
                    "can: LoopThread(loop_factory=asyncio.SelectorEventLoop)."
                )
            self._reader = plan.fallback(self)
        if isinstance(self._reader, QueuePump):
            self._reader.start()

    def _watch_source(self) -> bool:
        """On the loop: False if the fd cannot be watched here (add_reader not implemented)."""
        fd = self._plan.fd
        for other in self._lt.components:
            if (
                isinstance(other, SourceChannel)
                and other is not self
                and not other._finished
                and other._reader.ended is None
                and (other._source is self._source or (fd is not None and other._plan.fd == fd))
            ):
                raise ValueError(
                    f"{self._plan.kind} {self._source!r} is read by channel {other.name!r} "
                    "already; a source has one channel_from() reader. Close that one first."
                )
        reader = self._reader
        return reader.register() if isinstance(reader, FdReader) else True

    # ---------------------------------------------------------------- flush

    def flush(self, timeout: float | None = None) -> bool:
        """Block until what the source holds now, and every item read before, went through
        the handler; False if ``timeout`` expired first. See :meth:`Channel.flush`.

        Raises:
            WouldDeadlockError: called from the loop thread; use ``await ch.aflush()``.
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        if self._lt.in_loop_thread():
            return super().flush(timeout)  # raises WouldDeadlockError
        deadline = INF if timeout is None else time.monotonic() + timeout
        if not self._closed and not self._reader.mark(timeout):
            return False
        return super().flush(None if timeout is None else remaining(deadline))

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors flush()
        """``flush`` for coroutines. See :meth:`Channel.aflush`."""
        timeout = check_timeout(timeout)
        if (
            self._lt.in_loop_thread()
            and not self._closed
            and asyncio.current_task() is not self._task
        ):
            deadline = INF if timeout is None else time.monotonic() + timeout
            if not await self._reader.amark(timeout):
                return False
            timeout = None if timeout is None else remaining(deadline)
        return await super().aflush(timeout)

    # ---------------------------------------------------------------- close

    def close(self, timeout: float | None = None) -> None:
        """Read what the source holds now, hand it to the handler, stop reading and close.
        Idempotent; bounded by ``timeout`` as :meth:`Channel.close`. What arrives in the source
        later stays there. On the loop thread it returns at once and closes in the background.

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        deadline = INF if timeout is None else time.monotonic() + timeout
        if self._lt.in_loop_thread():
            self._spawn_close(deadline)
            return
        if not self._closed and self._lt.state == "running":
            self._reader.close_from_thread(deadline)
        super().close(None if timeout is None else remaining(deadline))

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - mirrors close()
        """``close`` for coroutines. See :meth:`Channel.aclose`."""
        timeout = check_timeout(timeout)
        if not self._lt.in_loop_thread():
            await super().aclose(timeout)  # close() in the executor
            return
        task = self._spawn_close(INF if timeout is None else time.monotonic() + timeout)
        if task is not None and asyncio.current_task() is not self._task:
            await asyncio.shield(task)  # cancelling the caller does not cut the close short

    def _spawn_close(self, deadline: float) -> asyncio.Task[Any] | None:
        if self._finished:
            return None
        task = self._loop.create_task(
            self._close_on_loop(deadline), name=f"loopthread-channel-close-{self._name}"
        )
        self._source_tasks.add(task)  # a strong reference until it is done
        task.add_done_callback(self._source_tasks.discard)
        return task

    async def _close_on_loop(self, deadline: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the reader finished anyway
            await self._reader.stop(deadline)
        self._begin_close("closed")
        await self._drain(deadline)

    # ---------------------------------------------------------------- as a component

    async def on_stop(self, deadline: float) -> None:
        """The LoopThread's stop: read what the source holds now, then drain and close."""
        # A cut (stop()'s deadline, user code cancelling every task) ends the reading only:
        # the channel still drains and counts below.
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader.stop(deadline)
        await super().on_stop(deadline)
        # A close begun before (close() on the loop, the source's EOF) finishes with the drain
        # above; let its task end too rather than be cancelled as a leftover.
        tasks = {t for t in self._source_tasks if t is not asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=max(remaining(deadline), 0.05))

    def on_closed(self) -> int:
        """The loop is gone: stop reading, count what is left, wake every waiter."""
        self._reader.on_closed(self._lt.in_loop_thread())
        return super().on_closed()

    def after_fork_in_child(self) -> None:
        """The reader, like the consumer, is the parent's: nothing is read in the child."""
        super().after_fork_in_child()
        self._reader.after_fork_in_child()
        self._source_tasks = set()

    # ---------------------------------------------------------------- for the readers

    def _feed(self, items: list[Any]) -> None:
        """On the loop: admit what the reader read, run the consumer if it is parked."""
        if not items:
            return
        # Claim the park first (as a producer's wake-up would), so that no admit below
        # schedules a wake-up: the consumer runs here instead, in the reader's callback (a
        # sync handler gets the batch now). No loop iteration in between, no spare wake-up.
        with contextlib.suppress(IndexError):  # not parked: the consumer finds the items
            self._parked.pop()
        admit = self._admit  # the channel's own admission: count, append
        for item in items:
            admit(item)
        self._high_water = max(self._high_water, len(self._items))
        self._on_wake()

    def _source_ended(self, reason: str, exc: BaseException | None) -> None:
        """On the loop: the source ended (EOF, an error); close the channel after its items."""
        self._log(
            "channel.source_ended",
            level="info" if reason == "eof" else "error",
            source=self._reader.kind,
            reason=reason,
            exc_info=exc,
        )
        if not self._closed:
            self._spawn_close(INF)

    def _source_ended_threadsafe(self, reason: str, exc: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: on_closed counts
            self._loop.call_soon_threadsafe(self._source_ended, reason, exc)

    def _count_lost(self, count: int) -> None:
        """Items taken from the source after the channel closed: counted as unhandled."""
        with self._mutex:
            self._late_unhandled += count
            self._lost_from_source += count  # read from the source: in put too
        self._log("channel.source_item_unhandled", level="warning", unhandled=count)

    # ---------------------------------------------------------------- observation

    def stats(self) -> SourceStats:
        """A snapshot of the counters (:class:`SourceStats`: a ChannelStats and the reader's)."""
        base = super().stats()
        reader = self._reader
        counts = {name: getattr(base, name) for name in _CHANNEL_FIELDS}
        counts["put"] += self._lost_from_source
        return SourceStats(
            **counts,
            source=reader.kind,
            reader=reader.how,
            reads=reader.reads,
            unreadable=reader.unreadable,
            ended=reader.ended,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<SourceChannel {self._name!r} {state} source={self._reader.kind} "
            f"reader={self._reader.how} depth={len(self._items)} handled={self._handled} "
            f"failed={self._failed}>"
        )

    def _closed_error(self) -> ChannelClosedError:
        ended = self._reader.ended
        if self._close_reason == "closed" and ended in ("eof", "error"):
            return ChannelClosedError(
                f"channel {self._name!r} closed itself: its source ({self._reader.kind}) ended "
                f"({ended}). Create a new channel on a live source."
            )
        return super()._closed_error()
