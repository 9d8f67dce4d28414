"""structlog processors: async enrichment for sync loggers, and offloading the rest of a chain.

``enrich(chain)`` runs an ``EnricherChain`` for each event from inside a synchronous structlog
logger and merges the fields in (bounded by a timeout; on timeout, or with no loop, the event
goes on unchanged and the degradation is counted).

``offload(*processors, sink=...)`` ends the caller's processor chain with a ``put`` into a
channel; the given processors (renderers, say) and the sink run on the loop thread, so the
application thread pays only for the hand-off. Put ``structlog.contextvars.merge_contextvars``
and anything else that reads the caller's thread state *before* ``offload``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from loopthread._exceptions import ChannelClosedError, LoopNotRunningError, WouldDeadlockError
from loopthread._log import RateLimiter, logger
from loopthread._validate import check_timeout

if TYPE_CHECKING:
    from loopthread._channel import Channel
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = ["EnrichProcessor", "OffloadProcessor", "enrich", "offload"]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]


@dataclass(frozen=True, slots=True)
class EnrichStats:
    """Counts of an ``enrich`` processor."""

    events: int
    enriched: int
    degraded: int


class EnrichProcessor:
    """The processor returned by :func:`enrich`."""

    def __init__(self, chain: EnricherChain, timeout: float) -> None:
        self._chain = chain
        self._timeout = timeout
        self._events = 0
        self._enriched = 0
        self._degraded = 0

    def __call__(self, logger_: Any, method_name: str, event_dict: EventDict) -> EventDict:
        self._events += 1
        try:
            enriched = self._chain.enrich_sync(event_dict, timeout=self._timeout)
        except (TimeoutError, LoopNotRunningError, WouldDeadlockError):
            # A slow enricher, a stopped loop, or a log call made on the loop thread itself
            # (which cannot block on the loop): the event goes on without the async fields.
            self._degraded += 1
            return event_dict
        self._enriched += 1
        event_dict.update(enriched)
        return event_dict

    def stats(self) -> EnrichStats:
        """How many events went through, enriched or passed through unchanged."""
        return EnrichStats(self._events, self._enriched, self._degraded)


def enrich(chain: EnricherChain, *, timeout: float = 0.05) -> EnrichProcessor:
    """A structlog processor that merges ``chain``'s fields into each event dict.

    Raises:
        TypeError: ``chain`` is not an ``EnricherChain``.
        ValueError: ``timeout`` is negative.
    """
    from loopthread._enrich import EnricherChain

    if not isinstance(chain, EnricherChain):
        raise TypeError(
            "loopthread.structlog.enrich() takes an EnricherChain: "
            f"enrich(loopthread.EnricherChain([...])); got {type(chain).__name__}."
        )
    checked = check_timeout(timeout)
    return EnrichProcessor(chain, checked if checked is not None else float("inf"))


@dataclass(frozen=True, slots=True)
class OffloadStats:
    """Counts of an ``offload`` processor."""

    offloaded: int
    dropped: int
    written_directly: int
    failed: int


class OffloadProcessor:
    """The processor returned by :func:`offload`."""

    def __init__(
        self,
        processors: Sequence[Processor],
        sink: Callable[..., Any],
        loop_thread: LoopThread | None,
        channel_options: dict[str, Any],
    ) -> None:
        self._processors = list(processors)
        self._sink = sink
        self._sink_is_async = inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
            getattr(sink, "__call__", None)  # noqa: B004 - objects with an async __call__
        )
        self._loop_thread = loop_thread
        self._options = channel_options
        self._channel: Channel[tuple[Any, str, EventDict]] | None = None
        self._bound_to: LoopThread | None = None
        self._errors = RateLimiter(10.0)
        self._offloaded = 0
        self._dropped = 0
        self._direct = 0
        self._failed = 0

    def __call__(self, logger_: Any, method_name: str, event_dict: EventDict) -> EventDict:
        item = (logger_, method_name, event_dict)
        channel = self._live_channel()
        try:
            if channel is None:
                raise ChannelClosedError("no loop")
            if channel.put(item):
                self._offloaded += 1
            else:
                self._dropped += 1
        except (ChannelClosedError, LoopNotRunningError):
            # No loop (interpreter exit, a stopped loop): finish the work here, in order.
            self._direct += 1
            rendered = self._run_processors(item)
            if rendered is not None:
                self._sink_sync([rendered])
        raise structlog.DropEvent

    def stats(self) -> OffloadStats:
        """How many events were offloaded, dropped by the overflow policy, or done in place."""
        return OffloadStats(self._offloaded, self._dropped, self._direct, self._failed)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event offloaded so far reached the sink."""
        channel = self._channel
        return True if channel is None else channel.flush(timeout)

    def _live_channel(self) -> Channel[tuple[Any, str, EventDict]] | None:
        channel = self._channel
        if channel is not None and self._bound_to is not None and self._bound_to.running:
            return channel
        if self._loop_thread is not None and self._bound_to is not None:
            return None  # the user's own loop is gone
        from loopthread._process import default

        try:
            lt = self._loop_thread or default()
        except LoopNotRunningError:
            return None
        self._channel = lt.channel(self._handle_batch, **self._options)
        self._bound_to = lt
        return self._channel

    def _run_processors(self, item: tuple[Any, str, EventDict]) -> Any:
        logger_, method_name, value = item
        try:
            for processor in self._processors:
                value = processor(logger_, method_name, value)
        except structlog.DropEvent:
            return None
        except Exception as exc:  # noqa: BLE001 - a failing processor costs one event, not the loop
            self._failed += 1
            if (suppressed := self._errors.allow("processor")) is not None:
                logger.warning("offload.processor_failed", error=repr(exc), suppressed=suppressed)
            return None
        return value

    async def _handle_batch(self, batch: list[tuple[Any, str, EventDict]]) -> None:
        rendered = [r for r in map(self._run_processors, batch) if r is not None]
        if not rendered:
            return
        try:
            if self._sink_is_async:
                await self._sink(rendered)
            else:
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(None, self._sink_sync, rendered)
                except RuntimeError:  # executor refused (interpreter exit): write here
                    self._sink_sync(rendered)
        except Exception as exc:  # noqa: BLE001 - isolated, counted, logged
            self._failed += len(rendered)
            if (suppressed := self._errors.allow("sink")) is not None:
                logger.warning("offload.sink_failed", error=repr(exc), suppressed=suppressed)

    def _sink_sync(self, rendered: list[Any]) -> None:
        if self._sink_is_async:
            return  # cannot await here; counted as failed by the caller path
        for value in rendered:
            self._sink(value)


def offload(
    *processors: Processor,
    sink: Callable[..., Any],
    loop_thread: LoopThread | None = None,
    maxsize: int = 10_000,
    overflow: str = "block",
    batch_size: int = 256,
) -> OffloadProcessor:
    """A structlog processor that hands the event to the loop and drops it from the caller.

    On the loop thread, ``processors`` run on each event in order (as in a structlog chain), then
    ``sink`` gets the result: an ``async def sink(batch: list)`` receives whole batches; a plain
    callable is called once per event, in the shared executor. Events keep their order.

    Raises:
        TypeError: ``sink`` or a processor is not callable.
        ValueError: bad channel options.
    """
    if not callable(sink):
        raise TypeError(
            "offload(..., sink=...) needs a callable: an `async def sink(batch)` or a plain "
            f"function taking one rendered event (e.g. print); got {type(sink).__name__}."
        )
    for processor in processors:
        if not callable(processor):
            raise TypeError(f"offload() processors must be callables; got {processor!r}.")
    from loopthread._validate import check_choice, check_positive_int

    options = {
        "maxsize": check_positive_int(maxsize, "maxsize"),
        "overflow": check_choice(
            overflow, "overflow", ("block", "drop_newest", "drop_oldest", "error")
        ),
        "batch_size": check_positive_int(batch_size, "batch_size"),
        "name": "structlog.offload",
    }
    return OffloadProcessor(processors, sink, loop_thread, options)
