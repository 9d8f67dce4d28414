"""loopthread's own structured logs.

The library logs through ``structlog.get_logger("loopthread")`` and never calls
``structlog.configure()``: how (and whether) these events are rendered is the application's choice.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

logger: Any = structlog.get_logger("loopthread")


class RateLimiter:
    """Lets one event per ``key`` through every ``interval`` seconds and counts the rest.

    User code that fails on every event (a dead enricher, a broken handler) must not turn the
    library's own logs into a flood; the suppressed count is reported with the next event.
    Not thread-safe on its own: each user keeps it on one thread (the loop thread).
    """

    __slots__ = ("_clock", "_interval", "_state")

    def __init__(self, interval: float = 10.0, *, clock: Any = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._state: dict[object, tuple[float, int]] = {}

    def allow(self, key: object) -> int | None:
        """Return ``None`` to suppress, or how many events were suppressed since the last one."""
        now = self._clock()
        last, suppressed = self._state.get(key, (float("-inf"), 0))
        if now - last >= self._interval:
            self._state[key] = (now, 0)
            return suppressed
        self._state[key] = (last, suppressed + 1)
        return None
