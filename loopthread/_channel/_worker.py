"""The executor side of ``run_in="executor"``: the job a worker runs for one handler call, how
it is given up on, and what code in the worker can ask about the call it is part of.

The consumer stays sequential, so there is at most one call in flight, batches keep their
order, and ``flush()``/``close()``/``stop()`` wait for the executor call like for any other.
User code cancelling every task does not give up on it: the consumer waits for the call to
finish before the next one.

A call still running at stop()'s (or close()'s) deadline is given up on: the worker is told to
stop (:class:`Job`), given a moment (half the channel's grace) to finish the item it is in, and
what was not finished counts as unhandled. Whatever it finishes before that count is handled;
nothing it does after the count is taken runs a further item of the adapted handlers here
(the runs of a ``context="producer"`` handler, the event bus's lanes, which finish event by
event: :func:`current_job`), so an item is never both handled and counted unhandled, but for
one still running when the moment is over. A plain ``context="empty"`` handler is one call:
its items, but those it deleted from ``batch``, count as unhandled unless it returned in that
moment. The executor's bounded join at stop deals with a worker that never returns.

A wait for a channel from inside its own executor handler would wait for itself; so would a
wait for a channel whose handler feeds the one whose handler is running (``drain_after``:
that handler may be waiting for room in ours). :func:`in_handler_fed_by` tells ``put``
(admitted past ``maxsize``) and ``close`` (begins closing and returns) so.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from loopthread._channel._runs import PartialFailure, awaitable_refused, is_awaitable, runs

if TYPE_CHECKING:
    from loopthread._channel._base import ChannelBase

__all__ = [
    "Job",
    "current_job",
    "in_executor",
    "in_handler_fed_by",
    "run_as_handler_of",
    "running_in_executor_for",
    "runs_in_worker",
]

Handler = Callable[[list[Any]], object]
T = TypeVar("T")

# .channel: the channel whose handler this executor worker runs; .job: the call's Job.
_worker = threading.local()


class Job:
    """One executor call of a channel's handler, shared by its worker and the consumer.

    The worker counts in ``done`` the items of ``batch`` it finished, from the front (only it
    writes it), and reads ``stop``: the consumer gave up on the call, take no further item
    (then it sets ``halted``). The consumer, having given up, counts once (``give_up``): the
    first ``done`` items were handled, the rest were not. No lock: one writer per field, and
    an item the worker finishes in the instant between the count and its next look at
    ``stop`` counts as unhandled, as it would with a lock (the call was running at the count).
    """

    __slots__ = ("batch", "done", "halted", "stop")

    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch
        self.done = 0
        self.stop = False
        self.halted = False

    async def give_up(self, future: asyncio.Future[None], grace: float) -> None:
        """On the loop: stop the worker after its current item, wait ``grace`` at most for
        it, then take what it finished out of the batch (the consumer counts the rest as
        unhandled). Never raises CancelledError: stop() cancels the consumer again when its
        own wait for it is cut, and this wait is bounded anyway."""
        self.stop = True
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while not future.done() and (left := until - loop.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future}, timeout=left)
        if (
            future.done()
            and not future.cancelled()
            and future.exception() is None
            and not self.halted
        ):
            self.batch.clear()  # the call ran to its end meanwhile: all of it went through
        else:
            del self.batch[: self.done]


def running_in_executor_for(channel: object) -> bool:
    """True inside ``channel``'s own handler call in an executor worker (a flush there would
    wait for itself)."""
    return getattr(_worker, "channel", None) is channel


def in_handler_fed_by(channel: object) -> bool:
    """True in an executor worker running the handler of ``channel``, or of a channel fed by
    it (``drain_after``, followed upstream): ``channel``'s handler may be waiting for that
    very call, so waiting for ``channel`` here may never end."""
    current = getattr(_worker, "channel", None)
    while current is not None:
        if current is channel:
            return True
        current = current._drain_after  # fixed at creation, to an older channel: no cycle
    return False


def run_as_handler_of(channel: ChannelBase[Any], fn: Callable[[T], None], arg: T) -> None:
    """``fn(arg)`` in this (executor) thread, as part of ``channel``'s handler call: the
    channel's in-handler checks (flush, put, close) see it so."""
    previous = getattr(_worker, "channel", None)
    _worker.channel = channel
    try:
        fn(arg)
    finally:
        _worker.channel = previous


def current_job() -> Job | None:
    """In an executor worker, the :class:`Job` of the channel handler call it runs (None
    elsewhere): for a handler that works item by item (the event bus's lanes) to count each
    item done (``job.done += 1``) and stop when ``job.stop`` (setting ``job.halted``)."""
    return getattr(_worker, "job", None)


def runs_in_worker(handler: Handler) -> Callable[[list[Any]], None]:
    """A ``context="producer"`` handler in the executor: one call per run, in a fresh copy of
    the run's context, each run deleted from the batch once done (see :class:`Job`)."""

    def call_per_run(batch: list[Any]) -> None:
        job: Job | None = getattr(_worker, "job", None)
        failed = 0
        first: BaseException | None = None
        for ctx, items in list(runs(batch)):
            size = len(items)
            before = 0 if job is None else job.done
            try:
                result = ctx.copy().run(handler, items)  # a copy: the snapshot is shared
                if is_awaitable(result):
                    raise awaitable_refused(result)
            except BaseException as exc:  # noqa: BLE001 - one run's fault is its own
                failed += size
                first = first if first is not None else exc
            if job is None:
                continue
            if job.halted:
                return  # it stopped part way when told to: what is left is counted unhandled
            job.done = before + size  # the run is done (an item-by-item handler counted it)
            if job.stop:
                job.halted = True
                return  # given up on: what is left is counted unhandled
        if first is not None:
            raise PartialFailure(failed, first)

    return call_per_run


def in_executor(
    channel: ChannelBase[Any], fn: Handler, ctx: contextvars.Context | None
) -> Callable[[list[Any]], Coroutine[Any, Any, None]]:
    """The consumer's callable for a handler run in the executor (``ctx``: the context to
    call it in; None: ``fn`` chooses, as :func:`runs_in_worker` does)."""

    # The handler's own context (context="empty"), never the consumer task's: a cancelled
    # consumer task steps in its context on the loop while the worker may still be in ours.
    def work(job: Job) -> None:
        previous = getattr(_worker, "channel", None), getattr(_worker, "job", None)
        _worker.channel, _worker.job = channel, job  # a job run inline by the loop thread too
        try:
            result = fn(job.batch) if ctx is None else ctx.run(fn, job.batch)
            if is_awaitable(result):
                raise awaitable_refused(result)
        finally:
            _worker.channel, _worker.job = previous

    async def call_in_executor(batch: list[Any]) -> None:
        job = Job(batch)
        future = channel._loop.run_in_executor(None, work, job)
        while True:
            try:
                await asyncio.shield(future)
                return
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if channel._stop_requested or me is None:
                    await job.give_up(future, channel._grace / 2)
                    raise
                # User code cancelling every task: the call goes on in its worker; wait for it
                # (the next batch must not overtake it).
                me.uncancel()

    return call_in_executor
