"""Supported ways in for tests (ours and users'): no test needs a private attribute.

* :func:`reset_default` stops the process-wide default loop and forgets it, so the next
  ``loopthread.default()`` starts a fresh one;
* :func:`current_default` returns the default LoopThread as it is now, without creating one;
* :func:`components` lists what is attached to a LoopThread (channels, chains, resources);
* :func:`add_stop_hook` runs a coroutine function in a phase of ``stop()``;
* :func:`monitor` gives a LoopThread's lag monitor and watchdog;
* :func:`holding_default_locks` holds the locks that creating the default loop takes (for
  fork-safety tests);
* :func:`stop_cleanly` stops a LoopThread and raises ``AssertionError`` naming what it left
  behind (the check of the pytest plugin's fixtures, :mod:`loopthread.pytest_plugin`);
* :func:`wait_for` flushes a channel or event bus and checks how many items went through;
* :class:`Recorder` records what reaches a channel or event-bus handler and waits for it
  (:func:`record` subscribes one to a bus). Nothing here sleeps: waits are on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from loopthread import _default, _process
from loopthread._channel import Channel, ChannelStats
from loopthread._core._component import Component, ComponentBase, StopPhase
from loopthread._core._state import ShutdownReport
from loopthread._eventbus import EventBus, EventBusStats
from loopthread._exceptions import LoopThreadError
from loopthread._loopthread import LoopThread
from loopthread._monitor import LoopMonitor, MonitorComponent

__all__ = [
    "Recorder",
    "add_stop_hook",
    "components",
    "current_default",
    "holding_default_locks",
    "monitor",
    "record",
    "reset_default",
    "stop_cleanly",
    "wait_for",
]

T = TypeVar("T")


def current_default() -> LoopThread | None:
    """The default LoopThread as it is now (None if none was made in this process)."""
    return _default.current_default()


def reset_default(timeout: float | None = 5.0) -> ShutdownReport | None:
    """Stop the default LoopThread (if any) and forget it; return its stop report."""
    lt = _default.current_default()
    if lt is None:
        return None
    report = lt.stop(timeout)
    with _default._lock:
        if _default._default is lt:
            _default._default = None
    return report


def components(lt: LoopThread) -> list[Component]:
    """The components attached to ``lt`` now, in attach order."""
    return list(lt.components)


class _StopHook(ComponentBase):
    def __init__(self, hook: Callable[[float], Awaitable[object]], phase: StopPhase) -> None:
        self._hook = hook
        self.stop_phase = phase

    @property
    def name(self) -> str:
        return f"stop-hook:{getattr(self._hook, '__qualname__', 'hook')}"

    async def on_stop(self, deadline: float) -> None:
        await self._hook(deadline)

    def stats(self) -> None:
        return None


def add_stop_hook(
    lt: LoopThread, hook: Callable[[float], Awaitable[object]], phase: StopPhase = "drain"
) -> Component:
    """Run ``await hook(deadline)`` on the loop in ``phase`` of ``lt.stop()``; return the
    component (detach it with ``lt.components.detach(...)``).

    Within one phase, components stop newest first: a ``"close_last"`` hook added *before*
    the first ``lt.resource(...)`` runs after the resources were closed.

    Raises:
        LoopNotRunningError: ``lt`` began stopping.
    """
    return lt.components.attach(_StopHook(hook, phase))


def monitor(lt: LoopThread) -> LoopMonitor | None:
    """``lt``'s lag monitor and stall watchdog (None when both are off or before start)."""
    for component in lt.components:
        if isinstance(component, MonitorComponent):
            return component.monitor
    return None


@contextlib.contextmanager
def holding_default_locks() -> Iterator[None]:
    """Hold, for the ``with`` block, the locks that creating the default LoopThread takes (the
    default loop's own and the process registry's), in the order it takes them.

    For fork-safety tests: another thread forks while one thread is inside the block, and the
    child must still be able to create its own default loop (the fork hook re-creates every
    lock in the child). Inside the block, the holding thread must not create LoopThreads or
    call ``loopthread.default()`` while no default loop runs: that would wait for itself.
    """
    with _default._lock, _process._lock:
        yield


# ---------------------------------------------------------------- stop_cleanly


def stop_cleanly(lt: LoopThread, timeout: float | None = 5.0) -> ShutdownReport:
    """Stop ``lt``; return its report, or raise ``AssertionError`` naming what it left behind.

    It fails when ``stop()`` did not finish (the loop is blocked) or hit its deadline, when a
    task or call still running at this call had to be cancelled (a task the code under test
    left behind, a ``submit()`` nobody waited for) or would not end, when a channel lost items
    (``items_unhandled``), or when the loop thread is still alive. Tasks that loopthread runs
    for itself (channel consumers) are not the caller's and are not listed. Called on a
    LoopThread that is already stopped, it checks the report of that stop.
    """
    tasks = _running_tasks(lt, 1.0 if timeout is None else min(1.0, timeout))
    in_flight = lt.stats().in_flight
    channels = [c for c in lt.components if isinstance(c, Channel)]
    report = lt.stop(timeout)
    problems = _problems(
        lt, report, timeout=timeout, tasks=tasks, in_flight=in_flight, channels=channels
    )
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise AssertionError(f"LoopThread {lt.name!r} did not stop cleanly:\n{lines}\n  {report!r}")
    return report


_PACKAGE = str(Path(__file__).resolve().parent) + os.sep


class _Seen:
    """A task on the loop at the end of a test, described on the loop thread. ``call``: a task
    of loopthread's own around a caller's coroutine (a call), which ends normally even when
    that coroutine was cancelled."""

    __slots__ = ("call", "task", "text")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        coro: Any = task.get_coro()
        self.call = _is_own(coro)
        while _is_own(coro) and hasattr(getattr(coro, "cr_await", None), "cr_code"):
            coro = coro.cr_await  # down to the caller's coroutine
        what = getattr(coro, "__qualname__", None) or repr(coro)
        frame = getattr(coro, "cr_frame", None)
        where = f" at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else ""
        self.text = (
            f"call {what}(){where}" if self.call else f"{task.get_name()!r} running {what}(){where}"
        )


def _is_own(coro: object) -> bool:
    code = getattr(coro, "cr_code", None)
    return code is not None and code.co_filename.startswith(_PACKAGE)


def _running_tasks(lt: LoopThread, timeout: float) -> list[_Seen]:
    """The tasks on ``lt``'s loop now, but loopthread's own (channel consumers) and those
    already being cancelled by the code that owns them."""

    async def snapshot() -> list[_Seen]:
        me = asyncio.current_task()
        return [
            _Seen(task)
            for task in asyncio.all_tasks()
            if task is not me
            and not task.get_name().startswith("loopthread-")
            and not task.cancelling()
        ]

    if not lt.running:
        return []
    try:
        return lt.run(snapshot(), timeout=timeout)
    except (LoopThreadError, TimeoutError):  # stopped meanwhile, or the loop is blocked
        return []


def _problems(
    lt: LoopThread,
    report: ShutdownReport,
    *,
    timeout: float | None,
    tasks: list[_Seen],
    in_flight: int,
    channels: list[Channel[Any]],
) -> list[str]:
    problems: list[str] = []
    if not report.finished:
        problems.append(
            f"stop() did not finish within {timeout} s: the loop is blocked by a callback or "
            "coroutine that does not await (its stack is logged as loop_thread.stop_timed_out)"
        )
        return problems
    if report.cancelled:
        left = f" ({in_flight} call(s) were in flight: a submit() nobody waited for?)"
        named = [s.text for s in tasks if s.call or s.task.cancelled()]
        problems.append(
            f"{report.cancelled} task(s) or call(s) still running when stop() was called were "
            f"cancelled by it{left if in_flight else ''}" + "".join(f"\n      {d}" for d in named)
        )
    if report.abandoned:
        workers = [t.name for t in threading.enumerate() if t.name.startswith(f"{lt.name}-")]
        problems.append(
            f"{report.abandoned} task(s) or executor job(s) would not end (a task that "
            "ignores cancellation, or a blocking call in the executor)"
            + "".join(f"\n      {s.text}" for s in tasks if not s.task.done())
            + (f"\n      threads still alive: {', '.join(workers)}" if workers else "")
        )
    if report.items_unhandled:
        lost = [
            f"\n      channel {c.name!r} lost {c.unhandled}: put={c.put}, handled={c.handled}, "
            f"failed={c.failed}, dropped={c.dropped}"
            for c in (ch.stats() for ch in channels)
            if c.unhandled
        ]
        problems.append(
            f"{report.items_unhandled} item(s) accepted by channels were never handled (lost)"
            + "".join(lost)
        )
    if report.deadline_hit:
        problems.append(
            f"stop() cut a phase short at its {timeout} s deadline (a call, handler or close "
            "that takes longer?)"
        )
    if lt.loop_started:
        lt.thread.join(1.0)
        if lt.thread.is_alive():
            problems.append(f"its loop thread {lt.thread.name!r} is still alive")
    return problems


# ---------------------------------------------------------------- waiting on channels


@overload
def wait_for(target: Channel[Any], count: int, timeout: float = 5.0) -> ChannelStats: ...


@overload
def wait_for(target: EventBus, count: int, timeout: float = 5.0) -> EventBusStats: ...


def wait_for(
    target: Channel[Any] | EventBus, count: int, timeout: float = 5.0
) -> ChannelStats | EventBusStats:
    """Flush ``target`` (a channel or an event bus), then check that ``count`` items went
    through its handler; return its stats.

    For items already put (by calls that returned, threads the test joined): it waits for them
    on the loop's own signal, never by sleeping. For a channel, ``count`` is compared with
    ``stats().handled``; for an event bus, with ``stats().events`` (events that had a
    handler). Items put later by threads the test does not control: use a :class:`Recorder`.

    Raises:
        TimeoutError: the flush did not finish within ``timeout``.
        AssertionError: fewer than ``count`` items went through (the stats are in the message).
    """
    what = f"{type(target).__name__} {target.name!r}"
    if not target.flush(timeout):
        raise TimeoutError(
            f"{what} was not flushed within {timeout} s: a handler is slow or stuck "
            f"({target.stats()})"
        )
    stats = target.stats()
    got = stats.handled if isinstance(stats, ChannelStats) else stats.events
    if got < count:
        raise AssertionError(
            f"{what}: {got} of {count} items went through its handler ({stats}); were all "
            "the producers done before wait_for()? (testing.Recorder waits for items put "
            "later)"
        )
    return stats


class Recorder(Generic[T]):
    """A handler that records the items reaching it; a test can wait for them without sleeping.

    As a channel handler (``lt.channel(rec)``) it records each batch's items; as an event-bus
    handler (``bus.on("progress", rec.event)``, or :func:`record`) each event. Given
    ``handler``, it calls that first (awaiting it if it returns an awaitable), so it can wrap
    the real sink; an item is recorded once its handler call returned or raised.

    Thread-safe: the handler side runs on the loop thread, :meth:`wait_for` in the test's.
    """

    def __init__(self, handler: Callable[[Any], object] | None = None) -> None:
        self._handler = handler
        self._items: list[T] = []
        self._cond = threading.Condition()

    async def __call__(self, batch: list[T]) -> None:
        """The channel handler: ``batch`` is recorded item by item."""
        try:
            await self._call(batch)
        finally:
            self._add(batch)

    async def event(self, item: T) -> None:
        """The event-bus handler: ``item`` is recorded."""
        try:
            await self._call(item)
        finally:
            self._add([item])

    async def _call(self, arg: object) -> None:
        if self._handler is not None:
            result = self._handler(arg)
            if inspect.isawaitable(result):
                await result

    def _add(self, items: list[T]) -> None:
        with self._cond:
            self._items.extend(items)
            self._cond.notify_all()

    @property
    def items(self) -> list[T]:
        """A copy of what was recorded so far, in arrival order."""
        with self._cond:
            return list(self._items)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[T]:
        """Block until ``count`` items were recorded; return them all (a copy).

        Call it from the test's thread, not from the loop thread (it would wait for itself).

        Raises:
            TimeoutError: fewer than ``count`` arrived within ``timeout`` (they are in the
                message).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"Recorder: {len(self._items)} of {count} items arrived within "
                        f"{timeout} s: {self._items[:10]!r}"
                        + (" ..." if len(self._items) > 10 else "")
                    )
                self._cond.wait(left)
            return list(self._items)

    def __repr__(self) -> str:
        return f"<Recorder items={len(self._items)}>"


def record(bus: EventBus, *event_types: str) -> Recorder[dict[str, Any]]:
    """A :class:`Recorder` subscribed to ``bus`` for each of ``event_types`` (none: to every
    event, with ``bus.on_any``)."""
    recorder: Recorder[dict[str, Any]] = Recorder()
    if not event_types:
        bus.on_any(recorder.event)
    for event_type in event_types:
        bus.on(event_type, recorder.event)
    return recorder
