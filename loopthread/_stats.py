"""The plain data that components report: what metrics, ``__repr__`` and tests read.

Kept apart from the components themselves so that readers of the data (metrics) need not
import the machinery that produces it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChainStats", "ChannelStats", "EnricherStats"]


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A snapshot of a channel's counters (plain data; metrics are derived from it).

    Each field is read atomically, the snapshot as a whole is not; once the channel is idle
    (after ``flush()`` or ``close()``) every item given to ``put`` is accounted for exactly once:

        put == handled + failed + dropped + unhandled + depth + in_flight

    Each ``put`` interrupted by Ctrl-C (KeyboardInterrupt) can leave this off by one: between
    counting its item and queueing it, or, with ``"drop_oldest"``, between evicting an item
    and counting the eviction. ``flush()`` and ``close()`` still complete.

    Attributes:
        name: the channel's name.
        put: ``put``/``aput`` calls that returned (True: accepted, False: dropped by policy).
        handled: items passed to a handler call that returned normally.
        dropped: items dropped by the overflow policy: refused by ``"drop_newest"``, evicted by
            ``"drop_oldest"``, or a ``"block"`` put whose ``timeout`` expired.
        failed: items passed to a handler call that raised (the error is logged).
        depth: items waiting in the channel now.
        high_water: the largest depth seen (sampled by the consumer and on the full path).
        in_flight: items in the handler call running now.
        unhandled: accepted items the channel could not handle before it closed (deadline
            reached, the loop stopped, or a put raced with ``close()``).
        rejected: ``put`` calls that raised ``ChannelFullError`` (policy ``"error"``).
        over_limit: items admitted past ``maxsize`` because a ``"block"`` put came from the
            loop thread, where waiting would freeze the consumer.
        batches: handler calls made.
        wakeups: idle-to-busy wake-ups of the consumer (each one call_soon_threadsafe).
        maxsize: the configured bound.
        overflow: the configured policy.
        closed: True once the channel stopped accepting items.
    """

    name: str
    put: int
    handled: int
    dropped: int
    failed: int
    depth: int
    high_water: int
    in_flight: int = 0
    unhandled: int = 0
    rejected: int = 0
    over_limit: int = 0
    batches: int = 0
    wakeups: int = 0
    maxsize: int = 0
    overflow: str = "block"
    closed: bool = False


@dataclass(frozen=True, slots=True)
class EnricherStats:
    """Counters of one enricher in a chain.

    ``calls`` counts invocations (a call cut short by the caller giving up is in ``calls`` but
    in none of ``ok``, ``failures``, ``timeouts``). ``failures`` counts enrichers that raised or
    returned something other than a mapping or None. ``skipped`` counts events the enricher was
    not called for: its circuit was open or it is disabled. ``time`` is the total wall time
    spent in calls, in seconds, not counting waits for a place. ``circuit`` is ``"closed"``,
    ``"open"`` or ``"half_open"`` (cool-down over: the next call is a trial). ``disabled``: its
    ``startup()`` failed. ``queued``: calls that had to wait for a place (all
    ``max_concurrency`` places taken); ``queue_time``: the seconds they waited, in total.
    """

    name: str
    calls: int
    ok: int
    failures: int
    timeouts: int
    skipped: int
    time: float
    circuit: str
    disabled: bool
    queued: int = 0
    queue_time: float = 0.0
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ChainStats:
    """A snapshot of an EnricherChain's counters (plain data; metrics are derived from it).

    ``events``: events that entered ``enrich`` on the loop. ``degraded``: events that
    ``enrich_sync`` returned unenriched because the loop was unavailable or the overall timeout
    expired (``on_unavailable="passthrough"``). ``startup_failures``: enrichers disabled because
    their ``startup()`` failed. ``merge_failures``: enricher results left out because the
    chain's ``merge`` function raised or returned something other than a mapping.
    """

    name: str
    mode: str
    events: int
    degraded: int
    startup_failures: int
    enrichers: tuple[EnricherStats, ...]
    merge_failures: int = 0
