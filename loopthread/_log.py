"""loopthread's own structured logs, and the rate limiter that keeps them from flooding.

The library never calls ``structlog.configure()`` and never writes to stdout on its own:

* when the application configured structlog, events go to ``structlog.get_logger("loopthread")``
  and are rendered however the application chose;
* otherwise they go to the stdlib logger ``"loopthread"`` (as ``"event key=value ..."``, with
  the fields also in ``record.loopthread_fields``), which is silent by default like every
  library's logger: ``logging.getLogger("loopthread").setLevel(logging.INFO)`` plus a handler
  shows them. (structlog unconfigured prints every level to stdout, which breaks programs
  whose stdout is data; and stdlib logging re-creates its locks in a forked child, where a
  write lock held by another thread at ``fork()`` would otherwise hang the child.)

Callers never log from a signal handler, under a lock another thread may hold, or between a
state change and the action it announces: they log after.

While one of loopthread's own events goes through the application's structlog processors,
:func:`own_event` is True (a contextvar), so that loopthread's processors let it through
untouched: ``loopthread.structlog.enrich()`` must not wait for the loop to enrich the loop's
own lifecycle events, nor re-enter itself with the warning it logs when it degrades.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import structlog

from loopthread import _process
from loopthread._util import describe

__all__ = ["RateLimiter", "logger", "own_event"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_stdlib = logging.getLogger("loopthread")
# As every library does: without a configured handler, nothing is printed (not even through
# logging.lastResort); handlers on the root logger still receive what propagates.
_stdlib.addHandler(logging.NullHandler())
_structlog = structlog.get_logger("loopthread")
_own_event: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "loopthread_own_event", default=False
)


def own_event() -> bool:
    """True while one of loopthread's own events is being logged (in this context)."""
    return _own_event.get()


class _LibraryLogger:
    """``logger.info("event", key=value)``; routed as the module docstring says; never raises."""

    __slots__ = ()

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        token = _own_event.set(True)
        try:
            if structlog.is_configured():
                getattr(_structlog, level)(event, **fields)
                return
            number = _LEVELS[level]
            if not _stdlib.isEnabledFor(number):
                return
            exc_info = fields.pop("exc_info", None)
            text = " ".join([event, *(f"{key}={describe(value)}" for key, value in fields.items())])
            _stdlib.log(
                number,
                "%s",
                text,
                exc_info=exc_info,
                extra={"loopthread_event": event, "loopthread_fields": fields},
            )
        except Exception:  # noqa: BLE001 - a broken log setup must not break the library
            pass
        finally:
            _own_event.reset(token)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG."""
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO."""
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING."""
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR."""
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Log ``event`` at CRITICAL."""
        self._emit("critical", event, fields)


logger: Any = _LibraryLogger()


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


def _reinit_structlog_write_locks() -> None:
    # structlog's PrintLogger keeps one lock per output file (structlog._output.WRITE_LOCKS);
    # one held by another thread at fork() would hang the child's first log line forever.
    try:
        from structlog import _output
    except ImportError:  # pragma: no cover - a structlog without it has nothing to reset
        return
    locks = getattr(_output, "WRITE_LOCKS", None)
    if locks is None:
        return
    # Loggers keep a reference to their file's lock, so the lock itself is reset, as stdlib
    # logging does with its handlers' locks: the thread that held it does not exist here.
    for lock in list(locks.values()):
        reinit = getattr(lock, "_at_fork_reinit", None)
        if reinit is not None:
            reinit()
        elif lock.locked():
            lock.release()


_process.on_fork_in_child(_reinit_structlog_write_locks)
