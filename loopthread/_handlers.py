"""Writing records into wrapped stdlib handlers, as ``Logger.callHandlers`` would, from the
loop's executor; writing to an async sink without its loop; and keeping a handler stuck in
``emit()`` from hanging interpreter exit.

Each record is written in the ``contextvars.Context`` of the thread that logged it (captured
by ``LoopHandler.emit``): the wrapped handler's filters and formatter see that thread's
context variables (a request id), not those of whichever thread logged first.

A record counts as not written when the handler raised on it *or* reported it through
``Handler.handleError`` (what ``StreamHandler.emit`` does when its formatter raises): the
stdlib swallows that error after printing it, so :func:`handle_all` installs a counting
``handleError`` on each handler it writes to, active only while it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from loopthread._log import logger
from loopthread._process import after_exit, fork_safe_lock
from loopthread._util import describe

__all__ = [
    "Recursion",
    "handle_all",
    "handle_all_tracked",
    "processing",
    "write_to_sink_here",
]


class Recursion:
    """Set in ``processing`` while a LoopHandler works on a batch (on the loop, in its tasks,
    in the records' contexts in its executor jobs), and while it writes to an async sink
    without its loop.

    A record logged from there *into the same LoopHandler* (``owner``: an enricher that logs,
    a failing handler, loopthread's own warnings routed back into logging) is written straight
    to the wrapped handlers instead of being queued again, which would feed the handler its
    own output forever; another LoopHandler queues it as usual. Async sinks cannot be written
    from there synchronously: while ``open``, such records are kept in ``records`` and given to
    the sinks once, after the batch; records logged while *that* happens cannot go to the sinks
    at all (they would feed themselves) and are counted.
    """

    __slots__ = ("open", "owner", "records")

    def __init__(self, owner: object, *, open_: bool = True) -> None:
        self.owner = owner
        self.open = open_
        self.records: list[logging.LogRecord] = []


processing: contextvars.ContextVar[Recursion | None] = contextvars.ContextVar(
    "loopthread_logging_processing", default=None
)

#: A record and the context to write it in (None: the current one).
Pair = tuple[logging.LogRecord, contextvars.Context | None]

_base_handle = logging.Handler.handle
_LogRecord = logging.LogRecord


# ---------------------------------------------------------------------- handleError counting


class _Reported:
    """Records a handler reported through handleError during one write, in this thread."""

    __slots__ = ("count", "error")

    def __init__(self) -> None:
        self.count = 0
        self.error: BaseException | None = None


_writing = threading.local()  # .reported: the _Reported of the write under way in this thread


class _CountingHandleError:
    """Replaces a wrapped handler's ``handleError``: calls the original, and counts."""

    __slots__ = ("original",)

    def __init__(self, original: Callable[[logging.LogRecord], None]) -> None:
        self.original = original

    def __call__(self, record: logging.LogRecord) -> None:
        reported: _Reported | None = getattr(_writing, "reported", None)
        if reported is not None:
            reported.count += 1
            if reported.error is None:
                reported.error = sys.exc_info()[1]
        self.original(record)


def _count_handle_error(handler: logging.Handler) -> None:
    if type(handler.__dict__.get("handleError")) is not _CountingHandleError:
        handler.handleError = _CountingHandleError(handler.handleError)  # type: ignore[method-assign]


# ---------------------------------------------------------------------- stdlib handlers

# Wrapped handlers inside handle() in an executor worker now, and how many times (any thread).
_busy: dict[int, tuple[logging.Handler, int]] = {}
_busy_lock = fork_safe_lock()


def handle_all_tracked(
    handler: logging.Handler, pairs: Sequence[Pair], marker: Recursion | None
) -> tuple[int, BaseException | None]:
    """:func:`handle_all`, known to the exit hook below while it runs (executor jobs)."""
    key = id(handler)
    with _busy_lock:
        _busy[key] = (handler, _busy.get(key, (handler, 0))[1] + 1)
    try:
        return handle_all(handler, pairs, marker)
    finally:
        with _busy_lock:
            count = _busy[key][1] - 1
            if count:
                _busy[key] = (handler, count)
            else:
                del _busy[key]


def _spare_stuck_handlers_at_exit() -> None:
    """After the exit drain: a wrapped handler still stuck in ``emit()`` (I/O that never
    returns) holds its lock, and ``logging.shutdown`` (which runs next) would wait for that
    lock forever. It is left out of logging.shutdown's list, and said so, so exit stays bounded.
    """
    with _busy_lock:
        stuck = [handler for handler, _ in _busy.values()]
    if not stuck:
        return
    refs = getattr(logging, "_handlerList", None)
    for handler in stuck:
        if isinstance(refs, list):
            for ref in list(refs):
                if ref() is handler:
                    with contextlib.suppress(ValueError):
                        refs.remove(ref)
        logger.error(
            "loop_handler.handler_stuck_at_exit",
            handler=describe(handler),
            hint="its emit() did not return during the exit drain; logging.shutdown skips it",
        )


after_exit(_spare_stuck_handlers_at_exit)


def handle_all(
    handler: logging.Handler, pairs: Sequence[Pair], marker: Recursion | None = None
) -> tuple[int, BaseException | None]:
    """Pass the records of ``pairs`` to ``handler`` as ``Logger.callHandlers`` would, in order.

    Applies the handler's level and filters. Each pair is a record and the context to write
    it in (its filters and formatting run there, ``marker`` set as ``processing`` first), or
    None to write it in the current context. A Context can be entered by one thread at a
    time: the contexts must be this call's own.

    Returns how many records the handler could not write (it raised on them, or reported
    them through ``handleError``) and the first error: one bad record does not cost the rest.
    """
    _count_handle_error(handler)
    reported = _Reported()
    outer = getattr(_writing, "reported", None)  # a record logged by a handler while it writes
    _writing.reported = reported
    try:
        failed, error = _write(handler, pairs, marker)
    finally:
        _writing.reported = outer
    return failed + reported.count, error or reported.error


def _write(
    handler: logging.Handler, pairs: Sequence[Pair], marker: Recursion | None
) -> tuple[int, BaseException | None]:
    failed = 0
    error: BaseException | None = None
    level = handler.level
    mark = processing.set
    plain: Callable[[logging.LogRecord], object]
    marked: Callable[[logging.LogRecord], object]
    if type(handler).handle is not _base_handle:
        # A handler with its own handle(): call it per record, as logging would.
        plain = handler.handle

        def marked(record: logging.LogRecord) -> object:
            mark(marker)
            return plain(record)

        lock = False
    else:
        # Handler.handle() is filter + lock + emit per record; taking the lock once per batch
        # does the same work without a lock round trip per record.
        filter_ = handler.filter
        emit = handler.emit

        def plain(record: logging.LogRecord) -> object:
            rv = filter_(record)
            if rv:
                # Python 3.12+: a filter may return a replacement record.
                emit(rv if isinstance(rv, _LogRecord) else record)
            return rv

        def marked(record: logging.LogRecord) -> object:
            mark(marker)
            rv = filter_(record)
            if rv:
                emit(rv if isinstance(rv, _LogRecord) else record)
            return rv

        lock = True
        handler.acquire()
    in_context = plain if marker is None else marked
    try:
        for record, ctx in pairs:
            if record.levelno < level:
                continue
            try:
                if ctx is None:
                    plain(record)  # the current context: never marked (it is not ours)
                else:
                    ctx.run(in_context, record)
            except BaseException as exc:  # noqa: BLE001 - counted by the caller (SystemExit too)
                failed += 1
                error = error or exc
    finally:
        if lock:
            handler.release()
    return failed, error


# ---------------------------------------------------------------------- async sinks


class _Sink(Protocol):
    def emit_batch(self, records: Sequence[logging.LogRecord]) -> Any: ...


def write_to_sink_here(
    sink: _Sink, records: Sequence[logging.LogRecord], timeout: float, marker: Recursion
) -> BaseException | None:
    """Write ``records`` to an async sink from this thread, without the sink's loop (it
    stopped: interpreter exit, a stopped LoopThread), on a private event loop; bounded by
    ``timeout``; ``marker`` (closed) is set while it runs. Returns the error, or None once
    written.

    A thread that runs an event loop of its own cannot run another: that is an error too. A
    sink whose resources belong to its old loop fails here, and that is counted by the caller.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return RuntimeError(
            "an async sink cannot be written from a thread running its own event loop once "
            "the LoopHandler's loop has stopped"
        )
    loop = asyncio.new_event_loop()
    try:
        # A fresh context: the sink is not the caller's code, and must not see its variables.
        context = contextvars.Context()
        context.run(processing.set, marker)
        task = loop.create_task(_emit_bounded(sink, records, timeout), context=context)
        loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException as exc:  # noqa: BLE001 - a broken sink (even SystemExit) is counted
        return exc
    finally:
        loop.close()
    return None


async def _emit_bounded(sink: _Sink, records: Sequence[logging.LogRecord], bound: float) -> None:
    async with asyncio.timeout(bound):
        await sink.emit_batch(records)
