"""One enricher in a chain: how it was given, how it is called, what it counted.

An enricher is any callable ``(event) -> Mapping | None``: an ``async def`` function, an object
with an async ``__call__`` (and optionally ``name``, ``timeout``, ``max_concurrency``,
``async startup()``, ``async shutdown()``), or a plain function, which runs in the loop
thread's shared executor. An object that is not callable but has an ``enrich(event)`` method
and ``start()``/``stop()`` hooks (fapilog's enricher protocol) is taken as it is.
:func:`enricher` gives one its own name, timeout and concurrency limit; :func:`make_slots`
turns the list given to a chain into :class:`Slot` objects, each with its counters, its
circuit breaker and its places (``max_concurrency``).

Also here, because every module of the chain needs them: :func:`log`, which never lets a
broken log setup break enrichment, and :func:`cancelled_from_outside`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from loopthread._enrich._breaker import CircuitBreaker
from loopthread._log import logger
from loopthread._stats import EnricherStats
from loopthread._validate import check_positive_int, check_timeout, close_awaitables

if TYPE_CHECKING:
    from loopthread._enrich._deadlines import Deadlines

__all__ = [
    "Configured",
    "EnrichMethod",
    "Enricher",
    "EnricherCallable",
    "EnricherResult",
    "Event",
    "Slot",
    "cancelled_from_outside",
    "enricher",
    "log",
    "make_slots",
]

Event: TypeAlias = Mapping[str, Any]
EnricherResult: TypeAlias = Mapping[str, Any] | None


class EnrichMethod(Protocol):
    """fapilog's enricher shape: an object with an (async) ``enrich(event)`` method."""

    def enrich(self, event: Any, /) -> Any:
        """Return the fields to add to ``event``."""


EnricherCallable: TypeAlias = Callable[[Event], Awaitable[EnricherResult] | EnricherResult]
Enricher: TypeAlias = EnricherCallable | EnrichMethod


class Configured:
    """What :func:`enricher` returns: the callable plus its chain-level settings."""

    __slots__ = ("fn", "max_concurrency", "name", "timeout")

    def __init__(
        self, fn: Enricher, name: str | None, timeout: float | None, max_concurrency: int | None
    ) -> None:
        self.fn = fn
        self.name = name
        self.timeout = timeout
        self.max_concurrency = max_concurrency

    def __call__(self, event: Event) -> Awaitable[EnricherResult] | EnricherResult:
        fn = self.fn
        return fn(event) if callable(fn) else fn.enrich(event)

    def __repr__(self) -> str:
        return (
            f"enricher({self.fn!r}, name={self.name!r}, timeout={self.timeout!r}, "
            f"max_concurrency={self.max_concurrency!r})"
        )


def enricher(
    fn: Enricher,
    *,
    name: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
) -> Enricher:
    """Give an enricher its own name (for stats and logs), timeout and concurrency in a chain.

    ``timeout=None`` keeps the chain's timeout; ``timeout=math.inf`` means no limit. The
    timeout runs from the enricher's start: time spent waiting for a place does not count.
    ``max_concurrency`` is how many calls of this enricher may run at once (a connection pool's
    size; None keeps the chain's ``max_concurrency``); the others wait for a place, in order,
    and their wait is counted apart (``EnricherStats.queued``, ``queue_time``). An enricher
    object can say the same with ``name``, ``timeout`` and ``max_concurrency`` attributes.

    Raises:
        TypeError: ``fn`` is not callable, ``name`` is not a str, ``timeout`` not a number,
            or ``max_concurrency`` not an int.
        ValueError: ``timeout`` is negative, or ``max_concurrency`` below 1.
    """
    if not callable(fn) and not callable(getattr(fn, "enrich", None)):
        close_awaitables([fn])
        raise TypeError(
            f"loopthread.enricher() takes the enricher function itself; got {type(fn).__name__}. "
            "Pass loopthread.enricher(lookup_user), not loopthread.enricher(lookup_user(event))."
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str or None; got {name!r}.")
    if timeout is not None:
        check_timeout(timeout)
    if max_concurrency is not None:
        check_positive_int(max_concurrency, "max_concurrency")
    return Configured(fn, name, timeout, max_concurrency)


class Slot:
    """One enricher in a chain: how to call it, its counters, its circuit and its places."""

    __slots__ = (
        "active",
        "breaker",
        "calls",
        "deadlines",
        "disabled",
        "failures",
        "fn",
        "is_async",
        "limit",
        "name",
        "ok",
        "queue_time",
        "queued",
        "shutdown",
        "skipped",
        "started",
        "startup",
        "target",
        "time",
        "timeout",
        "timeouts",
        "waiters",
    )

    def __init__(
        self,
        fn: EnricherCallable,
        target: object,
        name: str,
        timeout: float | None,
        is_async: bool,
        *,
        breaker: CircuitBreaker,
        limit: int | None = None,
    ) -> None:
        self.fn = fn
        self.target = target  # the object that may have startup() / shutdown()
        self.name = name
        self.timeout = timeout
        self.is_async = is_async
        self.startup = _hook(target, "startup", "start")
        self.shutdown = _hook(target, "shutdown", "stop")
        self.calls = 0
        self.ok = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped = 0
        self.time = 0.0
        self.breaker = breaker
        self.disabled = False
        self.started = False  # startup() finished (or none): shutdown() is owed at stop
        # max_concurrency: calls running (``active``, at most ``limit``) and the futures of
        # those waiting for a place, first come first served (loop thread only).
        self.limit = limit
        self.active = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.queued = 0
        self.queue_time = 0.0
        # The deadlines of its calls in flight (with a timeout), on the loop they run on.
        self.deadlines: Deadlines | None = None

    def stats(self, now: float) -> EnricherStats:
        """A snapshot of the counters; ``now`` is the breaker's clock (read only if open)."""
        return EnricherStats(
            name=self.name,
            calls=self.calls,
            ok=self.ok,
            failures=self.failures,
            timeouts=self.timeouts,
            skipped=self.skipped,
            time=self.time,
            circuit=self.breaker.state_at(now).value,
            disabled=self.disabled,
            queued=self.queued,
            queue_time=self.queue_time,
            max_concurrency=self.limit,
        )

    def reset_places(self) -> None:
        """A new loop: the calls and waiters of the old one will never give their places back."""
        self.active = 0
        self.waiters.clear()
        self.deadlines = None


def _hook(target: object, name: str, alias: str) -> Callable[[], object] | None:
    """``target.startup`` (or fapilog's ``start``), if callable; the same for shutdown/stop."""
    for attribute in (name, alias):
        hook = getattr(target, attribute, None)
        if callable(hook):
            return hook  # type: ignore[no-any-return]
    return None


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


def _enricher_limit(value: object, name: str, default: int | None) -> int | None:
    if value is None:
        return default
    try:
        return check_positive_int(value, f"max_concurrency of enricher {name!r}")
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"{exc} An enricher's `max_concurrency` is how many of its calls may run at once "
            "(None: no limit)."
        ) from None


def make_slots(
    enrichers: object,
    default_timeout: float | None,
    breaker: Callable[[], CircuitBreaker],
    default_limit: int | None = None,
) -> list[Slot]:
    """The slots of a chain's ``enrichers``, each with a new ``breaker()``.

    Raises:
        TypeError, ValueError: ``enrichers`` is not a list of callables, or a ``timeout`` or
            ``max_concurrency`` attribute is not valid.
    """
    if isinstance(enrichers, str | bytes | Mapping) or not isinstance(enrichers, Iterable):
        close_awaitables([enrichers])
        raise TypeError(
            "enrichers must be a list of enrichers (async functions or objects with an async "
            f"__call__); got {type(enrichers).__name__}. Pass EnricherChain([lookup_user])."
        )
    items = list(enrichers)
    slots: list[Slot] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if not callable(item) and not callable(getattr(item, "enrich", None)):
            close_awaitables(items)
            hint = (
                " It is a coroutine: pass the async function itself, not a call of it."
                if inspect.iscoroutine(item)
                else ""
            )
            raise TypeError(
                f"enrichers[{index}] is not callable: got {type(item).__name__}.{hint} An "
                "enricher is an async callable (event) -> mapping | None (or an object with "
                "an async enrich(event) method)."
            )
        settings: object = item
        if isinstance(item, Configured):
            target: object = item.fn
            name = item.name or _default_name(target)
        else:
            target = settings = item
            name = _default_name(item)
        timeout = _enricher_timeout(getattr(settings, "timeout", None), name, default_timeout)
        limit = _enricher_limit(getattr(settings, "max_concurrency", None), name, default_limit)
        # Names label stats and metrics, so they must be unique in a chain.
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            name = f"{name}#{count}"
        # fapilog's protocol: an object with enrich(event) rather than __call__.
        fn: EnricherCallable = target if callable(target) else target.enrich  # type: ignore[attr-defined]
        slots.append(
            Slot(
                fn,
                target,
                name,
                timeout,
                _is_async_callable(fn),
                breaker=breaker(),
                limit=limit,
            )
        )
    return slots


# ---------------------------------------------------------------------- shared by the chain


def log(level: str, event: str, **fields: Any) -> None:
    """``logger.<level>(event, **fields)``; a broken log setup must not break enrichment."""
    try:
        getattr(logger, level)(event, **fields)
    except Exception:  # noqa: BLE001 - a broken log setup must not break enrichment
        pass


def cancelled_from_outside() -> bool:
    """True when this task was cancelled (stop(), a caller's timeout); False when the code it
    ran raised CancelledError of its own accord, which is a fault like any other."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
