"""The ``enrich`` processor: an EnricherChain's fields merged into each event, within a bound.

Design notes (why it is built this way):

* A log call never waits longer than ``timeout`` (plus the cost of a hand-off): the chain is
  submitted to the loop and the caller waits on the future for ``timeout``; on expiry it cancels
  the future, which cancels the chain on the loop, and goes on at once. It does not wait for the
  enrichers' cleanup (``lt.run(timeout=)`` would give it ``cancel_grace``: a busy loop turned a
  50 ms budget into a second or more).
* A thread that runs an event loop (async code, or the chain's own loop thread) is never made
  to wait: the event goes on unenriched at once, counted (``in_event_loop``). Waiting there
  would stall every task of that loop for each log call.
* loopthread's own events (``loopthread._log.own_event()``) go through untouched and are
  counted apart (``own_events``): enriching them would wait for the very loop that logs them,
  and the ``enricher_chain.degraded`` warning this processor causes must not come back into it.
* Counters written from several threads are ``itertools.count`` objects (``next()`` is one
  atomic C call), so the hot path takes no lock.
"""

from __future__ import annotations

import itertools
from asyncio import events
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopthread._enrich._chain import run_within
from loopthread._exceptions import LoopNotRunningError, WouldDeadlockError
from loopthread._log import own_event

if TYPE_CHECKING:
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = ["EnrichProcessor", "EnrichStats", "peek"]

EventDict = MutableMapping[str, Any]

_IN_EVENT_LOOP = WouldDeadlockError(
    "enrich() was called in a thread that runs an event loop (async code, or the loop thread "
    "itself), where waiting would block that loop: the event went on without the async fields. "
    "In async code, `await chain.enrich(fields)` yourself, or log through "
    "loopthread.logging.LoopHandler(enrichers=chain), which enriches on the loop."
)


def peek(counter: itertools.count[int]) -> int:
    """The next value of ``counter`` without taking it (its repr is "count(N)")."""
    return int(repr(counter)[6:-1])


@dataclass(frozen=True, slots=True)
class EnrichStats:
    """Counts of an ``enrich`` processor: ``events`` = ``enriched`` + ``degraded``.

    ``degraded``: events passed on without the async fields, by reason: ``timeouts`` (the
    chain took longer than ``timeout``), ``unavailable`` (no loop was running),
    ``in_event_loop`` (logged in a thread running an event loop, where waiting would block
    it), ``errors`` (anything else). ``own_events``: loopthread's own events, passed on
    untouched and not counted in ``events``.
    """

    events: int
    enriched: int
    degraded: int
    timeouts: int = 0
    unavailable: int = 0
    in_event_loop: int = 0
    errors: int = 0
    own_events: int = 0


class EnrichProcessor:
    """The processor returned by :func:`loopthread.structlog.enrich`."""

    def __init__(self, chain: EnricherChain, timeout: float | None) -> None:
        self._chain = chain
        self._timeout = timeout
        self._enriched = itertools.count()
        self._timeouts = itertools.count()
        self._unavailable = itertools.count()
        self._in_event_loop = itertools.count()
        self._errors = itertools.count()
        self._own = itertools.count()

    def __call__(self, logger_: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Merge the chain's fields into ``event_dict``; never raises into the log call."""
        if own_event():
            next(self._own)
            return event_dict
        chain = self._chain
        try:
            # Not chain.enrich_sync(): its passthrough returns a copy without saying it did,
            # and this processor must count what it passed on unenriched.
            if events._get_running_loop() is not None:
                next(self._in_event_loop)
                chain._degrade(_IN_EVENT_LOOP)
                return event_dict
            lt = chain.loop_thread
            if lt is None:
                from loopthread._default import default

                lt = default()
            if lt.in_loop_thread():  # its loop is starting or shutting down
                next(self._in_event_loop)
                chain._degrade(_IN_EVENT_LOOP)
                return event_dict
            fields = self._enrich(lt, event_dict)
        except Exception as exc:  # noqa: BLE001 - a log call never fails because of enrichment
            next(
                self._timeouts
                if isinstance(exc, TimeoutError)
                else self._unavailable
                if isinstance(exc, LoopNotRunningError)
                else self._errors
            )
            chain._degrade(exc)
            return event_dict
        next(self._enriched)
        event_dict.update(fields)
        return event_dict

    def _enrich(self, lt: LoopThread, event_dict: EventDict) -> dict[str, Any]:
        return run_within(lt, self._chain.enrich(event_dict), self._timeout)

    def stats(self) -> EnrichStats:
        """How many events went through, enriched or passed on unchanged (and why)."""
        timeouts = peek(self._timeouts)
        unavailable = peek(self._unavailable)
        in_loop = peek(self._in_event_loop)
        errors = peek(self._errors)
        enriched = peek(self._enriched)
        degraded = timeouts + unavailable + in_loop + errors
        return EnrichStats(
            events=enriched + degraded,
            enriched=enriched,
            degraded=degraded,
            timeouts=timeouts,
            unavailable=unavailable,
            in_event_loop=in_loop,
            errors=errors,
            own_events=peek(self._own),
        )

    def __repr__(self) -> str:
        return f"<loopthread.structlog.enrich {self._chain!r} timeout={self._timeout!r}>"
