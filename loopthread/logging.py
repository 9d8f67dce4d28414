"""``LoopHandler``: a stdlib ``logging`` handler that enriches and writes records on the loop.

It is ``QueueHandler`` + ``QueueListener`` in one object, with these differences that matter:

* the queue is a loopthread channel, so the consumer costs nothing while idle and a burst of
  records is handled in batches;
* async enrichers add fields to each record (concurrently within a batch), and async sinks
  (objects with ``async def emit_batch(records)``) receive whole batches;
* the caller's cost is a copy, a ``contextvars.copy_context()`` and a ``put``: ``handle()``
  does not take the handler lock around ``emit()`` (the channel is thread-safe), which is what
  makes ``QueueHandler`` collapse when several threads log at once;
* each record is enriched, filtered and formatted in the context of the thread that logged
  *it* (its request id in a ``ContextVar``), never in another record's; async sinks, which
  get whole batches, run in an empty context;
* records at or above ``protect_level`` are never dropped by the overflow policy, and what
  it dropped is summarised in one WARNING record per interval (``loopthread._logging_lane``).

Wrapped ordinary handlers (``StreamHandler``, ``FileHandler``, ...) do blocking I/O, so they run
in the loop thread's shared executor, never on the loop; each one sees the records in order.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopthread._bind import Binding
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError
from loopthread._handlers import QueuedRecord, processing
from loopthread._logging_config import NamedHandlers, dictconfig_site, make_chain
from loopthread._logging_counters import Cell, Counts
from loopthread._logging_lane import Item, Lane, check_protect_level
from loopthread._logging_writer import AsyncSink, Writer
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._channel import Channel, ChannelStats
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = ["AsyncSink", "LoopHandler", "LoopHandlerStats"]

_OVERFLOW = ("block", "drop_newest", "drop_oldest", "error")


@dataclass(frozen=True, slots=True)
class LoopHandlerStats:
    """A snapshot of a LoopHandler's counters (plain data).

    Attributes:
        emitted: records that passed the handler's level and filters and reached ``emit()``.
        dropped: records refused by the overflow policy (``"drop_newest"``, ``"error"``);
            ``"drop_oldest"`` evictions are in ``channel.dropped``.
        written_directly: records written in the caller's thread, unenriched: no loop was
            running (a stopped loop, interpreter exit), or the record was logged while the
            handler itself was working (an enricher or wrapped handler that logs).
        handler_errors: records a wrapped handler or sink could not write, counted once per
            handler: it raised, reported them through ``handleError``, was in a batch an
            async sink raised on, or could not be reached (a named handler that is missing,
            an async sink with no loop to run it). Logged, rate-limited; the others go on.
        channel: the channel's stats (None before the first record).
        dropped_by_level: ``dropped``, by level name.
        summaries: WARNING records written to say what was dropped.
        rescued: protected records a ``"drop_oldest"`` channel evicted, written anyway.
    """

    emitted: int
    dropped: int
    written_directly: int
    handler_errors: int
    channel: ChannelStats | None
    dropped_by_level: Mapping[str, int] = field(default_factory=dict)
    summaries: int = 0
    rescued: int = 0


class LoopHandler(logging.Handler):
    """Hand records to the loop thread; enrich them there and pass them to ``handlers``.

    Args:
        *handlers: ordinary ``logging.Handler`` objects and/or async sinks
            (objects with ``async def emit_batch(records)``).
        handler_names: names of handlers configured elsewhere (``logging.config.dictConfig``):
            each must name a handler of the same dictConfig, or one configured before.
        enrichers: an ``EnricherChain``, or a list to build one from: enrichers, or dicts
            giving one its options (``{"fn": "ext://pkg.fn", "timeout": 0.5}``); their
            fields become record attributes (and keys of a structlog event dict).
        loop_thread: the LoopThread to use (None: ``loopthread.default()``, looked up at first
            use and again after ``fork()``).
        maxsize: the channel's ``maxsize`` (see :meth:`loopthread.LoopThread.channel`).
        overflow: the channel's ``overflow`` policy.
        batch_size: the channel's ``batch_size``.
        level: this handler's level.
        enrich_timeout: per-enricher timeout when ``enrichers`` is a list (seconds).
        protect_level: records at or above it are never dropped by ``overflow`` (they wait
            for room instead); None protects nothing.
        drop_summary_interval: at most one WARNING record per this many seconds says what
            the overflow policy dropped (None: no summaries).
        name: the handler's name; it labels its channel and chain in metrics ("logging:NAME").
            Without one (and not named by dictConfig) the label is the wrapped handlers'
            names or class names joined by "+" ("logging:FileHandler"), stable across runs.

    Raises:
        TypeError: a handler is neither a ``logging.Handler`` nor an async sink; a name in
            ``handler_names`` is not a str; ``enrichers`` is neither an ``EnricherChain`` nor
            a list of enrichers; ``loop_thread`` is not a LoopThread.
        ValueError: a name in ``handler_names`` that no handler has (the message lists the
            names that exist); a bad ``maxsize``, ``batch_size``, ``overflow``,
            ``enrich_timeout``, ``protect_level`` or ``drop_summary_interval``.
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
        protect_level: int | str | None = logging.ERROR,
        drop_summary_interval: float | None = 10.0,
        name: str | None = None,
    ) -> None:
        # Everything is checked before logging.Handler.__init__, which registers the handler
        # for logging.shutdown(): a half-built one there would fail at exit.
        for handler in handlers:
            if not isinstance(handler, logging.Handler) and not isinstance(handler, AsyncSink):
                raise TypeError(
                    "LoopHandler wraps logging.Handler objects or async sinks (objects with "
                    f"`async def emit_batch(records)`); got {type(handler).__name__}."
                )
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
        named = NamedHandlers(handler_names)
        maxsize = check_positive_int(maxsize, "maxsize")
        overflow = check_choice(overflow, "overflow", _OVERFLOW)
        batch_size = check_positive_int(batch_size, "batch_size")
        interval = check_timeout(drop_summary_interval, "drop_summary_interval")
        protect = check_protect_level(protect_level)
        timeout = check_timeout(enrich_timeout, "enrich_timeout")
        logging._checkLevel(level)  # type: ignore[attr-defined]  # the stdlib's own check
        from loopthread._loopthread import LoopThread

        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        self._default_label = "+".join([type(h).__name__ for h in handlers] + named.names)
        label = name or dictconfig_site()[1] or self._default_label or "LoopHandler"
        # Built now (last: it attaches to loop_thread), so bad enrichers fail here rather than
        # in the first emit(). With loop_thread=None the chain follows loopthread.default(),
        # as this handler does.
        chain = make_chain(enrichers, timeout, loop_thread, f"logging:{label}")
        super().__init__(level)
        if name is not None:
            self.name = name
        self._batch_size = batch_size
        self._maxsize = maxsize
        self._counts = Counts()
        self._local = self._counts.local
        self._binding: Binding[Channel[Item]] = Binding(loop_thread, self._open_channel)
        self._lane = Lane(
            overflow=overflow,
            protect_level=protect,
            maxsize=maxsize,
            interval=interval,
            counts=self._counts,
            describe=self._label,
            on_loop=self._on_loop,
        )
        self._plain = self._lane.plain
        self._writer = Writer(
            given=list(handlers),
            named=named,
            chain=chain,
            counts=self._counts,
            lane=self._lane,
            channel=lambda: self._binding.value,
        )
        self._write_directly = self._writer.directly
        self._plain_filter = type(self).filter is logging.Filterer.filter
        self._last_channel: Channel[Item] | None = None  # for stats() after close

    def _label(self) -> str:
        return f"logging:{self.name or self._default_label or 'LoopHandler'}"

    def _on_loop(self) -> bool:
        bound = self._binding.bound_to
        return bound is not None and bound.in_loop_thread()

    # ------------------------------------------------------------------ observing

    @property
    def dropped(self) -> int:
        """Records refused by the overflow policy (see :class:`LoopHandlerStats`)."""
        return self._counts.totals().dropped

    @property
    def written_directly(self) -> int:
        """Records written in the caller's thread (see :class:`LoopHandlerStats`)."""
        return self._counts.totals().written_directly

    @property
    def handler_errors(self) -> int:
        """Records a wrapped handler or sink could not write (see :class:`LoopHandlerStats`)."""
        return self._counts.totals().handler_errors

    def stats(self) -> LoopHandlerStats:
        """A snapshot of the counters, with the channel's stats."""
        channel = self._binding.value or self._last_channel
        totals = self._counts.totals()
        return LoopHandlerStats(
            emitted=totals.emitted,
            dropped=totals.dropped,
            written_directly=totals.written_directly,
            handler_errors=totals.handler_errors,
            channel=None if channel is None else channel.stats(),
            dropped_by_level={
                str(logging.getLevelName(level)): n for level, n in sorted(totals.levels.items())
            },
            summaries=totals.summaries,
            rescued=totals.rescued,
        )

    # ------------------------------------------------------------------ caller side

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and enqueue ``record`` without taking the handler lock (the channel is safe)."""
        if not self.filters and self._plain_filter:  # Filterer.filter would let it through
            self.emit(record)
            return record if _FILTER_RETURNS_RECORD else True  # type: ignore[return-value]
        rv: object = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may replace the record
            record = rv
        if rv:
            self.emit(record)
        return rv  # type: ignore[return-value]  # 3.12+ returns the record, as Handler.handle

    def emit(self, record: logging.LogRecord) -> None:
        """Make ``record`` safe to hand off and put it in the channel with the caller's
        context. Never raises."""
        try:
            cell: Cell = self._local.cell
        except AttributeError:
            cell = self._counts.cell()
        cell.emitted += 1
        try:
            prepared = self.prepare(record)
            marker = processing.get()
            if marker is not None and marker.owner is self._writer:
                self._write_directly(prepared, marker)  # logged from inside its own work
                return
            channel = self._binding.get()
            if channel is None:
                self._write_directly(prepared, None)
                return
            # The caller's context, per record. Consecutive records of a thread whose
            # variables did not change share one snapshot: a Context is a GC-tracked object,
            # and one per queued record doubled the collector's work on a deep queue. (The
            # equality check is an identity check of the variables' mapping when unchanged.)
            ctx = _copy_context()
            last = cell.ctx
            if last is not None and ctx == last:
                ctx = last
            else:
                cell.ctx = ctx
            item: Any
            if type(prepared) is QueuedRecord:
                prepared.loopthread_context = ctx
                item = prepared
            else:
                item = (prepared, ctx)  # a factory's LogRecord subclass: carried beside it
            try:
                if self._plain:
                    accepted = channel.put(item)
                else:
                    accepted = self._lane.put(channel, item, prepared.levelno)
            except (ChannelClosedError, LoopNotRunningError):
                self._write_directly(prepared, None)
                return
            except Exception:  # ChannelFullError ("error" policy): dropped, and reported
                self._lane.dropped(cell, prepared.levelno)
                raise
            if not accepted:
                self._lane.dropped(cell, prepared.levelno)
        except Exception:  # noqa: BLE001 - logging never raises into the application
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy that later changes by the caller cannot affect (as ``QueueHandler.prepare``).

        A str message is merged (``msg`` = the formatted message, ``args`` cleared). A dict
        message (structlog's event dict, from ``ProcessorFormatter.wrap_for_formatter``) stays
        a dict, copied, so ``ProcessorFormatter`` gets it intact; an ``exc_info=True`` in it
        is resolved here, where the exception is. An exception on the record is rendered to
        ``exc_text`` here, kept apart from the message (each wrapped formatter lays it out),
        and ``exc_info`` stays on the record for formatters that render it themselves
        (structlog's ``ProcessorFormatter`` for stdlib records).
        """
        return _prepare(record, self.formatter or _default_formatter)

    def flush(self, timeout: float | None = 5.0) -> None:
        """Wait until every record emitted so far was written (bounded by ``timeout``); then
        the summary of what the overflow policy dropped, if one is owed, is written too."""
        marker = processing.get()
        if marker is None or marker.owner is not self._writer:  # (not inside its own work)
            channel = self._binding.value
            bound = self._binding.bound_to
            if channel is None or bound is None or not bound.in_loop_thread():
                deadline = None if timeout is None else time.monotonic() + timeout
                self._flush_channel(channel, timeout)
                if self._owe_summary(channel):
                    self._flush_channel(channel, _left(deadline))
            # (on the loop thread nothing can wait for the loop: its records are written soon)
        for handler in self._writer.handlers()[0]:
            handler.flush()

    def close(self) -> None:
        """Drain the channel (bounded) and close it; the wrapped handlers stay open.

        Wrapped handlers belong to whoever created them (``logging.shutdown`` closes them).
        """
        channel = self._binding.forget()
        if channel is not None:
            self._last_channel = channel
            if self._lane.owes() and not self._on_loop():
                self._flush_channel(channel, 5.0)  # the summary goes after what is queued
            self._owe_summary(channel)
            try:
                channel.close(timeout=5.0)
            except Exception:  # noqa: BLE001 - closing must go on whatever the channel says
                pass
        self._write_leftovers()
        super().close()

    def _flush_channel(self, channel: Channel[Item] | None, timeout: float | None) -> None:
        if channel is not None:
            try:
                channel.flush(timeout)
            except (ChannelClosedError, LoopNotRunningError):
                pass
            if channel.closed:
                self._write_leftovers()

    def _owe_summary(self, channel: Channel[Item] | None) -> bool:
        """Put (or write) the summary still owed; True if there was one."""
        summary = self._lane.summary(channel, force=True)
        if summary is None:
            return False
        if channel is not None and not channel.closed:
            try:
                if self._lane.put(channel, summary, logging.WARNING, protected=True):
                    return True
            except Exception:  # noqa: BLE001 - closed meanwhile: written below
                pass
        self._write_directly(summary[0], None)
        return True

    def _write_leftovers(self) -> None:
        for record, _ in self._lane.leftovers():
            self._counts.cell().rescued += 1
            self._write_directly(record, None)

    def _open_channel(self, lt: LoopThread) -> Channel[Item]:
        """Open the channel on ``lt`` (again, after fork or a dead default loop).

        Opened from an empty context: its consumer task must not inherit the context of the
        thread that happened to log first.
        """
        self._lane.loop_ident = lt.thread.ident
        return contextvars.Context().run(
            lt.channel,
            self._writer.batch,
            maxsize=self._maxsize,
            overflow=self._lane.channel_overflow,
            batch_size=self._batch_size,
            name=self._label(),
        )


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _prepare(record: logging.LogRecord, formatter: logging.Formatter) -> logging.LogRecord:
    """:meth:`LoopHandler.prepare`, on every call: kept lean."""
    msg = record.msg
    copied: logging.LogRecord
    if type(record) is _LogRecord or type(record) is QueuedRecord:
        # What copy.copy does for a plain LogRecord (a new instance sharing the attribute
        # values), without its generic __reduce_ex__ machinery: 4x cheaper, on every call. A
        # QueuedRecord: a LogRecord with a slot for the caller's context.
        copied = _new_record(QueuedRecord)
        copied.__dict__ = record.__dict__.copy()  # (a dict copy: 4x faster than update())
    else:
        copied = copy.copy(record)  # a factory's subclass may define its own copying
    if type(msg) is not str and isinstance(msg, dict):
        event = dict(msg)
        exc_info = event.get("exc_info")
        if (
            exc_info
            and not isinstance(exc_info, tuple | BaseException)
            and sys.exc_info()[0] is not None
        ):
            event["exc_info"] = sys.exc_info()  # exc_info=True, resolved where it is true
        copied.msg = event
    else:
        message = record.getMessage()
        copied.message = message
        copied.msg = message
        copied.args = None
    if copied.exc_info and not copied.exc_text:
        copied.exc_text = formatter.formatException(copied.exc_info)
    return copied


_default_formatter = logging.Formatter()
_FILTER_RETURNS_RECORD = sys.version_info >= (3, 12)  # (Filterer.filter; True before 3.12)
_LogRecord = logging.LogRecord
_new_record = object.__new__
_copy_context = contextvars.copy_context
