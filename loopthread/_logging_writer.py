"""LoopHandler's writing side: a batch on the loop (enrich each record in its own context,
then every wrapped handler and sink), a record written directly (no loop, or logged from
inside the handler's own work), and the count of every record a destination did not get.

* Enrichment: one Task per record, created with the record's own ``contextvars.Context``
  (captured in the caller's ``emit``), so each enricher sees the context of the thread that
  logged that record.
* Wrapped stdlib handlers: one executor job per handler per batch (blocking I/O never runs on
  the loop); each record's filters and formatting run in its context. Several handlers are
  written concurrently, so every handler but the first works on copies of the contexts (a
  Context is entered by one thread at a time).
* Async sinks get the whole batch in an empty context: a batch belongs to no single caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loopthread._handlers import (
    Entry,
    Recursion,
    handle_all,
    handle_all_tracked,
    processing,
    split,
    write_to_sink_here,
)
from loopthread._log import RateLimiter, logger
from loopthread._logging_config import NamedHandlers
from loopthread._logging_counters import Counts
from loopthread._logging_lane import Item, Lane
from loopthread._process import fork_safe_lock
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._enrich import EnricherChain

__all__ = ["AsyncSink", "Writer"]

SINK_TIMEOUT = 5.0  # an async sink written without its loop (after it stopped, at exit)


@runtime_checkable
class AsyncSink(Protocol):
    """An async destination for whole batches of records (a network client, a database)."""

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Write the records, in order."""


class Writer:
    """Writes one LoopHandler's records into its wrapped handlers and sinks."""

    def __init__(
        self,
        *,
        given: list[logging.Handler | AsyncSink],
        named: NamedHandlers,
        chain: EnricherChain | None,
        counts: Counts,
        lane: Lane,
        channel: Callable[[], object],
    ) -> None:
        self.chain = chain
        self._given = given
        self._named = named
        self._counts = counts
        self._lane = lane
        self._channel = channel  # the LoopHandler's channel now (for the drop summary)
        self._split: tuple[list[logging.Handler], list[AsyncSink], list[str]] | None = None
        self._errors = RateLimiter(10.0)
        self._errors_lock = fork_safe_lock()

    def handlers(self) -> tuple[list[logging.Handler], list[AsyncSink], list[str]]:
        """The stdlib handlers, the async sinks, and names still missing."""
        split = self._split
        if split is not None:
            return split
        named, missing = self._named.resolve()
        handlers = [*self._given, *named]
        plain = [h for h in handlers if isinstance(h, logging.Handler)]
        sinks = [h for h in handlers if not isinstance(h, logging.Handler)]
        if not missing:
            self._split = (plain, sinks, missing)
        return plain, sinks, missing

    # ------------------------------------------------------------------ in the caller

    def directly(self, record: logging.LogRecord, marker: Recursion | None) -> None:
        """Write ``record`` here, unenriched, rather than lose it: no loop to hand it to
        (interpreter exit, a stopped loop; ``marker`` None), or it was logged while the handler
        itself was working (``marker``: its own, ``owner`` this writer)."""
        self._counts.cell().written_directly += 1
        plain, sinks, missing = self.handlers()
        for handler in plain:
            failed, error = handle_all(handler, [(record, None)])
            if failed:
                self.failed(handler, failed, error)
        if sinks and marker is not None and marker.open:
            marker.records.append(record)  # given to the sinks once the batch is written
            sinks = []
        for sink in sinks:
            problem: BaseException | None
            if marker is not None:
                problem = RecursionError(
                    "logged while the sink was writing records logged from inside it; "
                    "it would feed itself"
                )
            else:
                problem = write_to_sink_here(
                    sink, [record], SINK_TIMEOUT, Recursion(self, open_=False)
                )
            if problem is not None:
                self.failed(sink, 1, problem)
        for name in missing:
            self.failed(name, 1, _missing(name))

    # ------------------------------------------------------------------ on the loop

    async def batch(self, items: list[Item]) -> None:
        """The channel's handler: enrich and write one batch."""
        marker = Recursion(self)
        token = processing.set(marker)
        try:
            entries = self._lane.unpack(items)
            summary = self._lane.summary(self._channel())
            if summary is not None:
                entries = [summary, *entries]
            if self.chain is not None:
                await self._enrich_all(self.chain, entries, marker)
            plain, sinks, missing = self.handlers()
            records = [split(entry)[0] for entry in entries] if sinks else []
            jobs = [self._deliver(h, entries, marker, copy=i > 0) for i, h in enumerate(plain)]
            jobs += [self._deliver_sink(sink, records, marker) for sink in sinks]
            if len(jobs) == 1:
                await jobs[0]  # the common case: no gather Task
            elif jobs:
                await asyncio.gather(*jobs)
            for name in missing:
                self.failed(name, len(entries), _missing(name))
            if marker.records:  # logged from inside the work on this batch: to the sinks now
                marker.open = False
                late, marker.records = marker.records, []
                for sink in sinks:
                    await self._deliver_sink(sink, late, marker)
        finally:
            marker.open = False
            processing.reset(token)

    async def _enrich_all(
        self, chain: EnricherChain, entries: list[Entry], marker: Recursion
    ) -> None:
        """Enrich every record of a batch, concurrently, each in a task of its own context."""
        flat = chain._flat  # (EnricherChain's batch interface, not public)
        if flat:
            try:
                await chain._ready()  # once for the batch (else: in each chain.enrich())
            except Exception as exc:  # noqa: BLE001 - the records go on unenriched
                error = describe(exc)
                self.warn("loop_handler.enrich_failed", chain, chain=chain.name, error=error)
                return
        loop = asyncio.get_running_loop()
        enrich = self._enrich
        tasks = []
        for entry in entries:
            record, ctx = split(entry)
            tasks.append(_start(loop, enrich(chain, record, marker, flat), ctx))
        try:
            for task in tasks:  # they end in about the order they began: few waits
                await task
        finally:
            for task in tasks:  # (done ones ignore it) this batch was cancelled: so are they
                task.cancel()

    async def _enrich(
        self, chain: EnricherChain, record: logging.LogRecord, marker: Recursion, flat: bool
    ) -> None:
        processing.set(marker)  # in the record's own context (this task runs in it)
        try:
            fields = record.__dict__
            event = fields.get("msg")
            view: Mapping[str, Any] = (
                {**fields, **event} if type(event) is dict else fields  # structlog's event dict
            )
            enriched: Mapping[str, Any]
            if flat:  # only the enrichers' fields, merged as enrich() would (the later wins)
                results = await chain._fields(view)
                enriched = results[0] or {} if len(results) == 1 else _merged(results)
            else:
                enriched = await chain.enrich(view)
            for key, value in enriched.items():
                if key not in view or view[key] is not value:
                    setattr(record, key, value)
                    if type(event) is dict:
                        event[key] = value
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except BaseException as exc:  # noqa: BLE001 - the record goes on unenriched; a Task
            # that raised KeyboardInterrupt or SystemExit would take the loop down
            self.warn("loop_handler.enrich_failed", chain, chain=chain.name, error=describe(exc))

    async def _deliver(
        self, handler: logging.Handler, pairs: list[Entry], marker: Recursion, *, copy: bool
    ) -> None:
        if copy:  # another handler's job is in the originals (a Context is entered once)
            pairs = [
                (record, None if ctx is None else ctx.copy()) for record, ctx in map(split, pairs)
            ]
        loop = asyncio.get_running_loop()
        try:
            job = loop.run_in_executor(None, handle_all_tracked, handler, pairs, marker)
        except RuntimeError:
            # The executor refuses work (its loop is stopping): write on the loop thread
            # rather than lose it. (Each record is written once: nothing was submitted.)
            failed, error = handle_all(handler, pairs, marker)
        else:
            failed, error = await job
        if failed:
            self.failed(handler, failed, error)

    async def _deliver_sink(
        self, sink: AsyncSink, records: list[logging.LogRecord], marker: Recursion
    ) -> None:
        # A batch belongs to no single caller: the sink runs in an empty context.
        context = contextvars.Context()
        context.run(processing.set, marker)
        loop = asyncio.get_running_loop()
        error = await loop.create_task(_emit_batch(sink, records), context=context)
        if error is not None:
            self.failed(sink, len(records), error)

    # ------------------------------------------------------------------ accounting

    def failed(self, handler: object, records: int, error: BaseException | None) -> None:
        """Count ``records`` that ``handler`` (or the handler name) did not get; warn."""
        self._counts.cell().handler_errors += records
        self.warn(
            "loop_handler.handler_failed",
            handler,
            handler=handler if isinstance(handler, str) else describe(handler),
            records=records,
            error=describe(error),
        )

    def warn(self, event: str, key: object, **fields: Any) -> None:
        """loopthread's own warning, rate-limited per ``key``; never raises."""
        with self._errors_lock:  # the loop thread, executor workers, callers writing directly
            suppressed = self._errors.allow(key if isinstance(key, str) else id(key))
        if suppressed is not None:
            try:
                logger.warning(event, **fields, suppressed=suppressed)
            except Exception:  # noqa: BLE001 - a broken log setup must not break the handler
                pass


async def _emit_batch(sink: AsyncSink, records: list[logging.LogRecord]) -> BaseException | None:
    """``sink.emit_batch(records)``; its fault returned, not raised: a Task that raises
    KeyboardInterrupt or SystemExit would take the loop down with it."""
    try:
        await sink.emit_batch(records)
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # our own cancellation (stop): not the sink's fault
        return exc
    except BaseException as exc:  # noqa: BLE001 - a broken sink (even SystemExit) is counted
        return exc
    return None


if sys.version_info >= (3, 12):

    def _start(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, None],
        ctx: contextvars.Context | None,
    ) -> asyncio.Task[None]:
        # Its first step now, in its task: an enricher that does not await costs no iteration.
        return asyncio.Task(coro, loop=loop, context=ctx, eager_start=True)

else:

    def _start(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, None],
        ctx: contextvars.Context | None,
    ) -> asyncio.Task[None]:
        return loop.create_task(coro, context=ctx)


def _merged(results: list[Mapping[str, Any] | None]) -> Mapping[str, Any]:
    merged: dict[str, Any] = {}
    for fields in results:
        if fields:
            merged.update(fields)
    return merged


def _missing(name: str) -> LookupError:
    return LookupError(
        f"no logging handler named {name!r} exists any more (the dictConfig that was to "
        "build it failed?)"
    )
