"""The shutdown driver: every phase of ``stop()`` (and of a loop's death), in one place.

It runs on the loop thread after ``run_forever()`` returned, as plain code that drives the
loop with ``run_until_complete`` (as ``asyncio.Runner.close()`` does). It waits on bare
Futures, not Tasks, so user code that cancels every task (``for t in asyncio.all_tasks():
t.cancel()``, a common cleanup idiom) cannot cancel the shutdown, and user code that stops the
loop (``loop.stop()``) only ends one wait, which is resumed.

The phases, each bounded (``deadline`` is ``stop()``'s; the budget is split so that a hanging
handler or call cannot eat it all):

1. finish: start everything accepted before ``stop()``; let calls in flight finish and
   ``"drain"`` components (channels) drain until the soft deadline;
2. cancel the calls and drains still running; wait up to the cancel deadline;
3. close: ``"close"`` then ``"close_last"`` components (enricher shutdowns, then resources),
   newest first, each with a floor of :data:`CLOSE_FLOOR`, while their own background tasks
   still run;
4. cancel every task that is left and give it ``cancel_grace`` (bounded by the deadline);
5. shut down async generators, then the executor (its workers joined with a bound); every
   component's ``on_closed`` counts what it could not handle.

The caller then closes the loop. A phase whose wait ended at its deadline with work left sets
``deadline_hit``; nothing else does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from loopthread._core._component import Component
from loopthread._util import INF, remaining

__all__ = ["CLOSE_FLOOR", "STOP_CUT", "Outcome", "drive_shutdown", "is_stop_cut", "wait_on_loop"]

#: The least each close (and each final wait) gets during stop(), even past the deadline.
CLOSE_FLOOR = 0.05

#: The message of the cancellations stop() itself makes when a phase runs out of time, so that
#: a component can tell them from user code cancelling every task.
STOP_CUT = "loopthread: stop() cut this phase at its deadline"


def is_stop_cut(exc: BaseException) -> bool:
    """True for a CancelledError that stop() raised at a phase's deadline."""
    return isinstance(exc, asyncio.CancelledError) and STOP_CUT in exc.args


class Outcome:
    """What the phases did, for the ShutdownReport."""

    __slots__ = ("abandoned", "cancelled", "completed", "deadline_hit", "interrupts", "unhandled")

    def __init__(self) -> None:
        self.completed = 0
        self.cancelled = 0
        self.abandoned = 0
        self.unhandled = 0
        self.deadline_hit = False
        self.interrupts: list[BaseException] = []


def wait_on_loop(
    loop: asyncio.AbstractEventLoop,
    futures: Iterable[asyncio.Future[Any]],
    until: float,
    interrupts: list[BaseException] | None = None,
) -> bool:
    """Run ``loop`` until every future is done or ``until`` (monotonic) passed; True if done.

    Called on the loop thread while the loop is not running. Exceptions that escape the loop
    meanwhile (a callback raising SystemExit, user code calling ``loop.stop()``) are recorded
    in ``interrupts`` and the wait goes on.
    """
    pending = [f for f in futures if not f.done()]
    if not pending:
        return True
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_done(_: object) -> None:
        nonlocal left
        left -= 1
        if left <= 0 and not waiter.done():
            waiter.set_result(None)

    def expire() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for future in pending:
        future.add_done_callback(one_done)
    timer = loop.call_later(remaining(until), expire) if until != INF else None
    try:
        while not waiter.done():
            try:
                loop.run_until_complete(waiter)
            except BaseException as exc:  # noqa: BLE001 - shutdown goes on whatever user code does
                if interrupts is not None:
                    interrupts.append(exc)
                del exc
    finally:
        if timer is not None:
            timer.cancel()
        for future in pending:
            future.remove_done_callback(one_done)
    return all(f.done() for f in pending)


async def _guarded(awaitable: Awaitable[Any]) -> None:
    # A component's fault is its own: it must not look like a failed wait.
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException:  # noqa: BLE001 - components log their own faults
        pass


def drive_shutdown(
    loop: asyncio.AbstractEventLoop,
    *,
    deadline: float,
    grace: float,
    components: list[Component],
    start_inbox: Any,
    pending_calls: Any,
    cancel_call: Any,
    finish_calls: bool,
) -> Outcome:
    """Run phases 1-4 and the async-generator part of 5 (see the module docstring).

    ``start_inbox()`` starts every accepted call; ``pending_calls()`` lists the calls not yet
    finished; ``cancel_call(call)`` cancels one on the loop. With ``finish_calls=False`` (the
    loop died) no call is waited for: their callers were failed already.
    """
    out = Outcome()
    started = time.monotonic()
    if deadline == INF:  # stop(None): calls and drains get as long as they take
        cancel_deadline = soft_deadline = INF
    else:
        budget = max(0.0, deadline - started)
        cancel_deadline = deadline - min(budget / 4, 1.0)
        soft_deadline = cancel_deadline - min((cancel_deadline - started) / 2, grace)

    def wait(futures: Iterable[asyncio.Future[Any]], until: float) -> bool:
        return wait_on_loop(loop, futures, until, out.interrupts)

    def floor(until: float) -> float:
        return max(until, time.monotonic() + CLOSE_FLOOR)

    # 1. finish
    start_inbox()
    calls = list(pending_calls())
    call_tasks = [c.task for c in calls if c.task is not None]
    drains = [
        loop.create_task(_guarded(c.on_stop(soft_deadline)), name=f"loopthread-drain-{c.name}")
        for c in components
        if c.stop_phase == "drain"
    ]
    waited = (call_tasks if finish_calls else []) + drains
    if waited and not wait(waited, soft_deadline):
        out.deadline_hit = True
    out.completed = sum(1 for t in call_tasks if t.done()) if finish_calls else 0

    # 2. cancel calls and drains
    cut = [t for t in call_tasks if not t.done()]
    for call in list(pending_calls()):
        cancel_call(call)
    for task in drains:
        task.cancel(STOP_CUT)
    cut_drains = [t for t in drains if not t.done()]
    if (cut or cut_drains) and not wait(cut + cut_drains, floor(cancel_deadline)):
        out.deadline_hit = True

    # 3. close components, newest first, while their background tasks still run
    for phase in ("close", "close_last"):
        for component in reversed([c for c in components if c.stop_phase == phase]):
            task = loop.create_task(
                _guarded(component.on_stop(deadline)), name=f"loopthread-close-{component.name}"
            )
            if not wait([task], floor(deadline)):
                out.deadline_hit = True
                task.cancel(STOP_CUT)
                wait([task], floor(0.0))

    # 4. cancel what is left
    leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftovers:
        task.cancel()
    by_grace = time.monotonic() + grace
    if leftovers and not wait(leftovers, floor(min(deadline, by_grace))) and deadline <= by_grace:
        out.deadline_hit = True  # cut by the deadline, not by cancel_grace
    stopped = set(cut) | set(leftovers)
    out.cancelled = sum(1 for t in stopped if t.done())
    out.abandoned = sum(1 for t in stopped if not t.done())

    # 5. async generators (the executor and on_closed follow, in the caller)
    agens = loop.create_task(loop.shutdown_asyncgens(), name="loopthread-shutdown-asyncgens")
    if not wait([agens], floor(deadline)):
        out.abandoned += 1
        out.deadline_hit = True
        agens.cancel()
        wait([agens], floor(0.0))
    return out
