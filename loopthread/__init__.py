"""loopthread: one long-lived asyncio loop per process, for synchronous code.

A daemon thread owns the loop; synchronous callers run coroutines on it through a blocking
facade (``LoopThread.run``, ``call``, ``gather``, ``submit``, ``loopthread.run``,
``@loopthread.blocking``). Everything public is re-exported here; the machinery lives in
private modules.
"""

from loopthread._blocking import blocking, run
from loopthread._channel import Channel, ChannelStats, SourceChannel, SourceStats
from loopthread._default import DefaultResource, configure_default, default, resource
from loopthread._enrich import ChainStats, EnricherChain, EnricherStats, enricher
from loopthread._eventbus import EventBus, EventBusStats, Reporter
from loopthread._exceptions import (
    BlockingInLoopWarning,
    ChannelClosedError,
    ChannelFullError,
    LoopNotRunningError,
    LoopThreadError,
    WouldDeadlockError,
)
from loopthread._loopthread import LoopStats, LoopThread, ShutdownReport
from loopthread._resource import Resource
from loopthread._signals import install_signal_handlers
from loopthread._sync_facade import SyncFacade, sync_iterator, sync_method

__all__ = [
    "BlockingInLoopWarning",
    "ChainStats",
    "Channel",
    "ChannelClosedError",
    "ChannelFullError",
    "ChannelStats",
    "DefaultResource",
    "EnricherChain",
    "EnricherStats",
    "EventBus",
    "EventBusStats",
    "LoopNotRunningError",
    "LoopStats",
    "LoopThread",
    "LoopThreadError",
    "Reporter",
    "Resource",
    "ShutdownReport",
    "SourceChannel",
    "SourceStats",
    "SyncFacade",
    "WouldDeadlockError",
    "blocking",
    "configure_default",
    "default",
    "enricher",
    "install_signal_handlers",
    "resource",
    "run",
    "sync_iterator",
    "sync_method",
]

__version__ = "0.1.0"
