"""Writing records into wrapped stdlib handlers, as ``Logger.callHandlers`` would, from the
loop's executor; writing to an async sink without its loop; and keeping a handler stuck in
``emit()`` from hanging interpreter exit.

Each record is written in the ``contextvars.Context`` of the thread that logged it (captured
by ``LoopHandler.emit``): the wrapped handler's filters and formatter see that thread's
context variables (a request id), not those of whichever thread logged first.

A record counts as not written when the handler raised on it *or* reported it through
``Handler.handleError`` (what ``StreamHandler.emit`` does when its formatter raises): the
stdlib swallows that error after printing it, so the first write installs a counting
``logging.Handler.handleError`` that calls the original and counts only while a LoopHandler
writes on that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from loopthread._log import logger
from loopthread._process import after_exit, fork_safe_lock
from loopthread._util import describe

__all__ = [
    "Entry",
    "Pair",
    "QueuedRecord",
    "Recursion",
    "handle_all",
    "handle_all_tracked",
    "processing",
    "split",
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


class QueuedRecord(logging.LogRecord):
    """A LoopHandler's copy of a record, carrying the context of the thread that logged it in
    a slot: not in its ``__dict__`` (formatters, structlog's ``ExtraAdder`` and JSON formatters
    do not see it, and a ``__dict__`` of plain values stays out of the garbage collector's
    work), and with no ``(record, context)`` tuple per queued record (one more object for
    every collection to traverse)."""

    __slots__ = ("loopthread_context",)

    loopthread_context: contextvars.Context | None


#: A record and the context to write it in (None: the current one).
Pair = tuple[logging.LogRecord, contextvars.Context | None]
#: What a batch holds: a queued record (its context in its slot), or a pair.
Entry = QueuedRecord | Pair


def split(entry: Entry) -> Pair:
    """The record and its context."""
    if type(entry) is QueuedRecord:
        return entry, entry.loopthread_context
    return entry  # type: ignore[return-value]  # a Pair


_base_handle = logging.Handler.handle
_base_filter = logging.Filterer.filter
_LogRecord = logging.LogRecord


# ---------------------------------------------------------------------- handleError counting


class _Reported:
    """Records a handler failed on during one write (reported through handleError, or
    raised), and the first error."""

    __slots__ = ("count", "error")

    def __init__(self) -> None:
        self.count = 0
        self.error: BaseException | None = None


_writing = threading.local()  # .reported: the _Reported of the write under way in this thread


_base_handle_error = logging.Handler.handleError


def _counting_handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
    """``logging.Handler.handleError``, counted while a LoopHandler writes on this thread."""
    reported: _Reported | None = getattr(_writing, "reported", None)
    if reported is not None:
        reported.count += 1
        if reported.error is None:
            reported.error = sys.exc_info()[1]
    _base_handle_error(self, record)


_counting_handle_error.__wrapped__ = _base_handle_error  # type: ignore[attr-defined]
_counting_handle_error.__doc__ = _base_handle_error.__doc__
_counting_handle_error.__qualname__ = _base_handle_error.__qualname__


def _count_handle_error() -> None:
    # On the class, once, not on each wrapped handler: an instance attribute shadowing a method
    # costs every attribute lookup in that handler's emit() (~150 ns a record, measured). A
    # handler class that overrides handleError without calling it handles its errors itself.
    if logging.Handler.handleError is _base_handle_error:
        logging.Handler.handleError = _counting_handle_error  # type: ignore[method-assign]


# ---------------------------------------------------------------------- stdlib handlers

# Wrapped handlers inside handle() in an executor worker now, and how many times (any thread).
_busy: dict[int, tuple[logging.Handler, int]] = {}
_busy_lock = fork_safe_lock()


def handle_all_tracked(
    handler: logging.Handler, pairs: Sequence[Entry], marker: Recursion | None
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
    handler: logging.Handler, pairs: Sequence[Entry], marker: Recursion | None = None
) -> tuple[int, BaseException | None]:
    """Pass the records of ``pairs`` to ``handler`` as ``Logger.callHandlers`` would, in order.

    Applies the handler's level and filters. Each entry is a record with the context to write
    it in (its filters and formatting run there, ``marker`` set as ``processing`` first): a
    :class:`QueuedRecord`, or a pair whose context None means the current one. A Context can
    be entered by one thread at a time: the contexts must be this call's own.

    Returns how many records the handler could not write (it raised on them, or reported
    them through ``handleError``) and the first error: one bad record does not cost the rest.
    """
    _count_handle_error()
    reported = _Reported()
    outer = getattr(_writing, "reported", None)  # a record logged by a handler while it writes
    _writing.reported = reported
    try:
        failed, error = _write(handler, pairs, marker)
    finally:
        _writing.reported = outer
    return failed + reported.count, error or reported.error


def _write(
    handler: logging.Handler, entries: Sequence[Entry], marker: Recursion | None
) -> tuple[int, BaseException | None]:
    # One pass over one iterator. Consecutive records that share a context (a thread's records
    # while its variables do not change share one snapshot) are written in one ctx.run():
    # run() writes records until one has another context, and returns that one (None: done).
    # (No iterator chained per run: with a context per record, a run is one record.)
    level = handler.level
    handle = handler.handle
    filter_ = handler.filter
    emit = handler.emit
    own_handle = type(handler).handle is not _base_handle  # then per record, as logging would
    # Filterer.filter with no filters lets every record through unchanged: not called then
    # (~150 ns a record). The list itself is read per record: filters may be added meanwhile.
    filters = handler.filters
    own_filter = type(handler).filter is not _base_filter
    mark = processing.set
    queued = QueuedRecord
    outcome = _Reported()  # what failed here (run() writes it, in whichever context)
    rest = iter(entries)

    def run(ctx: contextvars.Context | None, record: logging.LogRecord) -> Entry | None:
        if ctx is not None and marker is not None:
            mark(marker)  # in the records' own context: a record logged from here is ours
        while True:
            if record.levelno >= level:
                try:
                    if own_handle:
                        handle(record)
                    elif not (filters or own_filter):
                        emit(record)
                    else:
                        rv = filter_(record)
                        if rv:
                            # Python 3.12+: a filter may return a replacement record.
                            emit(rv if rv is not True and isinstance(rv, _LogRecord) else record)
                except BaseException as exc:  # noqa: BLE001 - counted by the caller (SystemExit too)
                    outcome.count += 1
                    if outcome.error is None:
                        outcome.error = exc
            entry = next(rest, None)
            if entry is None:
                return None
            if type(entry) is queued:
                record = entry
                context = entry.loopthread_context
            else:
                record, context = entry  # type: ignore[misc]  # a Pair
            if context is not ctx or ctx is None:
                return entry  # the first of the next run (None: one record at a time)

    if not own_handle:
        # Handler.handle() is filter + lock + emit per record; taking the lock once per batch
        # does the same work without a lock round trip per record.
        handler.acquire()
    try:
        entry = next(rest, None)
        while entry is not None:
            record, ctx = split(entry)
            # None: the current context, never marked (it is not ours).
            entry = run(None, record) if ctx is None else ctx.run(run, ctx, record)
    finally:
        if not own_handle:
            handler.release()
    return outcome.count, outcome.error


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
        task = loop.create_task(
            _emit_bounded(sink, records, timeout), name="loopthread-sink", context=context
        )
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
