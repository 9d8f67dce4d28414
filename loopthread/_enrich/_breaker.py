"""The circuit breaker of one enricher: plain state and two decisions, nothing else.

Design notes (why it is built this way):

* The circuit breaker counts *consecutive* failures and timeouts; once open, the enricher is
  skipped without being called until ``cooldown`` has passed, then exactly one call is let
  through as a trial (half-open): success closes the circuit, failure opens it again.
* A burst counts once: calls that overlap fail together (a batch of 200 lookups against a pool
  of 4 connections times out en masse), and counting each would open the circuit on one bad
  moment. A call remembers ``epoch`` (the faults counted so far) when it begins; its fault
  counts only if no other fault was counted since. So a dead enricher opens the circuit after
  ``threshold`` waves of calls, whatever the concurrency: about ``threshold`` x its timeout.
* It is pure: no asyncio, no logging, no lock, and the clock is injected. Each decision returns
  what happened (the call is the trial, the circuit just opened or closed) and the chain counts
  and logs it, so the breaker is tested on its own with a fake clock (tests/test_breaker.py).
* It is changed on the loop thread only (every call of an enricher runs there), so it needs no
  lock; :meth:`CircuitBreaker.state_at` only reads, for ``stats()`` from any thread.
* The hot path does not call it while all is well: ``quiet`` (closed, no fault counted, no trial
  in flight) says that :meth:`CircuitBreaker.admit` would answer ``CALL`` and
  :meth:`CircuitBreaker.record_success` would change nothing, so the chain asks neither; a
  method call per enricher per event would cost more than the rest of its bookkeeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = [
    "CALL",
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "SKIP",
    "TRIAL",
    "Admission",
    "Circuit",
    "CircuitBreaker",
]


class Circuit(enum.Enum):
    """The state of an enricher's circuit; the value is what stats and metrics show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module constants: an enum member looked up on its class costs a metaclass lookup each time.
CLOSED = Circuit.CLOSED
OPEN = Circuit.OPEN
HALF_OPEN = Circuit.HALF_OPEN


class Admission(enum.Enum):
    """What :meth:`CircuitBreaker.admit` decided for one call."""

    SKIP = "skip"  # not called: open and cooling down, or the half-open trial is in flight
    CALL = "call"  # closed: an ordinary call
    TRIAL = "trial"  # half-open: the one call whose outcome closes or reopens the circuit


SKIP = Admission.SKIP
CALL = Admission.CALL
TRIAL = Admission.TRIAL


class CircuitBreaker:
    """One enricher's circuit: ``state``, ``consecutive`` faults, ``opened_at``, ``trial``...

    Args:
        threshold: consecutive faults (failures or timeouts) that open a closed circuit (None:
            never open it on faults; a failed trial still reopens it).
        cooldown: seconds an open circuit refuses calls before it lets one trial through.
        clock: returns seconds (``time.monotonic`` in the chain; a fake one in tests); read
            only when the circuit opens and when an open circuit is asked to admit a call.

    Attributes (read them, let the methods change them):
        state: :class:`Circuit`. ``OPEN`` turns ``HALF_OPEN`` when :meth:`admit` finds the
            cool-down over, and ``CLOSED`` again at the next success.
        consecutive: faults counted toward ``threshold`` since the last success.
        epoch: faults counted toward ``threshold`` over the breaker's life; a call reads it when
            it begins and passes it to :meth:`record_failure` (see the module's notes).
        opened_at: the clock when the circuit last opened.
        trial: the half-open trial call is in flight (no other call is let through).
        quiet: ``state`` is closed, ``consecutive`` is 0 and no ``trial`` is in flight: then
            :meth:`admit` answers ``CALL`` and :meth:`record_success` changes nothing, and
            callers on a hot path may skip both.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_threshold",
        "consecutive",
        "epoch",
        "opened_at",
        "quiet",
        "state",
        "trial",
    )

    def __init__(self, threshold: int | None, cooldown: float, clock: Callable[[], float]) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.epoch = 0
        self.opened_at = 0.0
        self.trial = False
        self.quiet = True

    @property
    def threshold(self) -> int | None:
        """Consecutive faults that open a closed circuit (None: never)."""
        return self._threshold

    @property
    def cooldown(self) -> float:
        """Seconds an open circuit refuses calls."""
        return self._cooldown

    def admit(self) -> Admission:
        """Decide whether the enricher is called now.

        Closed: :attr:`Admission.CALL`. Open within the cool-down: :attr:`Admission.SKIP`.
        Once the cool-down is over the circuit is half-open: the first call asking is the
        :attr:`Admission.TRIAL` (``trial`` is set until its outcome is recorded or it is
        released), and every other call is skipped meanwhile.
        """
        state = self.state
        if state is CLOSED:
            return CALL
        if state is OPEN:
            if self._clock() - self.opened_at < self._cooldown:
                return SKIP
            self.state = HALF_OPEN
        if self.trial:  # half-open: one trial call at a time
            return SKIP
        self.trial = True
        return TRIAL

    def record_success(self, trial: bool) -> bool:
        """A call answered in time with a mapping or None (``trial``: it was admitted as TRIAL).

        Resets the consecutive faults. Returns True when this closed the circuit (any success
        does, the trial's or one admitted before the circuit opened).
        """
        self.consecutive = 0
        if trial:
            self.trial = False
        self.quiet = not self.trial
        if self.state is CLOSED:
            return False
        self.state = CLOSED
        return True

    def record_failure(self, trial: bool, began: int | None = None) -> bool:
        """A call raised, returned something invalid or timed out (``trial``: it was the TRIAL).

        ``began`` is the ``epoch`` read when the call began (None: count it in any case). A call
        that began before another fault was counted overlapped with it: the same burst, not
        counted again (a failed trial always counts).

        Returns True when this opened the circuit: a failed trial, or the ``threshold``-th
        consecutive fault of a closed circuit. A fault while the circuit is already open or
        half-open (a call admitted before it opened) only counts.
        """
        self.quiet = False
        if trial:
            self.trial = False
        elif began is not None and began != self.epoch:
            return False  # overlapped with a fault already counted: one burst
        self.consecutive += 1
        self.epoch += 1
        threshold = self._threshold
        if trial or (
            threshold is not None and self.state is CLOSED and self.consecutive >= threshold
        ):
            self.state = OPEN
            self.opened_at = self._clock()
            return True
        return False

    def release(self) -> None:
        """The trial in flight will record no outcome (its caller gave up, or its loop is gone):
        the next call after the cool-down may be the trial."""
        self.trial = False
        self.quiet = self.state is CLOSED and self.consecutive == 0

    def state_at(self, now: float) -> Circuit:
        """The state as stats show it at clock time ``now``: an open circuit whose cool-down is
        over shows as ``HALF_OPEN`` (its next call is the trial). Changes nothing."""
        state = self.state
        if state is OPEN and now - self.opened_at >= self._cooldown:
            return HALF_OPEN
        return state

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.state.value} consecutive={self.consecutive} "
            f"threshold={self._threshold} cooldown={self._cooldown} trial={self.trial}>"
        )
