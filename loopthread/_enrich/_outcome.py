"""What one call of an enricher came to: counted in its slot, told to its circuit breaker, and
logged (rate-limited) when it is a fault or turns the circuit; loop thread only, no lock.

A fault never propagates to the event: the call contributes nothing. The breaker only decides
(opened, closed); the logging is done here, after its state changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loopthread._enrich._slots import EnricherResult, Slot, log
from loopthread._log import RateLimiter
from loopthread._util import describe

__all__ = ["Outcomes"]


class Outcomes:
    """Records the outcomes of one chain's calls."""

    __slots__ = ("_chain", "_limiter")

    def __init__(self, chain: str) -> None:
        self._chain = chain
        self._limiter = RateLimiter()  # loop thread only

    def record(
        self,
        slot: Slot,
        result: object,
        error: BaseException | None,
        trial: bool,
        began: int,
        *,
        expired: bool,
    ) -> EnricherResult:
        """Count the outcome of one call of ``slot``; its fields (None after a fault)."""
        if expired:
            self._fault(slot, "timeout", None, trial, began)
            return None
        if error is not None:
            self._fault(slot, "error", error, trial, began)
            return None
        if result is not None and type(result) is not dict and not isinstance(result, Mapping):
            self._fault(slot, "invalid", result, trial, began)
            return None
        slot.ok += 1
        breaker = slot.breaker
        if not breaker.quiet and breaker.record_success(trial):
            log("info", "enricher.circuit_closed", chain=self._chain, enricher=slot.name)
        return result

    def _fault(self, slot: Slot, kind: str, detail: object, trial: bool, began: int) -> None:
        if kind == "timeout":
            slot.timeouts += 1
        else:
            slot.failures += 1
        breaker = slot.breaker
        opened = breaker.record_failure(trial, began)
        suppressed = self._limiter.allow((slot.name, kind))
        if suppressed is not None:
            fields: dict[str, Any] = {"chain": self._chain, "enricher": slot.name}
            if suppressed:
                fields["suppressed"] = suppressed
            if kind == "timeout":
                log("warning", "enricher.timed_out", timeout=slot.timeout, **fields)
            elif kind == "error":
                assert isinstance(detail, BaseException)
                log("warning", "enricher.failed", error=describe(detail), exc_info=detail, **fields)
            else:
                log(
                    "warning",
                    "enricher.invalid_result",
                    result_type=type(detail).__name__,
                    hint="an enricher returns a mapping of new fields, or None",
                    **fields,
                )
        if opened:
            log(
                "warning",
                "enricher.circuit_opened",
                chain=self._chain,
                enricher=slot.name,
                consecutive_faults=breaker.consecutive,
                cooldown=breaker.cooldown,
                trial_failed=trial,
            )
