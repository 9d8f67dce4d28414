"""Enricher chains: add context to an event with many async lookups, each bounded and isolated.

An enricher is any callable ``(event) -> Mapping | None``: an ``async def`` function, an object
with an async ``__call__`` (and optionally ``name``, ``timeout``, ``async startup()``,
``async shutdown()``), or a plain function, which runs in the loop thread's shared executor.

Design notes (why it is built this way):

* Everything a chain counts is written on the loop thread only (the one exception, the
  ``degraded`` count, is written by callers of ``enrich_sync`` under a lock), so the hot path
  takes no lock; ``stats()`` reads plain ints from any thread.
* Enrichers start eagerly: the chain runs each one's first step itself, in the chain's task, and
  most quick enrichers (a cache hit) finish right there, with no Task, no timer and no loop
  iteration. Only an enricher that awaits gets its deadline armed (``asyncio.timeout_at``,
  counted from its start). In parallel mode, at the first enricher that awaits, every enricher
  after it gets its own Task and the chain's task carries on with that one, so their waits
  overlap exactly as with ``asyncio.gather``. A coroutine never moves to another task once
  started, so ``asyncio.timeout`` or anyio cancel scopes inside an enricher stay valid.
* The circuit breaker counts *consecutive* failures and timeouts; once open, the enricher is
  skipped without being called until ``cooldown`` has passed, then exactly one call is let
  through as a trial (half-open): success closes the circuit, failure opens it again.
* Startup hooks run once per loop in a Task with an empty ``contextvars.Context``: they are
  shared by every event, so they must not capture the first caller's context (a request id
  leaking into a connection pool's background tasks). Callers wait on it through
  ``asyncio.shield`` so a caller that gives up does not cancel startup for the others.
* Shutdown hooks run from a "close" stop hook registered once startup finished. Resources
  (``lt.resource``) are closed after every close hook, so a shutdown may still use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import itertools
import math
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from loopthread import _process
from loopthread._core._component import ComponentBase, StopPhase
from loopthread._core._shutdown import CLOSE_FLOOR
from loopthread._default import current_default, default
from loopthread._exceptions import LoopNotRunningError, LoopThreadError, WouldDeadlockError
from loopthread._log import RateLimiter, logger
from loopthread._stats import ChainStats, EnricherStats
from loopthread._validate import check_choice, check_positive_int, check_timeout, close_awaitables

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["ChainStats", "EnricherChain", "EnricherStats", "enricher"]

Event: TypeAlias = Mapping[str, Any]
EnricherResult: TypeAlias = Mapping[str, Any] | None
Enricher: TypeAlias = Callable[[Event], Awaitable[EnricherResult] | EnricherResult]

_chain_ids = itertools.count(1)


class _Circuit(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = _Circuit.CLOSED


class _Configured:
    """What :func:`enricher` returns: the callable plus its chain-level settings."""

    __slots__ = ("fn", "name", "timeout")

    def __init__(self, fn: Enricher, name: str | None, timeout: float | None) -> None:
        self.fn = fn
        self.name = name
        self.timeout = timeout

    def __call__(self, event: Event) -> Awaitable[EnricherResult] | EnricherResult:
        return self.fn(event)

    def __repr__(self) -> str:
        return f"enricher({self.fn!r}, name={self.name!r}, timeout={self.timeout!r})"


def enricher(fn: Enricher, *, name: str | None = None, timeout: float | None = None) -> Enricher:
    """Give an enricher its own name (for stats and logs) and its own timeout in a chain.

    ``timeout=None`` keeps the chain's timeout; ``timeout=math.inf`` means no limit. An
    enricher object can say the same with ``name`` and ``timeout`` attributes.

    Raises:
        TypeError: ``fn`` is not callable, ``name`` is not a str, or ``timeout`` not a number.
        ValueError: ``timeout`` is negative.
    """
    if not callable(fn):
        close_awaitables([fn])
        raise TypeError(
            f"loopthread.enricher() takes the enricher function itself; got {type(fn).__name__}. "
            "Pass loopthread.enricher(lookup_user), not loopthread.enricher(lookup_user(event))."
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
    if timeout is not None:
        check_timeout(timeout)
    return _Configured(fn, name, timeout)


class _Slot:
    """One enricher in a chain: how to call it, its counters and its circuit."""

    __slots__ = (
        "calls",
        "circuit",
        "consecutive",
        "disabled",
        "failures",
        "fn",
        "is_async",
        "name",
        "ok",
        "opened_at",
        "skipped",
        "started",
        "target",
        "time",
        "timeout",
        "timeouts",
        "trial",
    )

    def __init__(
        self, fn: Enricher, target: object, name: str, timeout: float | None, is_async: bool
    ) -> None:
        self.fn = fn
        self.target = target  # the object that may have startup() / shutdown()
        self.name = name
        self.timeout = timeout
        self.is_async = is_async
        self.calls = 0
        self.ok = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0
        self.time = 0.0
        self.circuit = _CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.trial = False
        self.disabled = False
        self.started = False  # startup() finished (or none): shutdown() is owed at stop


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    )


def _default_name(fn: object) -> str:
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _enricher_timeout(value: object, name: str, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        return check_timeout(value, f"timeout of enricher {name!r}")  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"{exc} An enricher's `timeout` attribute is its own timeout in seconds "
            "(math.inf: no limit); rename the attribute if it means something else."
        ) from None


def _make_slots(enrichers: object, default_timeout: float | None) -> list[_Slot]:
    if isinstance(enrichers, str | bytes | Mapping) or not isinstance(enrichers, Iterable):
        close_awaitables([enrichers])
        raise TypeError(
            "enrichers must be a list of enrichers (async functions or objects with an async "
            f"__call__); got {type(enrichers).__name__}. Pass EnricherChain([lookup_user])."
        )
    items = list(enrichers)
    slots: list[_Slot] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if not callable(item):
            close_awaitables(items)
            hint = (
                " It is a coroutine: pass the async function itself, not a call of it."
                if inspect.iscoroutine(item)
                else ""
            )
            raise TypeError(
                f"enrichers[{index}] is not callable: got {type(item).__name__}.{hint} An "
                "enricher is an async callable (event) -> mapping | None."
            )
        if isinstance(item, _Configured):
            target: object = item.fn
            name = item.name or _default_name(target)
            timeout = _enricher_timeout(item.timeout, name, default_timeout)
        else:
            target = item
            name = _default_name(item)
            timeout = _enricher_timeout(getattr(item, "timeout", None), name, default_timeout)
        # Names label stats and metrics, so they must be unique in a chain.
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            name = f"{name}#{count}"
        fn: Enricher = target  # type: ignore[assignment]
        slots.append(_Slot(fn, target, name, timeout, _is_async_callable(target)))
    return slots


class EnricherChain(ComponentBase):
    """Runs enrichers on the loop thread's loop and merges their fields into a new dict.

    Args:
        enrichers: async callables ``(event) -> Mapping | None`` (or objects with an async
            ``__call__`` and optional ``name``, ``timeout``, ``startup()``, ``shutdown()``);
            plain functions run in the loop thread's shared executor.
        mode: ``"parallel"`` (all get the same input, run concurrently, fields merged in the
            order given) or ``"sequential"`` (each sees the event enriched so far).
        timeout: seconds each enricher may take (None: no limit); an enricher's own
            ``timeout`` (attribute or :func:`loopthread.enricher`) overrides it.
        loop_thread: where to run (None: ``loopthread.default()``, looked up at first use).
        on_unavailable: what ``enrich_sync`` does when the loop is unavailable or its overall
            timeout expires: ``"passthrough"`` returns a copy of the event (counted as
            degraded), ``"raise"`` raises.
        failure_threshold: consecutive failures or timeouts that open an enricher's circuit
            (None: never open it).
        cooldown: seconds an open circuit skips the enricher before one trial call.
        hook_timeout: seconds each ``startup()`` and ``shutdown()`` may take.
        clock: the circuit breaker's clock (``time.monotonic``; injectable for tests).
        name: names the chain in stats, logs and metrics.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        enrichers: Iterable[Enricher],
        *,
        mode: Literal["parallel", "sequential"] = "parallel",
        timeout: float | None = 0.1,
        loop_thread: LoopThread | None = None,
        on_unavailable: Literal["passthrough", "raise"] = "passthrough",
        failure_threshold: int | None = 5,
        cooldown: float = 30.0,
        hook_timeout: float | None = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        from loopthread._loopthread import LoopThread

        self._mode = check_choice(mode, "mode", ("parallel", "sequential"))
        default_timeout = check_timeout(timeout)
        self._raise = (
            check_choice(on_unavailable, "on_unavailable", ("passthrough", "raise")) == "raise"
        )
        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            close_awaitables([enrichers])
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        if failure_threshold is not None:
            check_positive_int(failure_threshold, "failure_threshold")
        cooldown_s = check_timeout(cooldown, "cooldown")
        if cooldown_s is None:
            raise ValueError(
                "cooldown must be a finite number of seconds; to never skip a failing "
                "enricher, pass failure_threshold=None instead."
            )
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds; got {clock!r}.")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
        self._slots = _make_slots(enrichers, default_timeout)
        self._name = name or f"chain-{next(_chain_ids)}"
        self._parallel = self._mode == "parallel"
        self._loop_thread = loop_thread
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._hook_timeout = check_timeout(hook_timeout, "hook_timeout")
        self._clock = clock
        self._has_hooks = any(
            callable(getattr(s.target, "startup", None))
            or callable(getattr(s.target, "shutdown", None))
            for s in self._slots
        )

        # Bound to one loop at a time (the default loop is replaced after fork or death).
        self._bound: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = not self._has_hooks
        self._startup_task: asyncio.Task[None] | None = None

        self._events = 0
        self._startup_failures = 0
        self._degraded = 0
        self._degraded_lock = _process.fork_safe_lock()
        self._log_limiter = RateLimiter()  # loop thread only
        self._degraded_limiter = RateLimiter()  # under _degraded_lock

        if loop_thread is not None:
            # Seen by metrics from the start; a loop that is already stopping refuses it, and
            # enrich() on it fails over to passthrough anyway.
            with contextlib.suppress(LoopNotRunningError):
                loop_thread.components.attach(self)

    # ------------------------------------------------------------------ public

    @property
    def name(self) -> str:
        """The chain's name (stats, logs, metrics)."""
        return self._name

    async def enrich(self, event: Event) -> dict[str, Any]:
        """Run the enrichers on ``event`` and return a new dict with their fields merged in.

        Must be awaited on the chain's loop (in a coroutine run by ``lt.run``/``lt.submit``).
        Enricher faults never propagate: they are counted, logged, and contribute nothing.

        Raises:
            TypeError: ``event`` is not a mapping.
            LoopThreadError: awaited on another event loop than the chain's loop thread.
        """
        if type(event) is not dict and not isinstance(event, Mapping):
            raise TypeError(
                f"enrich() takes a mapping such as a dict; got {type(event).__name__}. "
                "Pass the event's fields as a dict: chain.enrich({'user_id': 42})."
            )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        if not self._started:
            await self._ensure_started(loop)
        self._events += 1
        if self._parallel:
            base = dict(event)
            results = await self._run_parallel(base, loop)
            out = dict(base)  # enrichers timed out in the executor may still read `base`
            for fields in results:
                if fields:
                    out.update(fields)
            return out
        current = dict(event)
        for slot in self._slots:
            started = self._start(slot, current)
            fields = (
                await self._finish(started, loop) if isinstance(started, _Suspended) else started
            )
            if fields:
                current = {**current, **fields}
        return current

    def enrich_sync(self, event: Event, *, timeout: float | None = None) -> dict[str, Any]:
        """Enrich ``event`` from synchronous code: run :meth:`enrich` on the loop and wait.

        The caller's contextvars are visible to every enricher. When the loop is unavailable
        (not started, stopped, dead) or ``timeout`` expires, ``on_unavailable="passthrough"``
        returns a copy of ``event`` (counted in ``stats().degraded``, logged rate-limited) and
        ``"raise"`` raises. Called on the loop thread itself, where waiting would deadlock,
        passthrough returns the copy at once; ``"raise"`` raises WouldDeadlockError.

        Raises:
            TypeError: ``event`` is not a mapping.
            ValueError: ``timeout`` is negative.
            LoopNotRunningError: the loop is unavailable (``on_unavailable="raise"``).
            TimeoutError: ``timeout`` expired (``on_unavailable="raise"``).
            WouldDeadlockError: called on the loop thread (``on_unavailable="raise"``).
        """
        if type(event) is not dict and not isinstance(event, Mapping):
            raise TypeError(
                f"enrich_sync() takes a mapping such as a dict; got {type(event).__name__}. "
                "Pass the event's fields as a dict: chain.enrich_sync({'user_id': 42})."
            )
        if timeout is not None:
            timeout = check_timeout(timeout)
        try:
            lt = self._loop_thread if self._loop_thread is not None else default()
            if lt.in_loop_thread():
                raise WouldDeadlockError(
                    f"EnricherChain {self._name!r}: enrich_sync() was called on the loop thread "
                    f"of LoopThread {lt.name!r}, where it would wait forever for itself. In "
                    "async code use `await chain.enrich(event)`."
                )
            return lt.run(self.enrich(event), timeout=timeout)
        except (LoopNotRunningError, TimeoutError, WouldDeadlockError) as exc:
            if self._raise:
                raise
            self._degrade(exc)
            return dict(event)

    def stats(self) -> ChainStats:
        """A snapshot of the counters (safe from any thread)."""
        now: float | None = None
        enrichers = []
        for s in self._slots:
            circuit = s.circuit
            if circuit is _Circuit.OPEN:
                now = self._clock() if now is None else now
                if now - s.opened_at >= self._cooldown:
                    circuit = _Circuit.HALF_OPEN
            enrichers.append(
                EnricherStats(
                    name=s.name,
                    calls=s.calls,
                    ok=s.ok,
                    failures=s.failures,
                    timeouts=s.timeouts,
                    skipped=s.skipped,
                    time=s.time,
                    circuit=circuit.value,
                    disabled=s.disabled,
                )
            )
        return ChainStats(
            name=self._name,
            mode=self._mode,
            events=self._events,
            degraded=self._degraded,
            startup_failures=self._startup_failures,
            enrichers=tuple(enrichers),
        )

    def __repr__(self) -> str:
        return (
            f"<EnricherChain {self._name!r} {self._mode} enrichers={len(self._slots)} "
            f"events={self._events} degraded={self._degraded}>"
        )

    # ------------------------------------------------------------------ binding and lifecycle

    @property
    def loop_thread(self) -> LoopThread | None:
        """The LoopThread given at construction (None: the chain follows ``default()``)."""
        return self._loop_thread

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        lt = self._loop_thread
        if lt is None:
            lt = current_default()
        if lt is None or lt.state == "new" or lt.loop is not loop:
            where = f"LoopThread {lt.name!r}" if lt is not None else "loopthread.default()"
            raise LoopThreadError(
                f"EnricherChain {self._name!r} runs on {where}, but enrich() was awaited on "
                "another event loop. From sync code call chain.enrich_sync(event); from another "
                "loop, await asyncio.wrap_future(lt.submit(chain.enrich(event)))."
            )
        if lt is not self._bound:
            # A new loop (the default loop was replaced): startup runs again on it, and stop()
            # of that loop shuts down what started there.
            self._bound = lt
            self._started = not self._has_hooks
            self._startup_task = None
            for slot in self._slots:
                slot.trial = False
                slot.disabled = False
                slot.started = False
            lt.components.attach(self)
        self._loop = loop

    async def _ensure_started(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._startup_task
        if task is None:
            task = loop.create_task(self._startup(), context=contextvars.Context())
            self._startup_task = task
        if not task.done():
            # Shielded: a caller that gives up must not cancel startup for the others.
            await asyncio.shield(task)

    async def _startup(self) -> None:
        hooked = [s for s in self._slots if callable(getattr(s.target, "startup", None))]
        await asyncio.gather(*[self._start_one(s) for s in hooked])
        for slot in self._slots:
            if not callable(getattr(slot.target, "startup", None)) and not slot.disabled:
                slot.started = True
        self._started = True

    # ------------------------------------------------------------------ as a component

    stop_phase: StopPhase = "close"

    async def on_stop(self, deadline: float) -> None:
        """The LoopThread's stop, close phase: every started enricher's ``shutdown()``.

        A startup still running is cancelled first; enrichers whose ``startup()`` finished
        (or that have none) are shut down, concurrently, each bounded by ``hook_timeout``.
        """
        task = self._startup_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=max(CLOSE_FLOOR, deadline - time.monotonic()))
        closing = [
            s for s in self._slots if s.started and callable(getattr(s.target, "shutdown", None))
        ]
        for slot in closing:
            slot.started = False
        if closing:
            await _Shutdown(self._name, closing, self._hook_timeout)(deadline)

    def on_closed(self) -> int:
        """Nothing is queued in a chain."""
        return 0

    def after_fork_in_child(self) -> None:
        """The enrichers were started in the parent's loop: start again in the child."""
        self._bound = None
        self._loop = None
        self._started = not self._has_hooks
        self._startup_task = None
        for slot in self._slots:
            slot.started = False
        self._degraded_lock = _process.fork_safe_lock()

    async def _start_one(self, slot: _Slot) -> None:
        try:
            async with asyncio.timeout(self._hook_timeout):
                result = slot.target.startup()  # type: ignore[attr-defined]
                if inspect.isawaitable(result):
                    await result
            slot.started = True  # from now on stop() shuts it down, whatever else happens
        except BaseException as exc:  # a failed startup disables one enricher
            if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                raise  # the loop is stopping (its own deadline raises TimeoutError)
            slot.disabled = True
            self._startup_failures += 1
            _log(
                "warning",
                "enricher.startup_failed",
                chain=self._name,
                enricher=slot.name,
                error=repr(exc),
                exc_info=exc,
            )

    # ------------------------------------------------------------------ one enricher

    async def _run_parallel(
        self, base: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> list[EnricherResult]:
        # Start the enrichers one by one in this task; those that finish without suspending
        # (a cache hit) need no task at all. At the first one that suspends, every enricher
        # after it gets its own task, and this task carries on with the suspended one, so
        # all I/O overlaps (as with gather) and no coroutine ever moves to another task.
        slots = self._slots
        results: list[EnricherResult] = []
        for index, slot in enumerate(slots):
            started = self._start(slot, base)
            if not isinstance(started, _Suspended):
                results.append(started)
                continue
            tasks = [loop.create_task(self._call(s, base, loop)) for s in slots[index + 1 :]]
            try:
                results.append(await self._finish(started, loop))
                for task in tasks:
                    results.append(await task)
            finally:
                for task in tasks:  # only when this task was cancelled (stop, caller timeout)
                    task.cancel()
            break
        return results

    async def _call(
        self, slot: _Slot, event: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> EnricherResult:
        started = self._start(slot, event)
        if isinstance(started, _Suspended):
            return await self._finish(started, loop)
        return started

    def _start(self, slot: _Slot, event: dict[str, Any]) -> EnricherResult | _Suspended:
        """Admit ``slot`` and run its first step now, in the calling task.

        Returns its fields (None when skipped or faulted), or a :class:`_Suspended` when the
        enricher awaits something: its deadline is only armed then, which keeps a timer off
        the path of enrichers that answer at once.
        """
        trial = False
        if slot.circuit is not _CLOSED or slot.disabled:
            if not self._admit(slot):
                slot.skipped += 1
                return None
            trial = True
        slot.calls += 1
        started = time.perf_counter()
        steps: Generator[Any, Any, Any] | Coroutine[Any, Any, Any]
        try:
            if slot.is_async:
                awaitable = slot.fn(event)
                steps = awaitable if type(awaitable) is CoroutineType else _steps(awaitable)
            else:
                steps = self._in_executor(slot.fn, event)
            yielded = steps.send(None)
        except StopIteration as stop:
            slot.time += time.perf_counter() - started
            return self._outcome(slot, stop.value, None, trial, expired=False)
        except BaseException as exc:  # noqa: BLE001 - enricher faults are isolated
            slot.time += time.perf_counter() - started
            return self._outcome(slot, None, exc, trial, expired=False)
        return _Suspended(slot, steps, yielded, trial, started)

    async def _finish(self, pending: _Suspended, loop: asyncio.AbstractEventLoop) -> EnricherResult:
        """Drive a suspended enricher to its end under its deadline."""
        slot = pending.slot
        deadline = None
        if slot.timeout is not None:
            deadline = asyncio.timeout_at(
                loop.time() + slot.timeout - (time.perf_counter() - pending.started)
            )
        result: object = None
        error: BaseException | None = None
        try:
            if deadline is None:
                result = await _resume(pending.steps, pending.yielded)
            else:
                async with deadline:
                    result = await _resume(pending.steps, pending.yielded)
        except asyncio.CancelledError as exc:
            if not _cancelled_from_outside():
                # The enricher raised CancelledError of its own accord (nobody cancelled this
                # task): a fault like any other, not a reason to fail the whole event.
                error = exc
            else:
                # The caller gave up (enrich_sync's timeout, stop()): not the enricher's fault.
                if pending.trial:
                    slot.trial = False
                slot.time += time.perf_counter() - pending.started
                raise
        except BaseException as exc:  # noqa: BLE001 - enricher faults are isolated
            error = exc
        slot.time += time.perf_counter() - pending.started
        # expired() also catches an enricher that swallowed its cancellation and returned.
        expired = deadline is not None and deadline.expired()
        return self._outcome(slot, result, error, pending.trial, expired=expired)

    def _outcome(
        self,
        slot: _Slot,
        result: object,
        error: BaseException | None,
        trial: bool,
        *,
        expired: bool,
    ) -> EnricherResult:
        if expired:
            self._on_fault(slot, "timeout", None, trial)
            return None
        if error is not None:
            self._on_fault(slot, "error", error, trial)
            return None
        if result is not None and type(result) is not dict and not isinstance(result, Mapping):
            self._on_fault(slot, "invalid", result, trial)
            return None
        slot.ok += 1
        slot.consecutive = 0
        if trial:
            slot.trial = False
        if slot.circuit is not _CLOSED:
            slot.circuit = _CLOSED
            _log("info", "enricher.circuit_closed", chain=self._name, enricher=slot.name)
        return result

    async def _in_executor(self, fn: Enricher, event: dict[str, Any]) -> EnricherResult:
        # run_in_executor does not carry contextvars over: run the function in a copy.
        ctx = contextvars.copy_context()
        result = await asyncio.get_running_loop().run_in_executor(None, ctx.run, fn, event)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    def _admit(self, slot: _Slot) -> bool:
        """Decide whether a disabled or not-closed enricher is called for this event."""
        if slot.disabled:
            return False
        if slot.circuit is _Circuit.OPEN:
            if self._clock() - slot.opened_at < self._cooldown:
                return False
            slot.circuit = _Circuit.HALF_OPEN
        if slot.trial:  # half-open: one trial call at a time
            return False
        slot.trial = True
        return True

    def _on_fault(self, slot: _Slot, kind: str, detail: object, trial: bool) -> None:
        if kind == "timeout":
            slot.timeouts += 1
        else:
            slot.failures += 1
        slot.consecutive += 1
        if trial:
            slot.trial = False
        suppressed = self._log_limiter.allow((slot.name, kind))
        if suppressed is not None:
            fields: dict[str, Any] = {"chain": self._name, "enricher": slot.name}
            if suppressed:
                fields["suppressed"] = suppressed
            if kind == "timeout":
                _log("warning", "enricher.timed_out", timeout=slot.timeout, **fields)
            elif kind == "error":
                assert isinstance(detail, BaseException)
                _log("warning", "enricher.failed", error=repr(detail), exc_info=detail, **fields)
            else:
                _log(
                    "warning",
                    "enricher.invalid_result",
                    result_type=type(detail).__name__,
                    hint="an enricher returns a mapping of new fields, or None",
                    **fields,
                )
        threshold = self._threshold
        if trial or (
            threshold is not None and slot.circuit is _CLOSED and slot.consecutive >= threshold
        ):
            slot.circuit = _Circuit.OPEN
            slot.opened_at = self._clock()
            _log(
                "warning",
                "enricher.circuit_opened",
                chain=self._name,
                enricher=slot.name,
                consecutive_faults=slot.consecutive,
                cooldown=self._cooldown,
                trial_failed=trial,
            )

    def _degrade(self, exc: BaseException) -> None:
        with self._degraded_lock:
            self._degraded += 1
            suppressed = self._degraded_limiter.allow("degraded")
        if suppressed is not None:
            _log(
                "warning",
                "enricher_chain.degraded",
                chain=self._name,
                reason=repr(exc),
                suppressed=suppressed,
            )


class _Suspended:
    """An enricher whose first step awaited something: the rest runs under its deadline."""

    __slots__ = ("slot", "started", "steps", "trial", "yielded")

    def __init__(
        self,
        slot: _Slot,
        steps: Generator[Any, Any, Any] | Coroutine[Any, Any, Any],
        yielded: object,
        trial: bool,
        started: float,
    ) -> None:
        self.slot = slot
        self.steps = steps
        self.yielded = yielded
        self.trial = trial
        self.started = started


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


@types.coroutine
def _resume(
    steps: Generator[Any, Any, Any] | Coroutine[Any, Any, Any], yielded: object
) -> Generator[Any, Any, Any]:
    """Carry on ``await``-ing a coroutine whose first step already ran (PEP 380 delegation).

    What the coroutine yields goes to the running Task unchanged, and what the Task sends or
    throws in (results, CancelledError) goes back to the coroutine, exactly as ``await``.
    """
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - delivered to the coroutine, as await does
            try:
                yielded = steps.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = steps.send(sent)
            except StopIteration as stop:
                return stop.value


class _Shutdown:
    """The "close" stop hook of a chain: every started enricher's shutdown(), concurrently."""

    __slots__ = ("_chain", "_hook_timeout", "_slots")

    def __init__(self, chain: str, slots: list[_Slot], hook_timeout: float | None) -> None:
        self._chain = chain
        self._slots = slots
        self._hook_timeout = hook_timeout

    async def __call__(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        limit = self._hook_timeout
        if not math.isinf(remaining):
            # Never less than the core's floor: a zero limit would cancel each shutdown before
            # its first line, skipping it entirely.
            floor = max(CLOSE_FLOOR, remaining)
            limit = floor if limit is None else min(limit, floor)
        await asyncio.gather(*[self._one(s, limit) for s in self._slots])

    async def _one(self, slot: _Slot, limit: float | None) -> None:
        try:
            async with asyncio.timeout(limit):
                result = slot.target.shutdown()  # type: ignore[attr-defined]
                if inspect.isawaitable(result):
                    await result
        except BaseException as exc:  # one failing shutdown must not skip the others
            if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                raise
            _log(
                "warning",
                "enricher.shutdown_failed",
                chain=self._chain,
                enricher=slot.name,
                error=repr(exc),
            )


def _log(level: str, event: str, **fields: Any) -> None:
    try:
        getattr(logger, level)(event, **fields)
    except Exception:  # noqa: BLE001 - a broken log setup must not break enrichment
        pass


def _cancelled_from_outside() -> bool:
    """True when this task was cancelled (stop(), a caller's timeout); False when the code it
    ran raised CancelledError of its own accord, which is a fault like any other."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
