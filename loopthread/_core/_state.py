"""The lifecycle states of a LoopThread and the plain data it reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loopthread._util import HistogramSnapshot

__all__ = ["LoopStats", "ShutdownReport", "State"]


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
    executor_queue_depth: int = 0  # jobs waiting for an executor worker
    executor_busy: int = 0  # executor workers running a job now
    call_durations: HistogramSnapshot | None = None  # with metrics on
    loop_lag: HistogramSnapshot | None = None  # with the lag probe on


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What ``stop()`` did.

    ``finished`` is False when the shutdown was only scheduled (``stop()`` called from the
    loop thread or one of its executor workers) or when the loop thread did not finish within
    the timeout (a coroutine or callback is blocking it); counts then cover what was known at
    return. ``deadline_hit`` is True when some phase had to cut work short because the
    deadline passed, and only then. ``items_unhandled`` counts the items that components
    (channels, log handlers) accepted and could not handle.
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
