"""The LoopThread: one daemon thread, one asyncio loop, and the blocking facade into it.

Every crossing from a caller's thread into the loop goes through one primitive, ``_Call``:

* the caller builds a ``_Call`` (the coroutine, a copy of its ``contextvars`` context, and a
  way to be woken: a bare lock for the blocking facade, a ``concurrent.futures.Future`` for
  ``submit``), appends it to ``_inbox`` and wakes the loop only if no wake-up is already
  scheduled, so a burst of calls from many threads costs one ``call_soon_threadsafe``;
* on the loop, ``_drain_inbox`` starts one Task per call, running ``_execute``, which stores
  the outcome (result or any exception, ``BaseException`` included) in the ``_Call`` and wakes
  the caller directly: no done-callbacks, no extra loop iteration, no ``Condition``;
* a caller that gives up (``timeout=``, ``KeyboardInterrupt``) schedules ``_cancel_on_loop``
  and waits up to ``cancel_grace`` for the coroutine's cleanup: the work is cancelled, never
  orphaned.

All counters are written by the loop thread only, so they need no lock; ``stats()`` reads them.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from loopthread import _process
from loopthread._exceptions import LoopNotRunningError, LoopThreadError, WouldDeadlockError
from loopthread._log import logger
from loopthread._monitor import (
    CALL_DURATION_BUCKETS,
    DEFAULT_REGISTRY,
    Buckets,
    LoopMonitor,
    check_interval,
)
from loopthread._validate import as_coroutine, check_positive_int, check_timeout, close_awaitables

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from loopthread._channel import Channel, Overflow
    from loopthread._resource import Resource

__all__ = ["LoopStats", "LoopThread", "ShutdownReport"]

T = TypeVar("T")
P = ParamSpec("P")

# Python 3.12+ can run a Task's first step synchronously ("eager"): a coroutine that finishes
# without suspending then costs no extra loop iteration. 3.11 has no such option.
_EAGER = sys.version_info >= (3, 12)

# How long past its deadline stop() waits for the loop thread before declaring it stuck.
_STOP_FLOOR = 0.25
# The least each close hook gets during stop(), even past the deadline (seconds).
CLOSE_FLOOR = 0.05

_CancelReason = Literal["timeout", "interrupted", "cancelled", "stop"]


class State(enum.Enum):
    """Where a LoopThread is in its life; it only ever moves down this list."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"  # the loop ended without stop(), or the thread was inherited across fork()


@dataclass(frozen=True, slots=True)
class LoopStats:
    """A snapshot of a LoopThread's counters (plain data; metrics are derived from it)."""

    name: str
    state: str
    loops_created: int
    calls_started: int
    calls_ok: int
    calls_failed: int
    calls_timed_out: int
    calls_cancelled: int
    in_flight: int
    executor_workers: int
    loop_stalls: int = 0  # loop iterations longer than slow_callback (0 with the watchdog off)
    loop_lag_max: float = 0.0  # the longest a lag probe waited, in seconds (0 with lag off)


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What ``stop()`` did.

    ``finished`` is False when the shutdown was only scheduled (``stop()`` called from the
    loop thread) or when the loop thread did not finish within the timeout (a coroutine or
    callback is blocking it); counts then cover what was known at return.
    """

    finished: bool
    completed: int = 0
    cancelled: int = 0
    abandoned: int = 0
    items_unhandled: int = 0
    deadline_hit: bool = False
    duration: float = 0.0

    @property
    def clean(self) -> bool:
        """True when everything in flight finished on its own and nothing was left behind."""
        return (
            self.finished
            and not self.deadline_hit
            and self.cancelled == 0
            and self.abandoned == 0
            and self.items_unhandled == 0
        )


class _Call:
    """One hand-off from a caller's thread to the loop, and its outcome."""

    __slots__ = ("cancel_reason", "context", "coro", "done", "error", "result", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> None:
        self.coro = coro
        self.context = context
        self.task: asyncio.Task[None] | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel_reason: _CancelReason | None = None

    def finish(self, result: Any, error: BaseException | None) -> None:
        # The first outcome wins: a call failed by a dying loop may still be finished later by
        # its own task during cleanup.
        if self.done:
            return
        self.done = True
        self.result = result
        self.error = error
        self._wake()

    def _wake(self) -> None:
        raise NotImplementedError


class _BlockingCall(_Call):
    """A call whose caller blocks on a bare lock (cheaper than Event or Future)."""

    __slots__ = ("lock",)

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> None:
        super().__init__(coro, context)
        self.lock = threading.Lock()
        self.lock.acquire()

    def _wake(self) -> None:
        self.lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(True, -1 if timeout is None else timeout)


class _FutureCall(_Call):
    """A call whose outcome goes into a ``concurrent.futures.Future`` (``submit``)."""

    __slots__ = ("future",)

    def __init__(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context, future: Future[Any]
    ) -> None:
        super().__init__(coro, context)
        self.future = future

    def _wake(self) -> None:
        # The future stays PENDING while the coroutine runs, so the user can still cancel() it;
        # if they did, setting the outcome is refused, and that is fine.
        try:
            if self.error is None:
                self.future.set_result(self.result)
            else:
                self.future.set_exception(self.error)
        except InvalidStateError:
            pass


async def _invoke(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    awaitable = fn(*args, **kwargs)
    if not _is_awaitable(awaitable):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"lt.call() expects an async function; {name}(...) returned "
            f"{type(awaitable).__name__}, not an awaitable. Call a plain function directly, "
            "or run it in the executor: await loop.run_in_executor(None, fn)."
        )
    return await awaitable


def _is_awaitable(value: object) -> bool:
    return type(value) is CoroutineType or hasattr(value, "__await__")


async def _gather(coros: list[Coroutine[Any, Any, Any]], return_exceptions: bool) -> list[Any]:
    return list(await asyncio.gather(*coros, return_exceptions=return_exceptions))


class LoopThread:
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
        cancel_grace: seconds a caller that gives up waits for the cancelled coroutine's cleanup.
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
        cancel_grace: float = 1.0,
        metrics_registry: CollectorRegistry | None = DEFAULT_REGISTRY,  # type: ignore[assignment]
        lag_interval: float | None = 0.5,
        slow_callback: float | None = 0.1,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str; got {name!r}.")
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(
                "loop_factory must be a callable that returns a new event loop, such as "
                f"asyncio.new_event_loop; got {loop_factory!r}."
            )
        if uvloop and loop_factory is not None:
            raise ValueError("pass either uvloop=True or loop_factory=..., not both.")
        if uvloop:
            loop_factory = _uvloop_factory()
        if executor_workers is not None:
            check_positive_int(executor_workers, "executor_workers")
        grace = check_timeout(cancel_grace, "cancel_grace")
        self._name = name
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._executor_workers = executor_workers
        self._cancel_grace = grace if grace is not None else float("inf")

        self._state = State.NEW
        self._state_lock = threading.Lock()
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._start_error: BaseException | None = None
        self._death_reason = ""
        self._report: ShutdownReport | None = None
        self._pid = os.getpid()

        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        self._thread_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

        self._inbox: deque[_Call] = deque()
        self._wake_scheduled = False
        self._pending: set[_Call] = set()
        self._stop_hooks: list[tuple[str, Callable[[float], Awaitable[int | None]]]] = []
        # What runs on this loop, for stats and metrics: each object has a .stats() method.
        self._channels: weakref.WeakSet[Any] = weakref.WeakSet()
        self._chains: weakref.WeakSet[Any] = weakref.WeakSet()

        self._loops_created = 0
        self._calls_started = 0
        self._calls_ok = 0
        self._calls_failed = 0
        self._calls_timed_out = 0
        self._calls_cancelled = 0

        self._lag_interval = check_interval(lag_interval, "lag_interval")
        self._slow_callback = check_interval(slow_callback, "slow_callback")
        self._monitor: LoopMonitor | None = None
        self._call_durations: Buckets | None = None
        self._metrics: Any = None
        if metrics_registry is not None:
            from loopthread import metrics  # prometheus_client is imported only when used

            self._metrics = metrics._collector_for(metrics_registry)
            self._call_durations = Buckets(CALL_DURATION_BUCKETS)

        _process.register(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LoopThread:
        """Start the thread and return once its loop runs; a no-op while already running.

        Raises:
            LoopThreadError: the LoopThread was stopped (or died); create a new one instead.
            LoopNotRunningError: no thread can be started (interpreter shutdown).
        """
        with self._state_lock:
            state = self._state
            if state is State.NEW:
                self._state = State.STARTING
            elif state not in (State.STARTING, State.RUNNING):
                raise LoopThreadError(
                    f"LoopThread {self._name!r} is {state.value}{self._death_suffix()}; "
                    "a stopped LoopThread cannot be restarted. Create a new LoopThread()."
                )
        if state is State.NEW:
            try:
                self._thread.start()
            except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
                with self._state_lock:
                    self._state = State.DEAD
                    self._death_reason = f"the thread could not start: {exc}"
                self._started.set()
                self._stopped.set()
                raise LoopNotRunningError(
                    f"LoopThread {self._name!r} could not start its thread ({exc}). "
                    "Start loop threads before interpreter shutdown (not from atexit handlers)."
                ) from exc
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self, timeout: float | None = 5.0) -> ShutdownReport:
        """Stop accepting work, let work in flight finish, cancel what is left, close the loop.

        Idempotent. Bounded by ``timeout``: running work gets until the deadline less a
        reserve for cancellation and for closing resources. Called from the loop thread
        itself, it schedules the shutdown and returns at once (``report.finished`` is False).

        Raises:
            TypeError, ValueError: ``timeout`` is not a non-negative number or None.
        """
        timeout = check_timeout(timeout)
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else float("inf")
        state = self._initiate_stop(deadline)
        if state is State.NEW:
            return self._report or ShutdownReport(finished=True)
        if state is State.STARTING:
            self.start()  # let the start in progress finish, then stop it
            return self.stop(None if timeout is None else _remaining(deadline))
        if self._in_loop_thread():
            return ShutdownReport(finished=False)
        if state in (State.STOPPED, State.DEAD) and self._stopped.is_set():
            return self._report or ShutdownReport(finished=True)
        return self._wait_stopped(deadline, started)

    def _initiate_stop(self, deadline: float) -> State:
        """Move to STOPPING and schedule the shutdown on the loop; return the prior state."""
        with self._state_lock:
            state = self._state
            if state is State.NEW:
                self._state = State.STOPPED
                self._report = ShutdownReport(finished=True)
                self._stopped.set()
                _process.unregister(self)
            elif state is State.RUNNING:
                self._state = State.STOPPING
        if state is State.RUNNING:
            self._log_event("loop_thread.stopping")
            self._request_shutdown(deadline)
        return state

    def _request_shutdown(self, deadline: float) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._begin_shutdown, deadline)
        except RuntimeError:  # the loop is already closed: the thread is finishing on its own
            pass

    def _wait_stopped(self, deadline: float, started: float) -> ShutdownReport:
        # The loop thread needs a moment past the deadline to finish (each close hook gets at
        # least CLOSE_FLOOR, then the executor and the loop are closed), and even stop(0) on an
        # idle loop takes a fraction of a millisecond: wait that slack before calling it stuck.
        remaining = None if deadline == float("inf") else _remaining(deadline) + _STOP_FLOOR
        if self._stopped.wait(remaining) and self._report is not None:
            # The thread has only its last log line left; joining makes stop() mean "gone".
            self._thread.join(None if deadline == float("inf") else max(0.1, _remaining(deadline)))
            return self._report
        # The loop thread did not finish in time: something blocks the loop (a coroutine that
        # calls time.sleep, a callback that never returns). Nothing may wait on it any longer.
        stuck = self._abandon()
        return ShutdownReport(
            finished=False,
            abandoned=stuck,
            deadline_hit=True,
            duration=time.monotonic() - started,
        )

    def _abandon(self) -> int:
        with self._state_lock:
            if self._state is State.STOPPING:
                self._state = State.DEAD
                self._death_reason = "stop() timed out while the loop was blocked"
        stack = _thread_stack(self._thread_id)
        stuck = self._fail_pending("the loop thread did not stop in time (its loop is blocked)")
        self._log_event(
            "loop_thread.stop_timed_out", level="error", calls_failed=stuck, loop_stack=stack
        )
        return stuck

    def __enter__(self) -> LoopThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The name given at construction."""
        return self._name

    @property
    def running(self) -> bool:
        """True while the loop accepts work."""
        return self._state is State.RUNNING

    @property
    def state(self) -> str:
        """``new``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``dead``."""
        return self._state.value

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (closed once stopped).

        Raises:
            LoopNotRunningError: the LoopThread was never started.
        """
        if self._loop is None:
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} has no loop yet: call lt.start() first."
            )
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The daemon thread that runs the loop."""
        return self._thread

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The loop's default executor, shared by all blocking work on this loop.

        Raises:
            LoopNotRunningError: the LoopThread was never started.
        """
        if self._executor is None:
            raise LoopNotRunningError(
                f"LoopThread {self._name!r} has no executor yet: call lt.start() first."
            )
        return self._executor

    @property
    def cancel_grace(self) -> float:
        """Seconds a caller that gives up waits for the cancelled coroutine's cleanup."""
        return self._cancel_grace

    def in_loop_thread(self) -> bool:
        """True when called from this LoopThread's own thread."""
        return self._in_loop_thread()

    def _in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def stats(self) -> LoopStats:
        """A consistent-enough snapshot of the counters (each field is read atomically)."""
        executor = self._executor
        monitor = self._monitor.stats() if self._monitor is not None else None
        return LoopStats(
            name=self._name,
            state=self._state.value,
            loops_created=self._loops_created,
            calls_started=self._calls_started,
            calls_ok=self._calls_ok,
            calls_failed=self._calls_failed,
            calls_timed_out=self._calls_timed_out,
            calls_cancelled=self._calls_cancelled,
            in_flight=len(self._pending),
            executor_workers=executor._max_workers if executor is not None else 0,
            loop_stalls=monitor.stalls if monitor is not None else 0,
            loop_lag_max=monitor.lag_max if monitor is not None else 0.0,
        )

    def __repr__(self) -> str:
        return (
            f"<LoopThread {self._name!r} {self._state.value} "
            f"in_flight={len(self._pending)} calls={self._calls_started}>"
        )

    # ------------------------------------------------------------------ the facade

    def run(self, awaitable: Awaitable[T], /, *, timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop and block until it is done; return its result.

        The caller's ``contextvars`` are visible inside. On ``timeout`` or
        ``KeyboardInterrupt`` the coroutine is cancelled on the loop and its cleanup gets up to
        ``cancel_grace`` seconds before this raises.

        Raises:
            TypeError: ``awaitable`` is not awaitable (e.g. ``lt.run(fetch)``).
            ValueError: ``timeout`` is negative.
            WouldDeadlockError: called from the loop's own thread; ``await`` instead.
            LoopNotRunningError: the loop is not running (or stopped while this waited).
            TimeoutError: ``timeout`` expired.
            BaseException: whatever the coroutine raised, with its traceback.
        """
        coro = awaitable if type(awaitable) is CoroutineType else as_coroutine(awaitable, "lt.run")
        if timeout is not None:
            timeout = self._checked_timeout(timeout, coro)
        call = _BlockingCall(coro, contextvars.copy_context())
        self._enqueue_guarded(call, "lt.run")
        return self._wait(call, timeout, "lt.run")  # type: ignore[no-any-return]

    def call(
        self,
        async_fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Call ``async_fn(*args, **kwargs)`` on the loop and block until it is done.

        The function itself is called on the loop thread (so it may use the running loop).

        Raises:
            TypeError: ``async_fn`` is not callable (a coroutine passed here: use ``lt.run``).
            See :meth:`run` for the rest.
        """
        if not callable(async_fn):
            close_awaitables([async_fn])
            if _is_awaitable(async_fn):
                raise TypeError(
                    "lt.call() takes an async function and its arguments, not an awaitable: "
                    "use lt.run(fetch(x)) or lt.call(fetch, x)."
                )
            raise TypeError(
                f"lt.call() takes an async function; got {type(async_fn).__name__} {async_fn!r}."
            )
        return self.run(_invoke(async_fn, args, kwargs), timeout=timeout)

    def gather(
        self,
        *awaitables: Awaitable[Any],
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run many awaitables concurrently on the loop with one hand-off; block for all.

        Results come back in argument order. With ``return_exceptions=False`` the first
        exception is raised (the others keep running until done, as ``asyncio.gather``).

        Raises:
            TypeError: one of the arguments is not awaitable (all coroutines are closed).
            See :meth:`run` for the rest.
        """
        coros: list[Coroutine[Any, Any, Any]] = []
        for index, item in enumerate(awaitables):
            try:
                coros.append(as_coroutine(item, "lt.gather"))
            except TypeError as exc:
                close_awaitables(awaitables)
                raise TypeError(f"lt.gather() argument {index}: {exc}") from None
        if not coros:
            return []
        try:
            # Refuse before the inner coroutines are handed to _gather: once inside it, a
            # refusal would close only _gather and leave them "never awaited".
            timeout = check_timeout(timeout)
            self._check_accepting("lt.gather")
        except Exception:
            close_awaitables(coros)
            raise
        return self.run(_gather(coros, return_exceptions), timeout=timeout)

    def submit(self, awaitable: Awaitable[T], /) -> Future[T]:
        """Schedule ``awaitable`` on the loop and return a ``concurrent.futures.Future`` at once.

        Never blocks, not even while the loop is busy, and is safe from the loop thread.
        Cancelling the returned future cancels the coroutine on the loop.

        Raises:
            TypeError: ``awaitable`` is not awaitable.
            LoopNotRunningError: the loop is not running.
        """
        coro = (
            awaitable if type(awaitable) is CoroutineType else as_coroutine(awaitable, "lt.submit")
        )
        future: Future[T] = Future()
        call = _FutureCall(coro, contextvars.copy_context(), future)
        self._enqueue_guarded(call, None)

        def on_done(fut: Future[T]) -> None:
            if fut.cancelled():
                self._cancel_soon(call, "cancelled")

        future.add_done_callback(on_done)
        return future

    def channel(
        self,
        handler: Callable[[list[T]], Awaitable[object] | None],
        *,
        maxsize: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 256,
        name: str | None = None,
    ) -> Channel[T]:
        """Open a channel: any thread ``put``s items, ``handler(batch)`` handles them on the loop.

        ``handler`` is usually ``async def handler(batch: list[T]) -> None``; it gets 1 to
        ``batch_size`` items in FIFO order, one call at a time. ``overflow`` says what ``put``
        does when ``maxsize`` items are waiting: ``"block"``, ``"drop_newest"``,
        ``"drop_oldest"`` or ``"error"``. :meth:`stop` closes and drains the channel. See
        :class:`loopthread.Channel`.

        Raises:
            TypeError, ValueError: a bad handler, size, policy or name.
            LoopNotRunningError: the loop is not running.
        """
        from loopthread._channel import Channel

        channel = Channel(
            self, handler, maxsize=maxsize, overflow=overflow, batch_size=batch_size, name=name
        )
        self._channels.add(channel)
        return channel

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
        """
        from loopthread._resource import Resource

        return Resource(self, factory, close=close, name=name)

    # ------------------------------------------------------------------ crossing threads

    def _checked_timeout(self, timeout: float, coro: Coroutine[Any, Any, Any]) -> float | None:
        try:
            return check_timeout(timeout)
        except (TypeError, ValueError):
            coro.close()
            raise

    def _check_accepting(self, blocking_api: str | None) -> None:
        """Raise if a call made now would be refused (the state is checked again on enqueue)."""
        if blocking_api is not None and threading.get_ident() == self._thread_id:
            raise WouldDeadlockError(
                f"{blocking_api}() was called from the loop thread of LoopThread "
                f"{self._name!r}; it would wait forever for itself. Inside a coroutine, "
                "await the coroutine instead (result = await fetch()), or use lt.submit()."
            )
        if self._state is not State.RUNNING:
            raise LoopNotRunningError(self._not_running_message())

    def _enqueue_guarded(self, call: _Call, blocking_api: str | None) -> None:
        try:
            self._enqueue(call, blocking_api)
        except LoopThreadError:
            raise  # refused: nothing was queued
        except BaseException:
            # A signal (Ctrl-C) can raise between any two bytecodes of _enqueue, e.g. after
            # the call was queued or the wake-up flag set, but before the loop was woken.
            # Cancelling through the loop also drains the inbox, which repairs the flag.
            if isinstance(call, _BlockingCall):
                self._cancel_and_wait(call, "interrupted")
            else:
                self._cancel_soon(call, "interrupted")
            raise

    def _enqueue(self, call: _Call, blocking_api: str | None) -> None:
        if blocking_api is not None and threading.get_ident() == self._thread_id:
            call.coro.close()
            self._check_accepting(blocking_api)
        with self._state_lock:
            if self._state is not State.RUNNING:
                call.coro.close()
                raise LoopNotRunningError(self._not_running_message())
            self._pending.add(call)
            self._inbox.append(call)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:
            # The loop closed under us (it died); the death path fails every pending call.
            pass

    def _wait(self, call: _BlockingCall, timeout: float | None, api: str) -> Any:
        try:
            finished = call.wait(timeout)
        except BaseException:
            # KeyboardInterrupt (or SystemExit from a signal handler) while waiting: cancel the
            # coroutine on the loop and give its cleanup cancel_grace before re-raising. A call
            # already done has nothing to clean up, and its wake-up may be consumed already
            # (the interrupt landed just after the lock was acquired): waiting would only
            # burn cancel_grace.
            if not call.done:
                self._cancel_and_wait(call, "interrupted")
            raise
        if not finished:
            self._cancel_and_wait(call, "timeout")
            if not (call.done and call.cancel_reason is None):
                cleanup = (
                    "its cleanup finished"
                    if call.done
                    else f"its cleanup was still running after cancel_grace={self._cancel_grace}s"
                )
                raise TimeoutError(
                    f"{api}() did not finish within timeout={timeout}s; the coroutine was "
                    f"cancelled on the loop and {cleanup}."
                )
            # It finished before the cancellation reached it: the result is not lost.
        error = call.error
        if error is not None:
            call.error = None  # break the frame <-> exception cycle
            raise error
        return call.result

    def _cancel_soon(self, call: _Call, reason: _CancelReason) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(self._cancel_on_loop, call, reason)
        except RuntimeError:  # the loop is closed; the call was failed when it closed
            return False
        return True

    def _cancel_and_wait(self, call: _BlockingCall, reason: _CancelReason) -> None:
        if self._cancel_soon(call, reason):
            call.wait(self._cancel_grace)

    # ------------------------------------------------------------------ on the loop thread

    def _drain_inbox(self) -> None:
        # Reset the flag before draining: a call appended after this line schedules a new
        # drain, and one appended before it is taken by the loop below. No call is left behind.
        self._wake_scheduled = False
        inbox = self._inbox
        while inbox:
            call = inbox.popleft()
            if call.done:  # cancelled before it started
                continue
            self._calls_started += 1
            call.task = self._new_task(self._execute(call), call.context)

    def _new_task(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context
    ) -> asyncio.Task[None]:
        loop = self._loop
        assert loop is not None
        if _EAGER and loop.get_task_factory() is None:
            return asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return loop.create_task(coro, context=context)

    async def _execute(self, call: _Call) -> None:
        if call.done:  # cancelled between its task's creation and this first step
            return
        durations = self._call_durations
        started = time.perf_counter() if durations is not None else 0.0
        try:
            result = await call.coro
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the caller
            # SystemExit and KeyboardInterrupt raised by the coroutine reach the caller and do
            # not stop the loop, which is why this catches BaseException.
            call.coro.close()  # a task cancelled before its first step never awaited it
            self._finish_failed(call, exc)
        else:
            self._pending.discard(call)
            if call.cancel_reason == "timeout":
                self._calls_timed_out += 1
            else:
                self._calls_ok += 1
            call.finish(result, None)
        if durations is not None:  # after finish(): the caller is not kept waiting for this
            durations.observe(time.perf_counter() - started)

    def _finish_failed(self, call: _Call, exc: BaseException) -> None:
        self._pending.discard(call)
        reason = call.cancel_reason
        if reason == "timeout":
            self._calls_timed_out += 1
        elif reason == "stop":
            self._calls_cancelled += 1
            stopped = LoopNotRunningError(
                f"cancelled because LoopThread {self._name!r} was stopped before the "
                "coroutine finished (stop() deadline reached)."
            )
            stopped.__cause__ = exc
            exc = stopped
        elif reason is not None or isinstance(exc, asyncio.CancelledError):
            self._calls_cancelled += 1
        else:
            self._calls_failed += 1
        call.finish(None, exc)

    def _cancel_on_loop(self, call: _Call, reason: _CancelReason) -> None:
        if not call.done:
            call.cancel_reason = reason
            task = call.task
            if task is None or inspect.getcoroutinestate(call.coro) == inspect.CORO_CREATED:
                # Not started: it never will. Cancelling a task before its first step would
                # skip _execute entirely (and with it the caller's wake-up), so finish the call
                # here; _execute, if its task runs later, sees it done and returns.
                call.coro.close()
                self._finish_failed(call, asyncio.CancelledError())
            else:
                task.cancel()
        # See _enqueue_guarded: a caller interrupted between setting the wake-up flag and waking
        # the loop leaves the flag set; draining here resets it (even with an empty inbox).
        self._drain_inbox()

    # ------------------------------------------------------------------ the thread

    def _thread_main(self) -> None:
        try:
            loop = self._loop_factory()
            executor = ThreadPoolExecutor(
                max_workers=self._executor_workers, thread_name_prefix=f"{self._name}-executor"
            )
            loop.set_default_executor(executor)
            asyncio.set_event_loop(loop)
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            with self._state_lock:
                self._state = State.DEAD
                self._death_reason = f"the loop could not be created: {exc!r}"
            self._started.set()
            self._stopped.set()
            return
        self._loop = loop
        self._executor = executor
        self._thread_id = threading.get_ident()
        self._loops_created += 1
        self._start_monitoring(loop)
        loop.call_soon(self._on_running)
        crash: BaseException | None = None
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - a crash of the loop is reported, not lost
            crash = exc
        if self._report is None:
            self._on_death(loop, crash)
        self._close(loop, executor)

    def _start_monitoring(self, loop: asyncio.AbstractEventLoop) -> None:
        # Observability must never keep a loop from running: a failure here is logged.
        try:
            if self._lag_interval is not None or self._slow_callback is not None:
                self._monitor = LoopMonitor.start(
                    self._name,
                    loop,
                    lag_interval=self._lag_interval,
                    slow_callback=self._slow_callback,
                )
            if self._metrics is not None:
                self._metrics.attach(self)
        except Exception as exc:  # noqa: BLE001
            self._log_event("loop_thread.monitoring_failed", level="error", error=repr(exc))

    def _on_running(self) -> None:
        with self._state_lock:
            self._state = State.RUNNING
        self._started.set()
        self._log_event("loop_thread.started", thread=self._thread.name)

    def _begin_shutdown(self, deadline: float) -> None:
        assert self._loop is not None
        self._shutdown_task = self._loop.create_task(self._shutdown(deadline))

    async def _shutdown(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        budget = max(0.0, deadline - started)
        # The budget is split so that a hanging handler or call cannot eat it all: running work
        # and channel drains get the first part, cancellation up to cancel_grace of the rest,
        # and closing (enricher shutdowns, resources, async generators) the last quarter.
        cancel_deadline = deadline - min(budget / 4, 1.0)
        soft_deadline = cancel_deadline - min((cancel_deadline - started) / 2, self._cancel_grace)

        self._drain_inbox()  # everything accepted before stop() starts now
        in_flight = [c.task for c in list(self._pending) if c.task is not None]
        drains = [
            loop.create_task(_count(hook(soft_deadline)))
            for kind, hook in list(self._stop_hooks)
            if kind == "drain"
        ]
        waiting = {t for t in in_flight if not t.done()} | set(drains)
        if waiting:
            await asyncio.wait(waiting, timeout=_remaining(soft_deadline))
        completed = sum(1 for t in in_flight if t.done())

        me = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        call_tasks = set()
        for call in list(self._pending):
            call_tasks.add(call.task)
            self._cancel_on_loop(call, "stop")
        for task in leftovers:
            if task not in call_tasks:
                task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=_remaining(cancel_deadline))
        abandoned = sum(1 for t in leftovers if not t.done())
        cancelled = len(leftovers) - abandoned

        unhandled = sum(d.result() for d in drains if d.done() and not d.cancelled())
        unhandled += sum(1 for d in drains if d.cancelled())  # at least one item each; a floor
        for kind, hook in reversed(list(self._stop_hooks)):
            if kind == "close":
                await _bounded(hook(deadline), deadline)
        try:
            await asyncio.wait_for(
                loop.shutdown_asyncgens(), max(CLOSE_FLOOR, _remaining(deadline))
            )
        except TimeoutError:
            abandoned += 1
        self._report = ShutdownReport(
            finished=True,
            completed=completed,
            cancelled=cancelled,
            abandoned=abandoned,
            items_unhandled=unhandled,
            deadline_hit=bool(leftovers) or time.monotonic() >= deadline,
            duration=time.monotonic() - started,
        )
        loop.stop()

    def _on_death(self, loop: asyncio.AbstractEventLoop, crash: BaseException | None) -> None:
        """The loop stopped without stop(): fail every caller now, then clean up what we can."""
        with self._state_lock:
            stopping = self._state is State.STOPPING
            self._state = State.DEAD
            self._death_reason = (
                f"its loop crashed with {crash!r}"
                if crash is not None
                else "its loop was stopped by code running on it (loop.stop())"
            )
        failed = self._fail_pending(self._death_reason)
        self._log_event(
            "loop_thread.died",
            level="error",
            reason=self._death_reason,
            calls_failed=failed,
            during_stop=stopping,
            exc_info=crash,
        )
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=self._cancel_grace))
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), self._cancel_grace))
        except BaseException as exc:  # noqa: BLE001 - best effort on a loop that already failed
            self._log_event("loop_thread.cleanup_failed", level="warning", error=repr(exc))
        self._report = ShutdownReport(finished=True, cancelled=failed, deadline_hit=False)

    def _close(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        if self._monitor is not None:  # first: from here on the loop never enters select
            self._monitor.close()
        # Not loop.shutdown_default_executor(): it starts a thread, which Python 3.12+ refuses
        # at interpreter exit. Joining the workers ourselves is bounded and starts nothing.
        executor.shutdown(wait=False, cancel_futures=True)
        for worker in list(getattr(executor, "_threads", ())):
            worker.join(self._cancel_grace)
        loop.close()
        with self._state_lock:
            if self._state is State.STOPPING:
                self._state = State.STOPPED
        self._fail_pending(f"LoopThread {self._name!r} stopped")
        # Thread idents are reused once a thread ends: forget ours, or a new thread that gets
        # it would be taken for the loop thread by the deadlock guard.
        self._thread_id = None
        if self._metrics is not None:  # before _stopped: stop()'s caller sees the final counts
            self._metrics.retire(self)
        self._stopped.set()
        _process.unregister(self)
        self._log_event("loop_thread.stopped", report=self._report)

    def _fail_pending(self, reason: str) -> int:
        calls = list(self._pending)
        self._pending.clear()
        self._inbox.clear()
        for call in calls:
            _close_if_unstarted(call.coro)
            call.finish(None, LoopNotRunningError(f"LoopThread {self._name!r}: {reason}."))
        return len(calls)

    # ------------------------------------------------------------------ hooks for the rest

    def _add_stop_hook(
        self,
        kind: Literal["drain", "close"],
        hook: Callable[[float], Awaitable[int | None]],
        *,
        run_last: bool = False,
    ) -> None:
        """Run ``hook(deadline)`` on the loop during stop().

        ``drain`` hooks (channels) run concurrently with the calls in flight and return how many
        accepted items they could not handle; ``close`` hooks (enricher chains, resources) run
        after the calls, one at a time, last registered first; ``run_last`` puts a close hook
        after all the others (resources, which the others may still use).
        Safe from any thread: hooks are added from user threads and removed on the loop.
        """
        with self._state_lock:
            if run_last:
                self._stop_hooks.insert(0, (kind, hook))
            else:
                self._stop_hooks.append((kind, hook))

    def _remove_stop_hook(self, hook: Callable[[float], Awaitable[int | None]]) -> None:
        with self._state_lock:
            self._stop_hooks = [(k, h) for k, h in self._stop_hooks if h != hook]

    # ------------------------------------------------------------------ process events

    def _after_fork_in_child(self) -> None:
        """Called in a forked child: the thread is gone, so this object must say so."""
        self._state_lock = threading.Lock()
        self._stopped = threading.Event()
        self._stopped.set()
        self._started = threading.Event()
        self._started.set()
        if self._state is not State.NEW:
            self._state = State.DEAD
            self._death_reason = f"it was started in process {self._pid}, before fork()"
        else:
            self._pid = os.getpid()
        self._pending.clear()
        self._inbox.clear()
        self._thread_id = None

    def _not_running_message(self) -> str:
        state = self._state
        if state is State.NEW:
            return (
                f"LoopThread {self._name!r} is not started: call lt.start() first, use "
                "`with LoopThread() as lt:`, or use loopthread.default()."
            )
        if state is State.STARTING:
            return f"LoopThread {self._name!r} is still starting: wait for lt.start() to return."
        if state is State.DEAD and self._pid != os.getpid():
            return (
                f"LoopThread {self._name!r} was started in process {self._pid}, and its thread "
                "does not exist in this forked child. Use loopthread.default() (replaced in "
                "the child) or create a new LoopThread in the child."
            )
        return (
            f"LoopThread {self._name!r} is {state.value}{self._death_suffix()}: it takes no more "
            "work. Create a new LoopThread, or use loopthread.default()."
        )

    def _death_suffix(self) -> str:
        return f" ({self._death_reason})" if self._death_reason else ""

    def _log_event(self, event: str, *, level: str = "info", **fields: Any) -> None:
        try:
            getattr(logger, level)(event, loop_thread=self._name, **fields)
        except Exception:  # noqa: BLE001 - a broken log setup must not break the lifecycle
            pass


def _close_if_unstarted(coro: Coroutine[Any, Any, Any]) -> None:
    """Close a coroutine that never ran, so it does not warn "never awaited".

    This may run on another thread than the loop's (stop() giving up on a blocked loop); a
    coroutine the loop thread is executing right then refuses, and is left to its task.
    """
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        try:
            coro.close()
        except (ValueError, RuntimeError):
            pass


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def _count(awaitable: Awaitable[int | None]) -> int:
    return (await awaitable) or 0


async def _bounded(awaitable: Awaitable[Any], deadline: float) -> None:
    try:
        # A floor, so a closer is at least started when earlier phases used up the deadline:
        # wait_for(..., 0) would cancel it before its first line and skip the close entirely.
        await asyncio.wait_for(awaitable, max(CLOSE_FLOOR, _remaining(deadline)))
    except BaseException as exc:  # noqa: BLE001 - one failing closer must not skip the others
        logger.warning("loop_thread.close_hook_failed", error=repr(exc))


def _thread_stack(thread_id: int | None) -> str:
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError as exc:
        raise ImportError(
            "LoopThread(uvloop=True) needs uvloop: pip install 'loopthread[uvloop]'."
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
