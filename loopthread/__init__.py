"""loopthread: one long-lived asyncio loop per process, for synchronous code.

A daemon thread owns the loop; synchronous callers run coroutines on it through a blocking
facade (``LoopThread.run``, ``call``, ``gather``, ``submit``, ``loopthread.run``,
``@loopthread.blocking``). Everything public is re-exported here; the machinery lives in
private modules.
"""

from loopthread._blocking import blocking, run
from loopthread._exceptions import (
    ChannelClosedError,
    ChannelFullError,
    LoopNotRunningError,
    LoopThreadError,
    WouldDeadlockError,
)
from loopthread._loopthread import LoopStats, LoopThread, ShutdownReport
from loopthread._process import default

__all__ = [
    "ChannelClosedError",
    "ChannelFullError",
    "LoopNotRunningError",
    "LoopStats",
    "LoopThread",
    "LoopThreadError",
    "ShutdownReport",
    "WouldDeadlockError",
    "blocking",
    "default",
    "run",
]

__version__ = "0.1.0"
