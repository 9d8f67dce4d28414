"""Running enrichers eagerly: each one's first step in the caller's task, a Task only if needed.

Design notes (why it is built this way):

* Enrichers start eagerly: the chain runs each one's first step itself, in the chain's task, and
  most quick enrichers (a cache hit) finish right there, with no Task, no timer and no loop
  iteration. Only an enricher that awaits gets its deadline armed (counted from its start; one
  timer serves all the calls of an enricher in flight, see ``_deadlines``). In parallel mode,
  at the first enricher that awaits, every enricher after it gets its own Task and the chain's
  task carries on with that one, so their waits overlap exactly as with ``asyncio.gather``. A
  coroutine never moves to another task once started, so ``asyncio.timeout`` or anyio cancel
  scopes inside an enricher stay valid.
* A call's outcome is recorded on the loop thread, with no lock (``_outcome``): the slot's
  counters, its circuit breaker, a rate-limited log; a fault never propagates to the event.
* What a call in flight keeps alive is kept small (one Task per record of a LoopHandler batch
  waits at once): no closure cells or loop iterators held across an await, the call is its
  own deadline entry, and the enricher is stepped by ``Runner._drive`` itself.
* ``max_concurrency``: a call of an enricher whose places are all taken waits (:class:`Queued`)
  for one, first come first served; a call that ends hands its place straight to the next in
  line. The wait is counted in ``queue_time``, apart from the enricher's own ``time``, and the
  enricher's timeout and its circuit breaker's admission start only once it has a place: a
  burst against a pool of 4 is 4 calls at a time, each with its full budget, and once the
  circuit opens the calls still waiting are skipped at once.

:class:`Runner` holds what that needs of its chain (its slots, its outcome recorder);
:class:`Suspended`, :func:`_steps` and :meth:`Runner._drive` are the stepping itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import time
import types
from collections.abc import Coroutine, Generator
from types import CoroutineType
from typing import Any

from loopthread._enrich._breaker import SKIP, TRIAL
from loopthread._enrich._deadlines import Call, Deadlines
from loopthread._enrich._outcome import Outcomes
from loopthread._enrich._slots import (
    EnricherCallable,
    EnricherResult,
    Slot,
    cancelled_from_outside,
)

__all__ = ["Pending", "Queued", "Runner", "Suspended"]


class Suspended(Call):
    """An enricher whose first step awaited something: the rest runs under its deadline (it is
    its own :class:`Call` there: one object less per call in flight)."""

    __slots__ = ("began", "slot", "started", "steps", "trial", "yielded")

    def __init__(
        self,
        slot: Slot,
        steps: Generator[Any, Any, Any] | Coroutine[Any, Any, Any] | None,
        yielded: object,
        trial: bool,
        started: float,
        *,
        began: int,
    ) -> None:
        self.slot = slot
        self.steps = steps
        self.yielded = yielded
        self.trial = trial
        self.started = started
        self.began = began  # the breaker's epoch when the call began


class Queued:
    """A call of an enricher whose ``max_concurrency`` places are all taken: not begun yet."""

    __slots__ = ("event", "slot")

    def __init__(self, slot: Slot, event: dict[str, Any]) -> None:
        self.slot = slot
        self.event = event


Pending = Suspended | Queued


class Runner:
    """Calls a chain's enrichers and records each call's outcome (loop thread only)."""

    __slots__ = ("_record", "_slots")

    def __init__(self, chain: str, slots: list[Slot]) -> None:
        self._slots = slots
        self._record = Outcomes(chain).record

    async def parallel(
        self, base: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> list[EnricherResult]:
        """Every enricher on ``base``, concurrently; their results in the chain's order."""
        # Start the enrichers one by one in this task; those that finish without suspending
        # (a cache hit) need no task at all. At the first one that suspends, every enricher
        # after it gets its own task, and this task carries on with the suspended one, so
        # all I/O overlaps (as with gather) and no coroutine ever moves to another task.
        # (Written to keep little alive while it waits, on every call in flight: no closure
        # cells, no loop iterator across the await.)
        slots = self._slots
        results: list[EnricherResult] | None = None  # (made when needed: not kept alive empty)
        count = len(slots)
        index = 0
        while index < count:
            slot = slots[index]
            index += 1
            started = self.start(slot, base)
            if not isinstance(started, Pending):
                if results is None:
                    results = []
                results.append(started)
                continue
            if index == count:  # the last one: no other to start
                if type(started) is Suspended and slot.limit is None:
                    fields = await self._drive(started, loop)  # (finish() without a frame)
                else:
                    fields = await self.finish(started, loop)
                if results is None:
                    return [fields]
                results.append(fields)
                return results
            tasks = self._start_rest(index, base, loop)
            if results is None:
                results = []
            try:
                results.append(await self.finish(started, loop))
                for task in tasks:
                    results.append(await task)
            finally:
                for task in tasks:  # only when this task was cancelled (stop, caller timeout)
                    task.cancel()
            break
        return [] if results is None else results

    def _start_rest(
        self, index: int, base: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> list[asyncio.Task[EnricherResult]]:
        return [loop.create_task(self._call(s, base, loop)) for s in self._slots[index:]]

    async def _call(
        self, slot: Slot, event: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> EnricherResult:
        started = self.start(slot, event)
        if isinstance(started, Pending):
            return await self.finish(started, loop)
        return started

    def start(self, slot: Slot, event: dict[str, Any]) -> EnricherResult | Pending:
        """Admit ``slot`` and run its first step now, in the calling task.

        Returns its fields (None when skipped or faulted), a :class:`Suspended` when the
        enricher awaits something (its deadline is only armed then, which keeps a timer off
        the path of enrichers that answer at once), or a :class:`Queued` when all its places
        are taken.
        """
        limit = slot.limit
        if limit is None:
            return self._begin(slot, event)
        if slot.active >= limit:
            slot.queued += 1
            return Queued(slot, event)
        slot.active += 1
        started = self._begin(slot, event)
        if not isinstance(started, Suspended):
            self._release(slot)
        return started

    def _begin(self, slot: Slot, event: dict[str, Any]) -> EnricherResult | Suspended:
        trial = False
        if not slot.breaker.quiet or slot.disabled:
            admission = SKIP if slot.disabled else slot.breaker.admit()
            if admission is SKIP:
                slot.skipped += 1
                return None
            trial = admission is TRIAL
        slot.calls += 1
        began = slot.breaker.epoch
        started = time.perf_counter()
        steps: Generator[Any, Any, Any] | Coroutine[Any, Any, Any]
        try:
            if slot.is_async:
                awaitable = slot.fn(event)
                steps = awaitable if type(awaitable) is CoroutineType else _steps(awaitable)
            else:
                steps = _in_executor(slot.fn, event)
            yielded = steps.send(None)
        except StopIteration as stop:
            slot.time += time.perf_counter() - started
            return self._record(slot, stop.value, None, trial, began, expired=False)
        except BaseException as exc:  # noqa: BLE001 - enricher faults are isolated
            slot.time += time.perf_counter() - started
            return self._record(slot, None, exc, trial, began, expired=False)
        return Suspended(slot, steps, yielded, trial, started, began=began)

    async def finish(self, pending: Pending, loop: asyncio.AbstractEventLoop) -> EnricherResult:
        """Drive a suspended enricher to its end under its deadline (a queued one once it got
        a place)."""
        if type(pending) is Queued:
            started = await self._queue(pending, loop)
            if not isinstance(started, Suspended):
                return started
            pending = started
        assert isinstance(pending, Suspended)
        if pending.slot.limit is None:
            return await self._drive(pending, loop)
        try:
            return await self._drive(pending, loop)
        finally:
            self._release(pending.slot)

    async def _queue(
        self, queued: Queued, loop: asyncio.AbstractEventLoop
    ) -> EnricherResult | Suspended:
        """Wait for a place of ``queued.slot``, then begin the call (holding the place)."""
        slot = queued.slot
        waiter: asyncio.Future[None] = loop.create_future()
        slot.waiters.append(waiter)
        waited = time.perf_counter()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(slot)  # handed a place just as this was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    slot.waiters.remove(waiter)
            raise
        finally:
            slot.queue_time += time.perf_counter() - waited
        try:
            started = self._begin(slot, queued.event)
        except BaseException:
            self._release(slot)
            raise
        if not isinstance(started, Suspended):
            self._release(slot)
        return started

    @staticmethod
    def _release(slot: Slot) -> None:
        """A call of ``slot`` ended: its place goes to the first call waiting, if any."""
        waiters = slot.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (a waiter cancelled with its task is done)
                waiter.set_result(None)
                return
        slot.active -= 1

    @types.coroutine
    def _drive(
        self, pending: Suspended, loop: asyncio.AbstractEventLoop
    ) -> Generator[Any, Any, EnricherResult]:
        """Carry on the enricher whose first step already ran, under its deadline; its outcome.

        A generator-based coroutine that steps the enricher itself, as ``await`` would (PEP
        380): what it yields goes to the running Task unchanged, and what the Task sends or
        throws in (results, CancelledError) goes back to it. (One object and one frame per
        step less than an ``async def`` awaiting a stepping generator.)
        """
        slot = pending.slot
        armed = False
        if slot.timeout is not None:
            task = asyncio.current_task()
            if task is None:  # (as asyncio.timeout: a deadline cancels the task it runs in)
                if pending.steps is not None:
                    pending.steps.close()
                fault = RuntimeError("an enricher with a timeout must be awaited inside a task")
                return self._record(slot, None, fault, pending.trial, pending.began, expired=False)
            deadlines = slot.deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = slot.deadlines = Deadlines(loop)
            # Counted from the call's start, its first step included.
            deadlines.arm(
                pending, task, loop.time() + slot.timeout - (time.perf_counter() - pending.started)
            )
            armed = True
        steps = pending.steps
        yielded = pending.yielded
        assert steps is not None  # (driven once)
        pending.steps = pending.yielded = None  # (a call behind a slow one keeps nothing alive)
        result: object = None
        error: BaseException | None = None
        expired: bool | None = False
        closed = False  # this coroutine is being closed (not: the enricher raised GeneratorExit)
        try:
            while True:
                try:
                    sent = yield yielded
                except GeneratorExit:
                    closed = True
                    steps.close()
                    raise
                except BaseException as exc:  # noqa: BLE001 - delivered to it, as await does
                    try:
                        yielded = steps.throw(exc)
                    except StopIteration as stop:
                        result = stop.value
                        break
                else:
                    try:
                        yielded = steps.send(sent)
                    except StopIteration as stop:
                        result = stop.value
                        break
        except asyncio.CancelledError as exc:
            if armed:
                expired, armed = pending.settle(), False
            if expired is None or (not expired and cancelled_from_outside()):
                # The caller gave up (enrich_sync's timeout, stop()): not the enricher's fault.
                if pending.trial:
                    slot.breaker.release()
                slot.time += time.perf_counter() - pending.started
                raise
            if not expired:
                # The enricher raised CancelledError of its own accord (nobody cancelled this
                # task): a fault like any other, not a reason to fail the whole event.
                error = exc
        except BaseException as exc:  # enricher faults are isolated (re-raised: our own close)
            if closed:
                raise
            error = exc
        finally:
            if armed:
                # An enricher that swallowed the timer's cancellation and returned (or raised
                # something else) timed out all the same.
                expired = pending.settle() is not False
        slot.time += time.perf_counter() - pending.started
        return self._record(
            slot, result, error, pending.trial, pending.began, expired=bool(expired)
        )


async def _in_executor(fn: EnricherCallable, event: dict[str, Any]) -> EnricherResult:
    # run_in_executor does not carry contextvars over: run the function in a copy.
    ctx = contextvars.copy_context()
    result = await asyncio.get_running_loop().run_in_executor(None, ctx.run, fn, event)
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        result = await result
    return result


def _steps(awaitable: object) -> Generator[Any, Any, Any]:
    """The iterator that ``await awaitable`` would drive (any awaitable, not only coroutines).

    Raises:
        TypeError: ``awaitable`` is not awaitable (an "async" enricher returned something else).
    """
    try:
        return awaitable.__await__()  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        raise TypeError(
            f"the enricher returned {type(awaitable).__name__}, not an awaitable; an enricher "
            "marked async must return a coroutine (define it with async def)."
        ) from None
