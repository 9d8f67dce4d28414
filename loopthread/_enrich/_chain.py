"""EnricherChain: the public face of a chain: its configuration, ``enrich``/``enrich_sync``,
its stats, its binding to a loop, and its part in the LoopThread's lifecycle.

Design notes (why it is built this way):

* Everything a chain counts is written on the loop thread only (the one exception, the
  ``degraded`` count, is written by callers of ``enrich_sync`` under a lock), so the hot path
  takes no lock; ``stats()`` reads plain ints from any thread.
* The work is done by parts with one concern each: :class:`~loopthread._enrich._eager.Runner`
  calls the enrichers (eagerly, see its module) and records each outcome; every enricher's
  :class:`~loopthread._enrich._breaker.CircuitBreaker` decides whether it is called;
  :class:`~loopthread._enrich._hooks.Lifecycle` runs ``startup()`` and ``shutdown()``.
* A chain is bound to one loop at a time: the one of the LoopThread it was given, or of
  ``loopthread.default()``, which is replaced after fork or death; on a new loop the enrichers
  start again and that loop's ``stop()`` shuts down what started there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from loopthread import _process
from loopthread._core._component import ComponentBase, StopPhase
from loopthread._default import current_default, default
from loopthread._enrich._breaker import OPEN, CircuitBreaker
from loopthread._enrich._eager import Pending, Runner
from loopthread._enrich._hooks import Lifecycle
from loopthread._enrich._merge import MergeFunction, Merger, check_merge
from loopthread._enrich._slots import Enricher, EnricherResult, Event, log, make_slots
from loopthread._enrich._within import run_within
from loopthread._exceptions import LoopNotRunningError, LoopThreadError, WouldDeadlockError
from loopthread._log import RateLimiter
from loopthread._stats import ChainStats
from loopthread._util import describe
from loopthread._validate import check_choice, check_positive_int, check_timeout, close_awaitables

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["EnricherChain", "run_within"]

_chain_ids = itertools.count(1)


def _copied(event: Event) -> dict[str, Any]:
    # dict.copy() copies a record's __dict__ (a split table) 6x faster than dict() rebuilds it.
    return event.copy() if type(event) is dict else dict(event)


def _check_options(
    failure_threshold: object,
    max_concurrency: object,
    cooldown: float,
    clock: object,
    name: object,
) -> float:
    """Check the chain's options that need no other; return ``cooldown`` in seconds.

    Raises:
        TypeError, ValueError: an option is of the wrong type or out of range.
    """
    if failure_threshold is not None:
        check_positive_int(failure_threshold, "failure_threshold")
    if max_concurrency is not None:
        check_positive_int(max_concurrency, "max_concurrency")
    seconds = check_timeout(cooldown, "cooldown")
    if seconds is None:
        raise ValueError(
            "cooldown must be a finite number of seconds; to never skip a failing "
            "enricher, pass failure_threshold=None instead."
        )
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds; got {clock!r}.")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
    return seconds


class EnricherChain(ComponentBase):
    """Runs enrichers on the loop thread's loop and merges their fields into a new dict.

    Args:
        enrichers: async callables ``(event) -> Mapping | None`` (or objects with an async
            ``__call__`` and optional ``name``, ``timeout``, ``startup()``, ``shutdown()``);
            plain functions run in the loop thread's shared executor.
        mode: ``"parallel"`` (all get the same input, run concurrently, fields merged in the
            order given) or ``"sequential"`` (each sees the event enriched so far).
        merge: how each enricher's fields go into the event: ``"flat"`` (``dict.update``: the
            later enricher wins a key), ``"deep"`` (nested mappings merged key by key, e.g.
            fapilog's ``context`` groups), or a plain function ``(event, fields) -> mapping``
            returning the merged event (it may update the dict it gets and return it).
        timeout: seconds each enricher may take (None: no limit), from its start (a wait for
            a place, see ``max_concurrency``, does not count); an enricher's own ``timeout``
            (attribute or :func:`loopthread.enricher`) overrides it.
        max_concurrency: how many calls of each enricher may run at once (None: no limit);
            the others wait for a place in order. An enricher's own ``max_concurrency``
            (attribute or :func:`loopthread.enricher`) overrides it.
        loop_thread: where to run (None: ``loopthread.default()``, looked up at first use).
        on_unavailable: what ``enrich_sync`` does when the loop is unavailable or its overall
            timeout expires: ``"passthrough"`` returns a copy of the event (counted as
            degraded), ``"raise"`` raises.
        failure_threshold: consecutive failures or timeouts that open an enricher's circuit
            (None: never open it); calls that overlap count once (a burst is one fault).
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
        merge: Literal["flat", "deep"] | MergeFunction = "flat",
        timeout: float | None = 0.1,
        max_concurrency: int | None = None,
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
        merge_function = check_merge(merge)
        default_timeout = check_timeout(timeout)
        self._raise = (
            check_choice(on_unavailable, "on_unavailable", ("passthrough", "raise")) == "raise"
        )
        if loop_thread is not None and not isinstance(loop_thread, LoopThread):
            close_awaitables([enrichers])
            raise TypeError(
                f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
            )
        cooldown_s = _check_options(failure_threshold, max_concurrency, cooldown, clock, name)
        breaker = functools.partial(CircuitBreaker, failure_threshold, cooldown_s, clock)
        self._slots = make_slots(enrichers, default_timeout, breaker, max_concurrency)
        self._name = name or f"chain-{next(_chain_ids)}"
        self._parallel = self._mode == "parallel"
        self._loop_thread = loop_thread
        hook_timeout = check_timeout(hook_timeout, "hook_timeout")
        self._clock = clock
        self._runner = Runner(self._name, self._slots)
        self._merger = (
            None if merge_function is None else Merger(self._name, self._slots, merge_function)
        )
        self._hooks = Lifecycle(self._name, self._slots, hook_timeout)

        # Bound to one loop at a time (the default loop is replaced after fork or death).
        self._bound: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

        self._events = 0
        self._degraded = 0
        self._degraded_lock = _process.fork_safe_lock()
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
        if loop is not self._loop or not self._hooks.started:
            await self._ready()
        self._events += 1
        merger = self._merger
        if self._parallel:
            base = _copied(event)
            results = await self._runner.parallel(base, loop)
            out = base.copy()  # enrichers timed out in the executor may still read `base`
            for index, fields in enumerate(results):
                if fields:
                    if merger is None:
                        out.update(fields)
                    else:
                        out = merger.merge(out, fields, index)
            return out
        current = _copied(event)
        runner = self._runner
        for index, slot in enumerate(self._slots):
            started = runner.start(slot, current)
            fields = await runner.finish(started, loop) if isinstance(started, Pending) else started
            if fields:
                # A new dict each time: an enricher timed out in the executor may still read
                # the one it was given.
                if merger is None:
                    current = {**current, **fields}
                else:
                    current = merger.merge(dict(current), fields, index)
        return current

    # Not public: for LoopHandler, which enriches batches and sets the fields itself.

    @property
    def _flat(self) -> bool:
        """Parallel, with ``merge="flat"``: then :meth:`_fields` can stand in for :meth:`enrich`."""
        return self._parallel and self._merger is None

    async def _ready(self) -> None:
        """Bind to the running loop and start the enrichers there (once): what :meth:`enrich`
        does first, for callers of :meth:`_fields`.

        Raises:
            LoopThreadError: awaited on another event loop than the chain's loop thread.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        if not self._hooks.started:
            await self._hooks.ensure_started(loop)

    def _fields(self, event: Event) -> Coroutine[Any, Any, list[EnricherResult]]:
        """What each enricher returns for ``event`` (None: nothing), in the chain's order: a
        :attr:`_flat` chain's :meth:`enrich` without the merge. On the loop, after :meth:`_ready`.
        """
        self._events += 1
        assert self._loop is not None
        return self._runner.parallel(_copied(event), self._loop)

    def enrich_sync(self, event: Event, *, timeout: float | None = None) -> dict[str, Any]:
        """Enrich ``event`` from synchronous code: run :meth:`enrich` on the loop and wait.

        The caller's contextvars are visible to every enricher. The call never waits longer
        than ``timeout``: on expiry the chain is cancelled on the loop and this returns at once
        (the enrichers' cleanup runs on the loop, not awaited here; ``lt.run(timeout=)`` would
        wait ``cancel_grace`` for it). When the loop is unavailable (not started, stopped, dead)
        or ``timeout`` expires, ``on_unavailable="passthrough"``
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
            return run_within(lt, self.enrich(event), timeout)
        except (LoopNotRunningError, TimeoutError, WouldDeadlockError) as exc:
            if self._raise:
                raise
            self._degrade(exc)
            return dict(event)

    def stats(self) -> ChainStats:
        """A snapshot of the counters (safe from any thread)."""
        now = self._clock() if any(s.breaker.state is OPEN for s in self._slots) else 0.0
        return ChainStats(
            name=self._name,
            mode=self._mode,
            events=self._events,
            degraded=self._degraded,
            startup_failures=self._hooks.failures,
            enrichers=tuple(s.stats(now) for s in self._slots),
            merge_failures=0 if self._merger is None else self._merger.failures,
        )

    def __repr__(self) -> str:
        return (
            f"<EnricherChain {self._name!r} {self._mode} enrichers={len(self._slots)} "
            f"events={self._events} degraded={self._degraded}>"
        )

    # ------------------------------------------------------------------ binding to a loop

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
            self._hooks.reset()
            for slot in self._slots:
                slot.breaker.release()  # a trial in flight on the old loop never reports
                slot.disabled = False
                slot.reset_places()
            # A loop that is stopping refuses new components: the chain still enriches what it
            # drains (its enrichers' shutdown() is then not owed by this stop).
            with contextlib.suppress(LoopNotRunningError):
                lt.components.attach(self)
        self._loop = loop

    # ------------------------------------------------------------------ as a component

    stop_phase: StopPhase = "close"

    async def on_stop(self, deadline: float) -> None:
        """The LoopThread's stop, close phase: every started enricher's ``shutdown()``.

        A startup still running is cancelled first; enrichers whose ``startup()`` finished
        (or that have none) are shut down, concurrently, each bounded by ``hook_timeout``.
        """
        await self._hooks.shutdown(deadline)

    def on_closed(self) -> int:
        """Nothing is queued in a chain."""
        return 0

    def after_fork_in_child(self) -> None:
        """The enrichers were started in the parent's loop: start again in the child."""
        self._bound = None
        self._loop = None
        self._hooks.reset()
        self._degraded_lock = _process.fork_safe_lock()

    def _degrade(self, exc: BaseException) -> None:
        with self._degraded_lock:
            self._degraded += 1
            suppressed = self._degraded_limiter.allow("degraded")
        if suppressed is not None:
            log(
                "warning",
                "enricher_chain.degraded",
                chain=self._name,
                reason=describe(exc),
                suppressed=suppressed,
            )
