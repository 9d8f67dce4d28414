"""Opt-in signal handling: turn SIGTERM into an orderly exit that drains every loop.

By default SIGTERM kills the process on the spot: no ``finally``, no ``atexit``, so whatever sat
in a channel or a log queue is lost. With :func:`install_signal_handlers`, SIGTERM raises
``SystemExit`` in the main thread instead; the program unwinds as on ``sys.exit()``, and the
exit hook stops every LoopThread, draining channels and log handlers within its deadline.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from loopthread import _process
from loopthread._log import logger

__all__ = ["install_signal_handlers"]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_signal_handlers(
    signals: Iterable[signal.Signals] = (signal.SIGTERM,),
) -> dict[signal.Signals, _Handler]:
    """Make ``signals`` (default: SIGTERM) exit the program in order instead of killing it.

    The handler raises ``SystemExit(128 + signum)`` in the main thread (the shell's exit code for
    "terminated by signal"), so ``finally`` blocks and ``atexit`` run and loopthread drains every
    loop. A caller blocked in ``lt.run()`` has its coroutine cancelled first (as on Ctrl-C).

    Returns:
        The handlers that were installed before, by signal, so they can be restored.

    Raises:
        ValueError: not called from the main thread (Python only lets the main thread set
            signal handlers), or a signal that does not exist or cannot be caught (SIGKILL,
            SIGSTOP). Nothing is installed then.
        TypeError: ``signals`` is not an iterable of signals (a single signal, a name).
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "install_signal_handlers() must be called from the main thread (Python delivers "
            "signals there); call it at start-up, before starting worker threads."
        )
    wanted = _check_signals(signals)
    previous: dict[signal.Signals, _Handler] = {}
    try:
        for sig in wanted:
            previous[sig] = signal.signal(sig, _exit_in_order)
            _installed.add(sig)
    except BaseException:
        # All or nothing: put back what was installed before the failure.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    return previous


def _check_signals(signals: Iterable[signal.Signals]) -> list[signal.Signals]:
    if isinstance(signals, int | str | bytes) or not hasattr(signals, "__iter__"):
        raise TypeError(
            "signals must be a list of signals, e.g. install_signal_handlers([signal.SIGTERM, "
            f"signal.SIGHUP]); got {type(signals).__name__} {signals!r}."
        )
    valid = signal.valid_signals()
    checked: list[signal.Signals] = []
    for value in signals:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"each signal must be a signal.Signals such as signal.SIGTERM; got "
                f"{type(value).__name__} {value!r}."
            )
        if value not in valid:
            raise ValueError(
                f"{value!r} is not a signal on this platform; pass e.g. signal.SIGTERM."
            )
        sig = signal.Signals(value)
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(
                f"{sig.name} cannot be caught by any program; pass signals that can, such as "
                "signal.SIGTERM or signal.SIGHUP."
            )
        checked.append(sig)
    return checked


# The signals install_signal_handlers() took over.
_installed: set[signal.Signals] = set()
# The signals received, in order, written by the handler (a list append takes no lock that
# other threads may hold) and logged by the exit hook, outside the signal handler.
_received: list[int] = []


def _exit_in_order(signum: int, frame: FrameType | None) -> None:
    # A signal handler runs between two bytecodes of the main thread, wherever it is: inside
    # a log call holding the logger's lock, say. So it takes no lock and logs nothing.
    del frame
    _received.append(signum)
    raise SystemExit(128 + signum)


def _record_only(signum: int, frame: FrameType | None) -> None:
    # Installed for the exit drain: a second Ctrl-C or another SIGTERM must not tear down the
    # drain (which is bounded by its own deadline); it is noted and logged.
    del frame
    _received.append(signum)


def _shield_exit_drain() -> None:
    """At exit, before the loops drain: SIGINT and our SIGTERM handler only record."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM, *_installed):
        try:
            handler = signal.getsignal(sig)
            if handler is signal.default_int_handler or handler is _exit_in_order:
                signal.signal(sig, _record_only)
        except (ValueError, OSError):  # pragma: no cover - not a signal here
            pass


def _log_received() -> None:
    for signum in list(_received):
        logger.info(
            "loop_thread.signal_received",
            signal=signal.Signals(signum).name,
            action="orderly exit",
        )
    _received.clear()


_process.on_exit(_shield_exit_drain)
_process.on_exit(_log_received)
_process.after_exit(_log_received)  # those that arrived during the drain
