"""``LoopThread``: the core plus what every application wants on it.

The core (:mod:`loopthread._core`) is the thread, the loop, the lifecycle and the blocking
facade; it imports no component. This class adds the lag monitor and stall watchdog, the
Prometheus metrics, and the conveniences that create components on this loop
(:meth:`LoopThread.channel`, :meth:`LoopThread.resource`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from loopthread._core._loop import LoopThreadCore
from loopthread._core._shutdown import CLOSE_FLOOR
from loopthread._core._state import LoopStats, ShutdownReport, State
from loopthread._monitor import (
    CALL_DURATION_BUCKETS,
    DEFAULT_REGISTRY,
    MonitorComponent,
)
from loopthread._util import Buckets
from loopthread._validate import check_interval

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from loopthread._channel import Channel, Overflow
    from loopthread._channel._source import SourceChannel
    from loopthread._resource import Resource

__all__ = ["CLOSE_FLOOR", "LoopStats", "LoopThread", "ShutdownReport", "State"]

T = TypeVar("T")


class LoopThread(LoopThreadCore):
    """A daemon thread that owns one long-lived asyncio event loop.

    Synchronous code hands coroutines to the loop with :meth:`run`, :meth:`call`,
    :meth:`gather` (they block until the result is in) or :meth:`submit` (returns a
    ``concurrent.futures.Future`` at once).

    Args:
        name: names the thread, the executor's threads, log events and metrics.
        loop_factory: makes the event loop (``asyncio.new_event_loop`` when None).
        uvloop: use ``uvloop.new_event_loop`` (needs ``pip install 'loopthread[uvloop]'``).
        executor_workers: size of the loop's default executor, shared by everything that runs
            on this loop (None: the ``ThreadPoolExecutor`` default).
        cancel_grace: seconds a caller that gives up waits for the cancelled coroutine's
            cleanup (None: as long as it takes).
        metrics_registry: the ``prometheus_client.CollectorRegistry`` this loop's metrics
            are served from (see :mod:`loopthread.metrics`); default: the global registry;
            None: no metrics.
        lag_interval: seconds between two loop-lag measurements (None: off, and an idle loop
            then never wakes up).
        slow_callback: a loop iteration running longer than this many seconds is logged once
            as ``loop_thread.stalled``, with the loop thread's stack (None: no watchdog). Free
            while the loop is idle; on uvloop it watches the lag probes instead, so it needs
            ``lag_interval`` and only catches stalls that outlast a probe.

    Raises:
        TypeError, ValueError: an option is of the wrong type or out of range.
        ImportError: ``uvloop=True`` but uvloop is not installed.
    """

    def __init__(
        self,
        name: str = "loopthread",
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        uvloop: bool = False,
        executor_workers: int | None = None,
        cancel_grace: float | None = 1.0,
        metrics_registry: CollectorRegistry | None = DEFAULT_REGISTRY,  # type: ignore[assignment]
        lag_interval: float | None = 0.5,
        slow_callback: float | None = 0.1,
    ) -> None:
        lag = check_interval(lag_interval, "lag_interval")
        slow = check_interval(slow_callback, "slow_callback")
        metrics_component: Any = None
        if metrics_registry is not None:
            from loopthread import metrics  # prometheus_client is imported only when used

            metrics_component = metrics.MetricsComponent(metrics_registry)  # checks the registry
        super().__init__(
            name,
            loop_factory=loop_factory,
            uvloop=uvloop,
            executor_workers=executor_workers,
            cancel_grace=cancel_grace,
            call_durations=Buckets(CALL_DURATION_BUCKETS) if metrics_component else None,
        )
        self._monitor: MonitorComponent | None = None
        if lag is not None or slow is not None:
            self._monitor = self.components.attach(
                MonitorComponent(name, lag_interval=lag, slow_callback=slow)
            )
        if metrics_component is not None:
            metrics_component.bind(self)
            self.components.attach(metrics_component)

    def stats(self) -> LoopStats:
        """A consistent-enough snapshot of the counters (each field is read atomically)."""
        stats = super().stats()
        monitor = self._monitor.stats() if self._monitor is not None else None
        if monitor is None:
            return stats
        running = self._monitor.monitor if self._monitor is not None else None
        lag = running.lag if running is not None else None
        return dataclasses.replace(
            stats,
            loop_stalls=monitor.stalls,
            loop_lag_max=monitor.lag_max,
            loop_lag=lag.frozen() if lag is not None else None,
        )

    def channel(
        self,
        handler: Callable[[list[T]], Awaitable[object] | None],
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 256,
        name: str | None = None,
        context: str = "empty",
        run_in: str = "loop",
    ) -> Channel[T]:
        """Open a channel: any thread ``put``s items, ``handler(batch)`` handles them on the loop.

        ``handler`` is usually ``async def handler(batch: list[T]) -> None``; it gets 1 to
        ``batch_size`` items in FIFO order, one call at a time. ``overflow`` says what ``put``
        does when ``maxsize`` items are waiting: ``"block"``, ``"drop_newest"``,
        ``"drop_oldest"`` or ``"error"``. ``run_in="executor"`` runs a plain handler in the
        executor instead of on the loop (still one call at a time, in order).
        ``context="producer"`` runs the handler in each producer's ``contextvars`` (once per
        run of items that share them); by default it runs in an empty context of its own.
        :meth:`stop` closes and drains the channel. See :class:`loopthread.Channel`.

        Raises:
            TypeError, ValueError: a bad handler, size, policy, name, context or run_in (an
                async handler with ``run_in="executor"``).
            LoopNotRunningError: the loop is not running.
        """
        from loopthread._channel import Channel

        return Channel(
            self,
            handler,
            maxsize=maxsize,
            overflow=overflow,
            batch_size=batch_size,
            name=name,
            context=context,
            run_in=run_in,
        )

    def channel_from(
        self,
        source: object,
        handler: Callable[[list[T]], Awaitable[object] | None],
        *,
        framing: str | None = None,
        decode: Callable[[bytes], T] | None = None,
        maxsize: int = 10_000,
        batch_size: int = 256,
        name: str | None = None,
        run_in: str = "loop",
    ) -> SourceChannel[T]:
        """Open a channel fed by an existing source: ``handler(batch)`` gets what it holds.

        ``source``: a ``multiprocessing.Queue`` or ``SimpleQueue``, a
        ``multiprocessing.connection.Connection``, a pipe or socket (an fd or an object with
        ``fileno()``; items are ``bytes``, cut by ``framing``: ``"chunks"``, each read, or
        ``"lines"``), all read by the loop when their fd is readable (no thread); or a
        ``queue.Queue``-like object (blocking ``get()``, ``put()``), read by one thread blocked
        in ``get()``. ``decode`` turns each message's bytes into the item (default:
        ``pickle.loads`` for the multiprocessing kinds). While ``maxsize`` items wait, the
        source is not read. ``flush()`` covers what the source holds at the time of the call;
        ``close()`` and :meth:`stop` read it, then drain. ``run_in="executor"`` runs a plain
        handler in the executor, as :meth:`channel` does. See :class:`loopthread.SourceChannel`.

        Raises:
            TypeError, ValueError: a source of no known kind, a closed one, bad options.
            LoopNotRunningError: the loop is not running.
        """
        from loopthread._channel._source import SourceChannel

        return SourceChannel(
            self,
            source,
            handler,
            framing=framing,
            decode=decode,
            maxsize=maxsize,
            batch_size=batch_size,
            name=name,
            run_in=run_in,
        )

    def on_stop(self, fn: Callable[[], Awaitable[object]], /) -> Callable[[], Awaitable[object]]:
        """Run ``await fn()`` on the loop when this LoopThread stops; usable as a decorator.

        Hooks run newest first, after channels drained and calls finished (or were cancelled)
        and before resources are closed, while the loop's other tasks still run; each within
        the stop deadline (cut short past it; an exception is logged, the others still run).

        Raises:
            TypeError: ``fn`` is not callable.
            LoopNotRunningError: the LoopThread began stopping.
        """
        from loopthread._bridge import OnStop

        self.components.attach(OnStop(fn))
        return fn

    def run_sync(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None) -> T:
        """Call the plain function ``fn(*args)`` on the loop thread and return its result.

        For loop-affine objects (``asyncio.Event.set``, a transport's ``write``). On the loop
        thread itself ``fn`` is called at once. See :meth:`run` for timeouts and errors.
        """
        from loopthread._bridge import run_sync

        return run_sync(self, fn, args, timeout)

    def call_soon(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Schedule ``fn(*args)`` on the loop thread; return a ``concurrent.futures.Future`` of
        its result at once (never blocks, also from the loop thread)."""
        from loopthread._bridge import call_soon

        return call_soon(self, fn, args)

    async def arun(self, awaitable: Awaitable[T], /) -> T:
        """``await lt.arun(coro)`` from code running on *another* event loop (an ASGI app,
        Jupyter): runs ``coro`` on this loop. Cancelling the caller cancels ``coro`` here and
        waits for its cleanup (at most ``cancel_grace``).

        Raises:
            LoopThreadError: awaited on this LoopThread's own loop (await ``coro`` directly).
            TypeError, LoopNotRunningError, BaseException: as :meth:`run`.
        """
        from loopthread._bridge import arun

        return await arun(self, awaitable)

    def enter(self, cm: AbstractAsyncContextManager[T], /) -> AbstractContextManager[T]:
        """``with lt.enter(async_cm) as value:``: an async context manager used from sync code.

        ``__aenter__`` and ``__aexit__`` run on the loop in one task; the block's exception
        reaches ``__aexit__`` as it is, and its return value decides suppression.

        Raises:
            TypeError: ``cm`` is not an async context manager.
        """
        from loopthread._enter import EnteredContext

        return EnteredContext(self, cm)

    def enter_context(self, cm: AbstractAsyncContextManager[T], /) -> T:
        """Enter ``cm`` on the loop now and keep it entered for this LoopThread's lifetime:
        its ``__aexit__`` runs at :meth:`stop` (newest first, in the stop hooks' phase, see
        :meth:`on_stop`). Returns what ``__aenter__`` returned.

        Raises:
            TypeError: ``cm`` is not an async context manager.
            BaseException: what ``__aenter__`` raised.
        """
        from loopthread._bridge import OnStop
        from loopthread._enter import EnteredContext

        entered = EnteredContext(self, cm)
        value = entered.enter_for_lifetime()
        self.components.attach(OnStop(entered.aexit))
        return value

    def iterate(
        self, source: AsyncIterable[T], /, *, timeout: float | None = None, read_ahead: int = 64
    ) -> Iterator[T]:
        """``for item in lt.iterate(agen):``: an async iterable read on the loop, from sync code.

        Items are read ahead on the loop (at most ``read_ahead`` beyond the batch being
        iterated) and handed over in batches: one wake-up per batch, not per item. Exhausting
        it, ``break``, ``close()``, garbage collection, a ``timeout``
        (seconds to wait for the next item: ``TimeoutError``) or Ctrl-C all end the reading
        and ``aclose()`` the source on the loop (its ``finally`` runs) before going on.

        Raises:
            TypeError: ``source`` is not an async iterable.
            WouldDeadlockError: called on the loop thread (use ``async for`` there).
        """
        from loopthread._iterate import iterate

        return iterate(self, source, timeout, read_ahead)

    def resource(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        close: Callable[[T], Awaitable[object] | object] | None = None,
        name: str | None = None,
    ) -> Resource[T]:
        """Declare a value (a connection pool, a session) created lazily on this loop.

        ``await res.get()`` on the loop calls ``await factory()`` once (concurrent first calls
        share it; a failure is retried on the next ``get()``) and then returns the cached
        value. :meth:`stop` closes created values in reverse order of creation, after the other
        close hooks: ``await close(value)`` if given, else the value's ``aclose()`` or
        ``close()``. Cheap: creates nothing until the first ``get()``; callable before
        :meth:`start`. See :class:`loopthread.Resource`.

        Raises:
            TypeError: ``factory`` or ``close`` is not callable, or ``name`` is not a str.
            LoopNotRunningError: the LoopThread began stopping.
        """
        from loopthread._resource import Resource

        return Resource(self, factory, close=close, name=name)
