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
            signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "install_signal_handlers() must be called from the main thread (Python delivers "
            "signals there); call it at start-up, before starting worker threads."
        )
    previous: dict[signal.Signals, _Handler] = {}
    for sig in signals:
        previous[sig] = signal.signal(sig, _exit_in_order)
    return previous


def _exit_in_order(signum: int, frame: FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    try:
        logger.info("loop_thread.signal_received", signal=name, action="orderly exit")
    except Exception:  # noqa: BLE001 - a broken log setup must not block the exit
        pass
    raise SystemExit(128 + signum)
