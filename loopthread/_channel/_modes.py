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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
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
    "running_in_executor_for",
    "snapshots",
]

CONTEXT_MODES: tuple[str, ...] = ("empty", "producer")
RUN_IN: tuple[str, ...] = ("loop", "executor")


def snapshots() -> Callable[[], contextvars.Context]:
    """What ``put`` stores beside an item with ``context="producer"``: a new function per
    channel, returning the caller's context (:func:`call_context`).

    While the variables do not change, consecutive items share one snapshot, as the
    LoopHandler's records do: a Context is a GC-tracked object, and with one per item the
    collector's work on a deep queue and the consumer's comparisons doubled the cost of an
    item end to end (0.53 -> 1.03 µs, 1.5 µs with 4 producers; the reuse costs the caller
    ~40 ns). One slot, not one per thread: equal contexts hold the same variables whichever
    thread took them. Per channel, so one snapshot is never entered by two consumers at once
    (a Context is entered by one thread at a time).
    """
    slot: list[contextvars.Context | None] = [None]
    copy = contextvars.copy_context
    modules = sys.modules

    def take() -> contextvars.Context:
        # call_context(), inline while sniffio is not imported (one call less per item).
        ctx = copy() if "sniffio" not in modules else call_context()
        last = slot[0]
        if last is not None and ctx == last:  # unchanged: an identity check of the mapping
            return last
        slot[0] = ctx
        return ctx

    return take


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
            return _in_executor(channel, _runs_in_worker(handler), None)
        return _in_executor(channel, handler, contextvars.Context())
    if context == "producer":
        return _runs_on_loop(channel, handler, is_async=is_async)
    return handler


def _runs_in_worker(handler: Handler) -> Callable[[list[Any]], None]:
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
            del batch[:size]  # what stop() finds deleted was finished (see Consumer)
        if first is not None:
            raise PartialFailure(failed, first)

    return call_per_run


def _runs_on_loop(channel: ChannelBase[Any], handler: Handler, *, is_async: bool) -> Handler:
    """Each run's call in its context, with ``ctx.run``: a call that returns nothing to await
    costs no Task. Only a run whose call returned an awaitable gets a Task, created with the
    run's context (a coroutine runs in the context of the Task that steps it); the rest of
    the batch then continues in :func:`_finish_runs`. A plain function that returns an
    awaitable only sometimes (the event bus's dispatch) pays for a Task only then."""

    def call_per_run(batch: list[Any]) -> Awaitable[None] | None:
        runs = list(_runs(batch))
        failed = 0
        first: BaseException | None = None
        for index, (ctx, items) in enumerate(runs):
            try:
                result = ctx.run(handler, items)
            except BaseException as exc:  # noqa: BLE001 - one run's fault is its own
                failed += len(items)
                first = first if first is not None else exc
                continue
            if _is_awaitable(result):
                return _finish_runs(
                    channel,
                    handler,
                    batch,
                    runs=runs,
                    at=index,
                    pending=result,
                    failures=(failed, first),
                )
        if first is not None:
            raise PartialFailure(failed, first)
        return None

    if not is_async:
        return call_per_run

    async def call_async(batch: list[Any]) -> None:
        pending = call_per_run(batch)
        if pending is not None:
            await pending

    return call_async


async def _finish_runs(
    channel: ChannelBase[Any],
    handler: Handler,
    batch: list[Any],
    *,
    runs: list[tuple[contextvars.Context, list[Any]]],
    at: int,
    pending: Awaitable[object] | None,
    failures: tuple[int, BaseException | None],
) -> None:
    """The runs of ``batch`` from ``runs[at]`` on, ``pending`` being what that run's call
    returned (``failures``: the items failed so far and the first fault). Stopped part way,
    the runs before the current one (and what its handler deleted from its list) count as
    handled, failures among them included."""
    failed, first = failures
    done = sum(len(items) for _, items in runs[:at])
    for ctx, items in runs[at:]:
        size = len(items)
        if pending is None:
            try:
                result = ctx.run(handler, items)
            except BaseException as exc:  # noqa: BLE001 - one run's fault is its own
                failed += size
                first = first if first is not None else exc
                done += size
                continue
            if not _is_awaitable(result):
                done += size
                continue
            pending = result
        assert pending is not None
        task = _task(channel, _returning_fault(pending), ctx)
        pending = None
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


async def _returning_fault(awaitable: Awaitable[object]) -> BaseException | None:
    # The fault is returned, not raised: a Task that raises KeyboardInterrupt or SystemExit
    # would take the loop down with it.
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - returned to the consumer
        return exc
    return None


def _task(
    channel: ChannelBase[Any],
    coro: Coroutine[Any, Any, BaseException | None],
    ctx: contextvars.Context,
) -> asyncio.Task[BaseException | None]:
    if sys.version_info >= (3, 12):
        # Eager: a run that does not suspend finishes here, without a loop iteration.
        return asyncio.Task(
            coro, loop=channel._loop, name=channel._task_name, context=ctx, eager_start=True
        )
    return channel._loop.create_task(coro, name=channel._task_name, context=ctx)


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
