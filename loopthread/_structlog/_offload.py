"""The ``offload`` processor: the caller's chain ends with a put; the rest runs on the loop.

Design notes (why it is built this way):

* The caller pays for a ``put`` into a channel plus what belongs to it (``_caller``: a snapshot
  of the event, its exception, its context, the processors that read its clock, stack or
  thread); the other processors given to ``offload`` and the sink run on the loop thread (a
  sync sink in its executor), each event's in the caller's contextvars. With no loop running
  (after ``stop()``, at interpreter exit) the work is done in the caller's thread.
* Counters written from several threads are ``itertools.count`` objects (``next()`` is one
  atomic C call), as in the channel, so the hot path takes no lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from loopthread._bind import Binding
from loopthread._exceptions import ChannelClosedError, LoopNotRunningError
from loopthread._log import RateLimiter, logger
from loopthread._process import fork_safe_lock
from loopthread._structlog._caller import calling_stack, resolve_exc_info, snapshot, split
from loopthread._structlog._enrich import peek
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._channel import Channel, ChannelStats
    from loopthread._loopthread import LoopThread

__all__ = ["OffloadProcessor", "OffloadStats", "Processor"]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]
# (logger, method name, event dict, the caller's context)
_Item = tuple[Any, str, EventDict, contextvars.Context]

# Set while an offload processor works (its processors on the loop, its sync sink in the
# executor). An event logged from there must not wait for room in the channel: the consumer
# that makes room is what is waiting for it.
_offloading: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "loopthread_structlog_offloading", default=False
)


@dataclass(frozen=True, slots=True)
class OffloadStats:
    """Counts of an ``offload`` processor.

    Attributes:
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
        self._in_caller, self._processors = split(processors)
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
        context = contextvars.copy_context()  # before the calling stack is set below
        event = snapshot(event_dict)
        if self._in_caller:
            moved = self._run_in_caller(logger_, method_name, event, sys._getframe(1))
            if moved is None:
                raise structlog.DropEvent
            event = moved
        resolve_exc_info(event)
        item = (logger_, method_name, event, context)
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

    def _run_in_caller(
        self, logger_: Any, method_name: str, event: Any, frame: FrameType
    ) -> dict[str, Any] | None:
        # The processors that read the caller's clock, stack or thread, with structlog's
        # calling-stack hook on the frame that called this processor (structlog's own frames
        # above it are skipped as usual): the stack and callsite found are the application's.
        token = calling_stack.set(frame) if calling_stack is not None else None
        try:
            for processor in self._in_caller:
                event = processor(logger_, method_name, event)
        except structlog.DropEvent:
            return None
        except Exception as exc:  # noqa: BLE001 - a failing processor costs one event
            next(self._failed)
            self._report("offload.processor_failed", exc)
            return None
        finally:
            if token is not None:
                calling_stack.reset(token)  # type: ignore[union-attr]
        return event  # type: ignore[no-any-return]

    def _process(self, item: _Item) -> tuple[Any, contextvars.Context] | None:
        """On the loop: the processors, in the caller's context; (result, context) or None."""
        context = item[3]
        value = context.run(self._run_processors, item)
        return None if value is None else (value, context)

    def _run_processors(self, item: _Item) -> Any:
        logger_, method_name, value, _ = item
        _offloading.set(True)  # in the event's own context: its processors and its sink
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
            rendered = [r for r in map(self._process, batch) if r is not None]
            if not rendered:
                return
            if self._sink_is_async:
                try:
                    await self._sink([value for value, _ in rendered])
                except Exception as exc:  # noqa: BLE001 - isolated, counted, logged
                    for _ in rendered:
                        next(self._failed)
                    self._report("offload.sink_failed", exc)
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self._sink_each, rendered)
            except RuntimeError:  # the executor refuses work at interpreter exit: write here
                self._sink_each(rendered)
        finally:
            _offloading.reset(token)

    def _sink_each(self, rendered: list[tuple[Any, contextvars.Context]]) -> None:
        sink = self._sink
        for value, context in rendered:
            try:
                context.run(sink, value)  # the caller's context, with _offloading set
            except Exception as exc:  # noqa: BLE001 - one bad event must not cost the batch
                next(self._failed)
                self._report("offload.sink_failed", exc)

    def _in_place(self, item: _Item) -> None:
        # No loop (interpreter exit, a stopped loop): process and write in the caller's
        # thread, unbatched, rather than lose the event.
        next(self._direct)
        token = _offloading.set(True)
        try:
            processed = self._process(item)
            if processed is None:
                return
            if not self._sink_is_async:
                self._sink_each([processed])
                return
            rendered = processed[0]
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
