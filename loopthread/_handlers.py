"""Writing records into wrapped stdlib handlers, as ``Logger.callHandlers`` would, from the
loop's executor; and keeping a handler stuck in ``emit()`` from hanging interpreter exit.
"""

from __future__ import annotations

import contextlib
import logging

from loopthread._log import logger
from loopthread._process import after_exit, fork_safe_lock
from loopthread._util import describe

__all__ = ["handle_all", "handle_all_tracked"]


_base_handle = logging.Handler.handle
_LogRecord = logging.LogRecord

# Wrapped handlers inside handle() in an executor worker now, and how many times (any thread).
_busy: dict[int, tuple[logging.Handler, int]] = {}
_busy_lock = fork_safe_lock()


def handle_all_tracked(
    handler: logging.Handler, records: list[logging.LogRecord]
) -> tuple[int, BaseException | None]:
    key = id(handler)
    with _busy_lock:
        _busy[key] = (handler, _busy.get(key, (handler, 0))[1] + 1)
    try:
        return handle_all(handler, records)
    finally:
        with _busy_lock:
            count = _busy[key][1] - 1
            if count:
                _busy[key] = (handler, count)
            else:
                del _busy[key]


def _spare_stuck_handlers_at_exit() -> None:
    """After the exit drain: a wrapped handler still stuck in ``emit()`` (I/O that never
    returns) holds its lock, and ``logging.shutdown`` (which runs next) would wait for that
    lock forever. It is left out of logging.shutdown's list, and said so, so exit stays bounded.
    """
    with _busy_lock:
        stuck = [handler for handler, _ in _busy.values()]
    if not stuck:
        return
    refs = getattr(logging, "_handlerList", None)
    for handler in stuck:
        if isinstance(refs, list):
            for ref in list(refs):
                if ref() is handler:
                    with contextlib.suppress(ValueError):
                        refs.remove(ref)
        logger.error(
            "loop_handler.handler_stuck_at_exit",
            handler=describe(handler),
            hint="its emit() did not return during the exit drain; logging.shutdown skips it",
        )


after_exit(_spare_stuck_handlers_at_exit)


def handle_all(
    handler: logging.Handler, records: list[logging.LogRecord]
) -> tuple[int, BaseException | None]:
    """Pass ``records`` to ``handler`` as ``Logger.callHandlers`` would, in order.

    Applies the handler's level and filters. Returns how many records the handler raised on,
    and the first error: one bad record does not cost the rest of the batch.
    """
    failed = 0
    error: BaseException | None = None
    level = handler.level
    if type(handler).handle is not _base_handle:
        # A handler with its own handle(): call it per record, as logging would.
        for record in records:
            if record.levelno >= level:
                try:
                    handler.handle(record)
                except BaseException as exc:  # noqa: BLE001 - counted by the caller (SystemExit too)
                    failed += 1
                    error = error or exc
        return failed, error
    # Handler.handle() is filter + lock + emit per record; taking the lock once per batch
    # does the same work without a lock round trip per record.
    filter_ = handler.filter
    emit = handler.emit
    handler.acquire()
    try:
        for record in records:
            if record.levelno < level:
                continue
            rv = filter_(record)
            if not rv:
                continue
            try:
                # Python 3.12+: a filter may return a replacement record.
                emit(rv if isinstance(rv, _LogRecord) else record)
            except BaseException as exc:  # noqa: BLE001 - counted by the caller (SystemExit too)
                failed += 1
                error = error or exc
    finally:
        handler.release()
    return failed, error
