"""Every exception loopthread raises on purpose.

Each one subclasses the builtin it really is (so ``except RuntimeError`` keeps working) and its
message says what to do instead.  Timeouts are the builtin :class:`TimeoutError`.
"""

from __future__ import annotations

__all__ = [
    "BlockingInLoopWarning",
    "ChannelClosedError",
    "ChannelFullError",
    "LoopNotRunningError",
    "LoopThreadError",
    "WouldDeadlockError",
]


class LoopThreadError(RuntimeError):
    """Base class of loopthread's own errors."""


class LoopNotRunningError(LoopThreadError):
    """The loop cannot take work: not started yet, stopped, died, or inherited across ``fork()``."""


class WouldDeadlockError(LoopThreadError):
    """A blocking call was made from the loop's own thread, where it would wait forever.

    Inside a coroutine on the loop, ``await`` the coroutine instead of calling the blocking facade.
    """


class ChannelFullError(LoopThreadError):
    """``put`` on a full channel whose overflow policy is ``"error"``."""


class ChannelClosedError(LoopThreadError):
    """``put`` on a channel that was closed (or whose loop thread stopped)."""


class BlockingInLoopWarning(RuntimeWarning):
    """A blocking call (``lt.run`` and friends) was made from a thread whose own event loop is
    running (Jupyter, an ASGI app, code under ``nest_asyncio``): it works, but that loop stands
    still until the call returns. In async code use ``await lt.arun(coro)``.

    Shown once per call site (Python's default for warnings). Make it an error with
    ``warnings.filterwarnings("error", category=loopthread.BlockingInLoopWarning)``, or allow it
    with ``"ignore"``.
    """
