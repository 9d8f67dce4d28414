"""``LoopHandler``: a stdlib ``logging`` handler that enriches and writes records on the loop.

It is ``QueueHandler`` + ``QueueListener`` in one object, with three differences that matter:

* the queue is a loopthread channel, so the consumer costs nothing while idle and a burst of
  records is handled in batches;
* async enrichers add fields to each record (concurrently within a batch), and async sinks
  (objects with ``async def emit_batch(records)``) receive whole batches;
* the caller's cost is a copy and a ``put``: ``handle()`` does not take the handler lock around
  ``emit()`` (the channel is thread-safe), which is what makes ``QueueHandler`` collapse when
  several threads log at once.

Wrapped ordinary handlers (``StreamHandler``, ``FileHandler``, ...) do blocking I/O, so they run
in the loop thread's shared executor, never on the loop; each one sees the records in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loopthread._bind import Binding
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError
from loopthread._handlers import handle_all, handle_all_tracked
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._util import describe
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._channel import Channel, ChannelStats
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = ["AsyncSink", "LoopHandler", "LoopHandlerStats"]

# Set while LoopHandler processes a batch (on the loop and in its executor jobs). A record
# logged from there (an enricher that logs, a failing handler, loopthread's own warnings routed
# back into logging) is written straight to the wrapped handlers instead of being queued again:
# queueing it would feed the handler its own output, forever.
_processing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "loopthread_logging_processing", default=False
)

_OVERFLOW = ("block", "drop_newest", "drop_oldest", "error")


def _peek(counter: itertools.count[int]) -> int:
    # itertools.count has no accessor for its next value; its repr is "count(N)".
    return int(repr(counter)[6:-1])


@dataclass(frozen=True, slots=True)
class LoopHandlerStats:
    """A snapshot of a LoopHandler's counters (plain data).

    Fields:
        emitted: records that passed the handler's level and filters and reached ``emit()``.
        dropped: records refused by the overflow policy (``"drop_newest"``, or a
            ``"block"`` put that timed out); ``"drop_oldest"`` evictions are in
            ``channel.dropped``.
        written_directly: records written in the caller's thread, unenriched: no loop was
            running (a stopped loop, interpreter exit), or the record was logged while the
            handler itself was working (an enricher or wrapped handler that logs).
        handler_errors: records a wrapped handler raised on, or that were in a batch an async
            sink raised on (logged, rate-limited; the other records and handlers go on).
        channel: the channel's stats (None before the first record).
    """

    emitted: int
    dropped: int
    written_directly: int
    handler_errors: int
    channel: ChannelStats | None


@runtime_checkable
class AsyncSink(Protocol):
    """An async destination for whole batches of records (a network client, a database)."""

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Write the records, in order."""


class LoopHandler(logging.Handler):
    """Hand records to the loop thread; enrich them there and pass them to ``handlers``.

    Args:
        *handlers: ordinary ``logging.Handler`` objects and/or async sinks
            (objects with ``async def emit_batch(records)``).
        handler_names: names of handlers configured elsewhere (``logging.config.dictConfig``),
            looked up when the first record arrives.
        enrichers: an ``EnricherChain``, or enrichers to build one from; their fields become
            record attributes.
        loop_thread: the LoopThread to use (None: ``loopthread.default()``, looked up at first
            use and again after ``fork()``).
        maxsize, overflow, batch_size: the channel's settings (see ``LoopThread.channel``).
        level: this handler's level.
        enrich_timeout: per-enricher timeout when ``enrichers`` is a list (seconds).

    Raises:
        TypeError: a handler is neither a ``logging.Handler`` nor an async sink; ``enrichers``
            is neither an ``EnricherChain`` nor a list of callables; ``loop_thread`` is not a
            LoopThread.
        ValueError: a bad ``maxsize``, ``batch_size``, ``overflow`` or ``enrich_timeout``.
    """

    def __init__(
        self,
        *handlers: logging.Handler | AsyncSink,
        handler_names: Iterable[str] = (),
        enrichers: EnricherChain | Iterable[Any] = (),
        loop_thread: LoopThread | None = None,
        maxsize: int = 10_000,
        overflow: str = "block",
        batch_size: int = 256,
        level: int | str = logging.NOTSET,
        enrich_timeout: float = 0.1,
    ) -> None:
        super().__init__(level)
        for handler in handlers:
            if not isinstance(handler, logging.Handler) and not isinstance(handler, AsyncSink):
                raise TypeError(
                    "LoopHandler wraps logging.Handler objects or async sinks (objects with "
                    f"`async def emit_batch(records)`); got {type(handler).__name__}."
                )
        if isinstance(handler_names, str):
            raise TypeError(
                f"handler_names takes a list of names, e.g. [{handler_names!r}], not a str."
            )
        self._handlers: list[logging.Handler | AsyncSink] = list(handlers)
        self._handler_names = list(handler_names)
        # dictConfig keeps the handlers it creates only in its own config dict and in
        # logging's weak registry: a handler referenced only by name here would be garbage
        # collected as soon as dictConfig returns. Hold the configurator's handler table (it
        # fills in as dictConfig goes on, in sorted order, so later names are not built yet).
        self._configured: Mapping[str, object] | None = (
            _dictconfig_handlers() if self._handler_names else None
        )
        self._maxsize = check_positive_int(maxsize, "maxsize")
        self._overflow = check_choice(overflow, "overflow", _OVERFLOW)
        self._batch_size = check_positive_int(batch_size, "batch_size")
        from loopthread._loopthread import LoopThread

        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        self._loop_thread = loop_thread
        # Built now, so bad enrichers fail here rather than in the first emit(). With
        # loop_thread=None the chain follows loopthread.default(), as this handler does.
        self._chain: EnricherChain | None = _make_chain(
            enrichers, check_timeout(enrich_timeout, "enrich_timeout"), loop_thread
        )
        self._binding: Binding[Channel[logging.LogRecord]] = Binding(
            loop_thread, self._open_channel
        )
        self._last_channel: Channel[logging.LogRecord] | None = None  # for stats() after close
        self._errors = RateLimiter(10.0)
        self._errors_lock = fork_safe_lock()
        # Written by any thread that logs: itertools.count, one atomic next() per record.
        self._emitted = itertools.count()
        self._dropped = itertools.count()
        self._written_directly = itertools.count()
        self._handler_errors = itertools.count()

    # ------------------------------------------------------------------ observing

    @property
    def dropped(self) -> int:
        """Records refused by the overflow policy (see :class:`LoopHandlerStats`)."""
        return _peek(self._dropped)

    @property
    def written_directly(self) -> int:
        """Records written in the caller's thread (see :class:`LoopHandlerStats`)."""
        return _peek(self._written_directly)

    @property
    def handler_errors(self) -> int:
        """Records a wrapped handler or sink failed on (see :class:`LoopHandlerStats`)."""
        return _peek(self._handler_errors)

    def stats(self) -> LoopHandlerStats:
        """A snapshot of the counters, with the channel's stats."""
        channel = self._binding.value or self._last_channel
        return LoopHandlerStats(
            emitted=_peek(self._emitted),
            dropped=_peek(self._dropped),
            written_directly=_peek(self._written_directly),
            handler_errors=_peek(self._handler_errors),
            channel=None if channel is None else channel.stats(),
        )

    # ------------------------------------------------------------------ caller side

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and enqueue ``record`` without taking the handler lock (the channel is safe)."""
        rv: object = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may replace the record
            record = rv
        if rv:
            self.emit(record)
        return rv  # type: ignore[return-value]  # 3.12+ returns the record, as Handler.handle

    def emit(self, record: logging.LogRecord) -> None:
        """Make ``record`` safe to hand off and put it in the channel. Never raises."""
        next(self._emitted)
        try:
            prepared = self.prepare(record)
            if _processing.get():
                self._write_directly(prepared)
                return
            channel = self._live_channel()
            if channel is None:
                self._write_directly(prepared)
                return
            try:
                accepted = channel.put(prepared)
            except (ChannelClosedError, LoopNotRunningError):
                self._write_directly(prepared)
                return
            if not accepted:
                next(self._dropped)
        except Exception:  # noqa: BLE001 - logging never raises into the application
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy that later changes by the caller cannot affect (as ``QueueHandler.prepare``).

        The message is merged (``msg`` = the formatted message, ``args`` cleared) and the
        exception rendered to ``exc_text`` (``exc_info`` cleared: tracebacks hold frames, which
        must not cross threads). Unlike ``QueueHandler``, ``exc_text`` is kept apart from the
        message, so each wrapped handler's own formatter still lays out the traceback.
        """
        message = record.getMessage()
        if type(record) is _LogRecord:
            # What copy.copy does for a plain LogRecord (a new instance sharing the attribute
            # values), without its generic __reduce_ex__ machinery: 4x cheaper, on every call.
            copied = _new_record(_LogRecord)
            copied.__dict__.update(record.__dict__)
            record = copied
        else:
            record = copy.copy(record)  # a factory's subclass may define its own copying
        record.message = message
        record.msg = message
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = (self.formatter or _default_formatter).formatException(
                    record.exc_info
                )
            record.exc_info = None
        return record

    def flush(self, timeout: float | None = 5.0) -> None:
        """Wait until every record emitted so far was written (bounded by ``timeout``)."""
        channel = self._binding.value
        bound = self._binding.bound_to
        if channel is not None and not _processing.get():
            try:
                if bound is not None and bound.in_loop_thread():
                    return  # the loop cannot wait for itself; records are written soon after
                channel.flush(timeout)
            except (ChannelClosedError, LoopNotRunningError):
                pass
        for handler in self._resolved_handlers():
            if isinstance(handler, logging.Handler):
                handler.flush()

    def close(self) -> None:
        """Drain the channel (bounded) and close it; the wrapped handlers stay open.

        Wrapped handlers belong to whoever created them (``logging.shutdown`` closes them).
        """
        channel = self._binding.forget()
        if channel is not None:
            self._last_channel = channel
            try:
                channel.close(timeout=5.0)
            except Exception:  # noqa: BLE001 - closing must go on whatever the channel says
                pass
        super().close()

    def _live_channel(self) -> Channel[logging.LogRecord] | None:
        return self._binding.get()

    def _open_channel(self, lt: LoopThread) -> Channel[logging.LogRecord]:
        """Open the channel on ``lt`` (again, after fork or a dead default loop)."""
        return lt.channel(
            self._handle_batch,
            maxsize=self._maxsize,
            overflow=self._overflow,
            batch_size=self._batch_size,
            name=f"logging:{self.name or id(self)}",
        )

    def _resolved_handlers(self) -> list[logging.Handler | AsyncSink]:
        if self._handler_names:
            names, self._handler_names = self._handler_names, []
            configured, self._configured = self._configured, None
            for name in names:
                found = configured.get(name) if configured is not None else None
                handler = found if isinstance(found, logging.Handler) else _handler_by_name(name)
                if handler is None:
                    raise ValueError(
                        f"LoopHandler: no logging handler named {name!r}; configure it in the "
                        "same dictConfig (under 'handlers') or pass the object itself."
                    )
                self._handlers.append(handler)
        return self._handlers

    def _write_directly(self, record: logging.LogRecord) -> None:
        # No loop to hand to (interpreter exit, a stopped loop) or a record logged while this
        # handler itself is working: write it here, unenriched, rather than lose it.
        next(self._written_directly)
        for handler in self._resolved_handlers():
            if isinstance(handler, logging.Handler):
                failed, error = handle_all(handler, [record])
                if failed:
                    self._handler_failed(handler, failed, error)

    # ------------------------------------------------------------------ on the loop

    async def _handle_batch(self, records: list[logging.LogRecord]) -> None:
        token = _processing.set(True)
        try:
            chain = self._chain
            if chain is not None:
                await asyncio.gather(*(self._enrich(chain, r) for r in records))
            handlers = self._resolved_handlers()
            if len(handlers) == 1:
                await self._deliver(handlers[0], records)  # the common case: no gather Task
            else:
                await asyncio.gather(*(self._deliver(h, records) for h in handlers))
        finally:
            _processing.reset(token)

    async def _enrich(self, chain: EnricherChain, record: logging.LogRecord) -> None:
        view: Mapping[str, Any] = record.__dict__
        enriched = await chain.enrich(view)
        for key, value in enriched.items():
            if key not in view or view[key] is not value:
                setattr(record, key, value)

    async def _deliver(
        self, handler: logging.Handler | AsyncSink, records: list[logging.LogRecord]
    ) -> None:
        error: BaseException | None = None
        if isinstance(handler, logging.Handler):
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()  # carries _processing into the executor
            try:
                failed, error = await loop.run_in_executor(
                    None, context.run, handle_all_tracked, handler, records
                )
            except RuntimeError:
                # The executor refuses work (its loop is stopping): write on the loop thread
                # rather than lose it.
                failed, error = handle_all(handler, records)
        else:
            try:
                await handler.emit_batch(records)
                failed = 0
            except asyncio.CancelledError:
                raise  # our own cancellation (stop): not the sink's fault
            except BaseException as exc:  # noqa: BLE001 - a broken sink (even SystemExit)
                failed, error = len(records), exc  # must not stop the others or the loop
        if failed:
            self._handler_failed(handler, failed, error)

    def _handler_failed(
        self, handler: logging.Handler | AsyncSink, failed: int, error: BaseException | None
    ) -> None:
        for _ in range(failed):
            next(self._handler_errors)
        with self._errors_lock:  # the loop thread, or callers writing directly
            suppressed = self._errors.allow(id(handler))
        if suppressed is not None:
            try:
                logger.warning(
                    "loop_handler.handler_failed",
                    handler=repr(handler),
                    records=failed,
                    error=describe(error),
                    suppressed=suppressed,
                )
            except Exception:  # noqa: BLE001 - a broken log setup must not break the handler
                pass


def _make_chain(
    enrichers: object, timeout: float | None, loop_thread: LoopThread | None
) -> EnricherChain | None:
    from loopthread._enrich import EnricherChain

    if isinstance(enrichers, EnricherChain):
        return enrichers
    if isinstance(enrichers, str | bytes | Mapping) or not isinstance(enrichers, Iterable):
        raise TypeError(
            "LoopHandler(enrichers=...) takes an EnricherChain or a list of enrichers (async "
            f"callables taking the record's fields); got {type(enrichers).__name__}. "
            "Pass enrichers=[add_region] or enrichers=loopthread.EnricherChain([...])."
        )
    listed = list(enrichers)
    if not listed:
        return None
    return EnricherChain(listed, timeout=timeout, loop_thread=loop_thread)


def _dictconfig_handlers() -> Mapping[str, object] | None:
    """The handler table of the ``logging.config.dictConfig`` call constructing us, if any."""
    import logging.config
    import sys
    import types

    frame: types.FrameType | None = sys._getframe(2)
    for _ in range(8):  # dictConfig -> configure -> configure_handler -> LoopHandler(...)
        if frame is None:
            return None
        configurator = frame.f_locals.get("self")
        if isinstance(configurator, logging.config.DictConfigurator):
            handlers = configurator.config.get("handlers")
            return handlers if isinstance(handlers, Mapping) else None
        frame = frame.f_back
    return None


def _handler_by_name(name: str) -> logging.Handler | None:
    get = getattr(logging, "getHandlerByName", None)  # Python 3.12+
    if get is not None:
        handler: logging.Handler | None = get(name)
        return handler
    ref = logging._handlers.get(name)  # type: ignore[attr-defined]
    return ref if isinstance(ref, logging.Handler) else None


_default_formatter = logging.Formatter()
_LogRecord = logging.LogRecord
_new_record = object.__new__
