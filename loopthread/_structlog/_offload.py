"""The ``offload`` processor: the caller's chain ends with a put; the rest runs on the loop.

Design notes (why it is built this way):

* The caller pays for a ``put`` into a channel and nothing else; the processors given to
  ``offload`` and the sink run on the loop thread (a sync sink in its executor). With no loop
  running (after ``stop()``, at interpreter exit) the work is done in the caller's thread.
* Counters written from several threads are ``itertools.count`` objects (``next()`` is one
  atomic C call), as in the channel, so the hot path takes no lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from loopthread._bind import Binding
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._structlog._enrich import peek
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._channel import Channel, ChannelStats
    from loopthread._loopthread import LoopThread

__all__ = ["OffloadProcessor", "OffloadStats", "Processor"]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]
_Item = tuple[Any, str, EventDict]

# Set while an offload processor works (its processors on the loop, its sync sink in the
# executor). An event logged from there must not wait for room in the channel: the consumer
# that makes room is what is waiting for it.
_offloading: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "loopthread_structlog_offloading", default=False
)


@dataclass(frozen=True, slots=True)
class OffloadStats:
    """Counts of an ``offload`` processor.

    Fields:
        offloaded: events handed to the channel.
        dropped: events refused by the overflow policy (or, logged from inside the offload's
            own processors or sink while the channel was full, refused rather than waited for).
        written_directly: events processed and written in the caller's thread because no loop
            was running (a stopped loop, interpreter exit).
        failed: events lost to a processor or sink that raised (each logged, rate-limited).
        channel: the channel's stats (None until the first event).
    """

    offloaded: int
    dropped: int
    written_directly: int
    failed: int
    channel: ChannelStats | None = None


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
        self._binding: Binding[Channel[_Item]] = Binding(loop_thread, self._open_channel)
        self._errors = RateLimiter(10.0)
        self._errors_lock = fork_safe_lock()
        self._offloaded = itertools.count()
        self._dropped = itertools.count()
        self._direct = itertools.count()
        self._failed = itertools.count()

    def __call__(self, logger_: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Hand the event to the loop and end the caller's chain (raises ``DropEvent``)."""
        item = (logger_, method_name, event_dict)
        try:
            channel = self._live_channel()
            if channel is None:
                self._in_place(item)
            elif channel.put(item, timeout=0 if _offloading.get() else None):
                next(self._offloaded)
            else:
                next(self._dropped)
        except (ChannelClosedError, LoopNotRunningError):
            # The loop stopped between the look-up and the put: finish the work here.
            self._in_place(item)
        except Exception as exc:  # noqa: BLE001 - e.g. ChannelFullError: counted, never raised
            next(self._dropped)
            self._report("offload.put_failed", exc)
        raise structlog.DropEvent

    def stats(self) -> OffloadStats:
        """How many events were offloaded, dropped, done in place, or lost to a failure."""
        channel = self._binding.value
        return OffloadStats(
            offloaded=peek(self._offloaded),
            dropped=peek(self._dropped),
            written_directly=peek(self._direct),
            failed=peek(self._failed),
            channel=None if channel is None else channel.stats(),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event offloaded so far went through the processors and the sink.

        Returns False if ``timeout`` expired first.

        Raises:
            WouldDeadlockError: called on the loop thread (the sink runs there).
        """
        channel = self._binding.value
        if channel is None:
            return True
        try:
            return channel.flush(timeout)
        except (ChannelClosedError, LoopNotRunningError):
            return True

    def __repr__(self) -> str:
        return f"<loopthread.structlog.offload {self._options['name']!r} sink={self._sink!r}>"

    # ------------------------------------------------------------------ binding

    def _live_channel(self) -> Channel[_Item] | None:
        return self._binding.get()

    def _open_channel(self, lt: LoopThread) -> Channel[_Item]:
        return lt.channel(self._handle_batch, **self._options)

    # ------------------------------------------------------------------ the work

    def _run_processors(self, item: _Item) -> Any:
        logger_, method_name, value = item
        try:
            for processor in self._processors:
                value = processor(logger_, method_name, value)
        except structlog.DropEvent:
            return None
        except Exception as exc:  # noqa: BLE001 - a failing processor costs one event, not the loop
            next(self._failed)
            self._report("offload.processor_failed", exc)
            return None
        return value

    async def _handle_batch(self, batch: list[_Item]) -> None:
        token = _offloading.set(True)
        try:
            rendered = [r for r in map(self._run_processors, batch) if r is not None]
            if not rendered:
                return
            if self._sink_is_async:
                try:
                    await self._sink(rendered)
                except Exception as exc:  # noqa: BLE001 - isolated, counted, logged
                    for _ in rendered:
                        next(self._failed)
                    self._report("offload.sink_failed", exc)
                return
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()  # carries _offloading into the executor
            try:
                await loop.run_in_executor(None, context.run, self._sink_each, rendered)
            except RuntimeError:  # the executor refuses work at interpreter exit: write here
                self._sink_each(rendered)
        finally:
            _offloading.reset(token)

    def _sink_each(self, rendered: list[Any]) -> None:
        sink = self._sink
        for value in rendered:
            try:
                sink(value)
            except Exception as exc:  # noqa: BLE001 - one bad event must not cost the batch
                next(self._failed)
                self._report("offload.sink_failed", exc)

    def _in_place(self, item: _Item) -> None:
        # No loop (interpreter exit, a stopped loop): process and write in the caller's
        # thread, unbatched, rather than lose the event.
        next(self._direct)
        token = _offloading.set(True)
        try:
            rendered = self._run_processors(item)
            if rendered is None:
                return
            if not self._sink_is_async:
                self._sink_each([rendered])
                return
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                # This thread runs another event loop: it cannot be blocked to run the sink.
                next(self._failed)
                self._report("offload.sink_failed", RuntimeError("no loop to run the sink on"))
                return
            try:
                asyncio.run(self._sink([rendered]))
            except Exception as exc:  # noqa: BLE001 - isolated, counted, logged
                next(self._failed)
                self._report("offload.sink_failed", exc)
        finally:
            _offloading.reset(token)

    def _report(self, event: str, exc: BaseException) -> None:
        with self._errors_lock:  # written from the loop, the executor and callers
            suppressed = self._errors.allow(event)
        if suppressed is None:
            return
        try:
            logger.warning(
                event, offload=self._options["name"], error=describe(exc), suppressed=suppressed
            )
        except Exception:  # noqa: BLE001 - a broken log setup must not break the offload
            pass
