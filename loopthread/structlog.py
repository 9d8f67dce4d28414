"""structlog processors: async enrichment for sync loggers, and offloading the rest of a chain.

``enrich(chain)`` runs an ``EnricherChain`` for each event from inside a synchronous structlog
logger and merges the fields in. A log call waits at most ``timeout``: on timeout, with no
loop, or in a thread that runs an event loop (where it does not wait at all), the event goes
on unchanged and the degradation is counted. loopthread's own events pass through untouched.

``offload(*processors, sink=...)`` ends the caller's processor chain with a ``put`` into a
channel; the given processors (renderers, say) and the sink run on the loop thread, so the
application thread pays only for the hand-off. Put ``structlog.contextvars.merge_contextvars``
and anything else that reads the caller's thread state *before* ``offload``.

The processors themselves live in ``loopthread._structlog`` (one module each).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loopthread._structlog._enrich import EnrichProcessor, EnrichStats
from loopthread._structlog._offload import OffloadProcessor, OffloadStats, Processor
from loopthread._validate import check_choice, check_positive_int, check_timeout

if TYPE_CHECKING:
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = [
    "EnrichProcessor",
    "EnrichStats",
    "OffloadProcessor",
    "OffloadStats",
    "enrich",
    "offload",
]

_offload_ids = itertools.count(1)


def enrich(chain: EnricherChain, *, timeout: float | None = 0.05) -> EnrichProcessor:
    """A structlog processor that merges ``chain``'s fields into each event dict.

    The caller waits up to ``timeout`` seconds (None: no limit) for the chain, never longer: on
    timeout the chain is cancelled on the loop without waiting for its cleanup. On timeout,
    with no running loop, or in a thread that runs an event loop (async code, the loop thread
    itself: there it does not wait at all) the event goes on unchanged, counted in
    ``stats()`` by reason and in the chain's ``stats().degraded``. loopthread's own events go
    through untouched (``stats().own_events``). The caller's contextvars are visible to the
    enrichers.

    Raises:
        TypeError: ``chain`` is not an ``EnricherChain``, or ``timeout`` is not a number.
        ValueError: ``timeout`` is negative.
    """
    from loopthread._enrich import EnricherChain

    if not isinstance(chain, EnricherChain):
        raise TypeError(
            "loopthread.structlog.enrich() takes an EnricherChain: "
            f"enrich(loopthread.EnricherChain([...])); got {type(chain).__name__}."
        )
    return EnrichProcessor(chain, check_timeout(timeout))


def offload(
    *processors: Processor,
    sink: Callable[..., Any],
    loop_thread: LoopThread | None = None,
    maxsize: int = 10_000,
    overflow: str = "block",
    batch_size: int = 256,
) -> OffloadProcessor:
    """A structlog processor that hands the event to the loop and drops it from the caller.

    On the loop thread, ``processors`` run on each event in order (as in a structlog chain),
    then ``sink`` gets the result: an ``async def sink(batch: list)`` receives whole batches on
    the loop; a plain callable is called once per event, in the loop thread's shared executor
    (it may block). Events keep their order. A processor or sink that raises costs the events
    it was given, counted in ``stats().failed`` and logged (rate-limited). With no running loop
    (after ``stop()``, at interpreter exit) the processors and sink run in the caller's thread.

    Args:
        *processors: structlog processors to run on the loop (a renderer, usually last).
        sink: where the results go.
        loop_thread: the LoopThread to use (None: ``loopthread.default()``, looked up at the
            first event and again after it was replaced).
        maxsize: the channel's ``maxsize`` (see :meth:`loopthread.LoopThread.channel`).
        overflow: the channel's ``overflow`` policy.
        batch_size: the channel's ``batch_size``.

    Raises:
        TypeError: ``sink`` or a processor is not callable, or ``loop_thread`` is not a
            LoopThread.
        ValueError: bad channel options.
    """
    if not callable(sink):
        raise TypeError(
            "offload(..., sink=...) needs a callable: an `async def sink(batch)` or a plain "
            f"function taking one rendered event (e.g. print); got {type(sink).__name__}."
        )
    for processor in processors:
        if not callable(processor):
            raise TypeError(
                f"offload() takes structlog processors (callables) as positional arguments; "
                f"got {processor!r}. Pass the sink as sink=..."
            )
    from loopthread._loopthread import LoopThread

    if loop_thread is not None and not isinstance(loop_thread, LoopThread):
        raise TypeError(
            f"loop_thread must be a LoopThread or None (the default loop); got {loop_thread!r}."
        )
    options = {
        "maxsize": check_positive_int(maxsize, "maxsize"),
        "overflow": check_choice(
            overflow, "overflow", ("block", "drop_newest", "drop_oldest", "error")
        ),
        "batch_size": check_positive_int(batch_size, "batch_size"),
        "name": f"structlog.offload-{next(_offload_ids)}",
    }
    return OffloadProcessor(processors, sink, loop_thread, options)
