"""Where and in which context a channel's handler runs: ``context=`` and ``run_in=``.

The consumer (``_consumer``) calls one callable per batch and knows nothing of these options:
:func:`adapt` wraps the user's handler into that callable.

* ``context="empty"`` (the default): every handler call runs in one context of the channel's
  own, created empty (a batch belongs to many producers, so to none of them; never the
  creator's, which would hand one thread's request id to every batch).
* ``context="producer"``: ``put`` stores a copy of the producer's context beside each item
  (``contextvars.copy_context()``, without sniffio's marker, as calls do). The consumer's
  batch is cut into runs of consecutive items whose contexts hold the same variables (one
  producer thread whose variables did not change: one run), and the handler is called once
  per run, with that run's items, in that run's context. The handler keeps its signature
  (``handler(batch)``); a run that raises counts its own items as failed, the other runs go
  on (:class:`PartialFailure`). An async handler gets a Task per run (its context is the
  run's; eager on 3.12+).
* ``run_in="executor"``: a plain handler runs in the LoopThread's executor, never on the loop.
  The consumer stays sequential, so there is at most one call in flight, batches keep their
  order, and ``flush()``/``close()``/``stop()`` wait for the executor call like for any
  other. A call still running at stop()'s deadline is given up on (its items, but those the
  handler deleted from ``batch``, count as unhandled); the executor's bounded join at stop
  deals with a worker that never returns. User code cancelling every task does not give up
  on it: the consumer waits for the call to finish before the next one.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from loopthread._core._guards import call_context

if TYPE_CHECKING:
    from loopthread._channel._base import ChannelBase

__all__ = [
    "CONTEXT_MODES",
    "RUN_IN",
    "PartialFailure",
    "adapt",
    "capture",
    "running_in_executor_for",
]

CONTEXT_MODES: tuple[str, ...] = ("empty", "producer")
RUN_IN: tuple[str, ...] = ("loop", "executor")

#: What ``put`` stores beside an item with ``context="producer"``.
capture = call_context

Handler = Callable[[list[Any]], Awaitable[object] | None]

_worker = threading.local()  # .channel: the channel whose handler this executor worker runs


def running_in_executor_for(channel: object) -> bool:
    """True inside ``channel``'s own handler call in an executor worker (a flush there would
    wait for itself)."""
    return getattr(_worker, "channel", None) is channel


class PartialFailure(Exception):
    """Raised by an adapted handler when some of its runs failed: ``failed`` items of the
    batch failed (``error`` is the first run's exception), the others were handled."""

    def __init__(self, failed: int, error: BaseException) -> None:
        super().__init__(f"{failed} item(s) failed: {error!r}")
        self.failed = failed
        self.error = error


def _is_awaitable(result: object) -> bool:
    return result is not None and (type(result) is CoroutineType or hasattr(result, "__await__"))


def _runs(batch: list[Any]) -> Iterator[tuple[contextvars.Context, list[Any]]]:
    """Consecutive ``(item, context)`` pairs of ``batch`` grouped by equal contexts.

    ``==`` on two contexts of one thread whose variables did not change is an identity check
    of their (shared) mapping: O(1)."""
    it = iter(batch)
    item, ctx = next(it)
    items = [item]
    for item, other in it:
        if other is ctx or other == ctx:
            items.append(item)
        else:
            yield ctx, items
            ctx, items = other, [item]
    yield ctx, items


def _awaitable_refused(result: object) -> TypeError:
    close = getattr(result, "close", None)
    if callable(close):
        close()  # a coroutine never awaited: no RuntimeWarning
    return TypeError(
        "the channel's handler returned an awaitable where a plain function was expected "
        "(run_in='executor', or a context='producer' handler that does not look async): "
        "declare it `async def` and run it on the loop (run_in='loop')."
    )


def adapt(
    channel: ChannelBase[Any],
    handler: Handler,
    *,
    is_async: bool,
    context: str,
    run_in: str,
) -> Handler:
    """The callable the consumer calls with each batch (``handler`` itself by default)."""
    if run_in == "executor":
        if context == "producer":
            return _in_executor(channel, _sync_runs(handler, progress=True), None)
        return _in_executor(channel, handler, contextvars.Context())
    if context == "producer":
        return _async_runs(channel, handler) if is_async else _sync_runs(handler, progress=False)
    return handler


def _sync_runs(handler: Handler, *, progress: bool) -> Callable[[list[Any]], None]:
    def call_per_run(batch: list[Any]) -> None:
        failed = 0
        first: BaseException | None = None
        for ctx, items in list(_runs(batch)):
            size = len(items)
            try:
                result = ctx.run(handler, items)
                if _is_awaitable(result):
                    raise _awaitable_refused(result)
            except BaseException as exc:  # noqa: BLE001 - one run's fault is its own
                failed += size
                first = first if first is not None else exc
            if progress:  # in the executor: what stop() finds deleted was finished
                del batch[:size]
        if first is not None:
            raise PartialFailure(failed, first)

    return call_per_run


def _async_runs(channel: ChannelBase[Any], handler: Handler) -> Handler:
    async def call(items: list[Any]) -> BaseException | None:
        # The run's fault is returned, not raised: a Task that raises KeyboardInterrupt or
        # SystemExit would take the loop down with it.
        try:
            result = handler(items)
            if result is not None:
                await result
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - returned to the consumer
            return exc
        return None

    async def call_per_run(batch: list[Any]) -> None:
        loop = channel._loop
        failed = 0
        first: BaseException | None = None
        done = 0
        for ctx, items in list(_runs(batch)):
            size = len(items)
            if sys.version_info >= (3, 12):
                task = asyncio.Task(
                    call(items),
                    loop=loop,
                    name=channel._task_name,
                    context=ctx,
                    eager_start=True,
                )
            else:
                task = loop.create_task(call(items), name=channel._task_name, context=ctx)
            channel._handler_task = task
            try:
                error = await task
            except asyncio.CancelledError as exc:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    # The consumer is being stopped: the runs before this one, and the items
                    # this run's handler deleted from its list, were finished.
                    del batch[: done + size - len(items)]
                    raise
                error = exc  # the run cancelled itself: its failure
            finally:
                channel._handler_task = None
            if error is not None:
                failed += size
                first = first if first is not None else error
            done += size
        if first is not None:
            raise PartialFailure(failed, first)

    return call_per_run


def _in_executor(
    channel: ChannelBase[Any], fn: Handler, ctx: contextvars.Context | None
) -> Handler:
    # The handler's own context (context="empty"), never the consumer task's: a cancelled
    # consumer task steps in its context on the loop while the worker may still be in ours.
    def work(batch: list[Any]) -> None:
        _worker.channel = channel
        try:
            result = fn(batch) if ctx is None else ctx.run(fn, batch)
            if _is_awaitable(result):
                raise _awaitable_refused(result)
        finally:
            _worker.channel = None

    async def call_in_executor(batch: list[Any]) -> None:
        job = channel._loop.run_in_executor(None, work, batch)
        while True:
            try:
                await asyncio.shield(job)
                return
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if channel._stop_requested or me is None:
                    raise
                # User code cancelling every task: the call goes on in its worker; wait for it
                # (the next batch must not overtake it).
                me.uncancel()

    return call_in_executor
