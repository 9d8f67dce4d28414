"""Channels: synchronous producers push items, one consumer task on the loop handles them.

The parts, each in its own module: the API (:mod:`._api`: ``put``, ``close``, the component
hooks), the consumer (:mod:`._consumer`), its drain and finish (:mod:`._drain`), the accounting
and ``flush`` (:mod:`._accounting`), the wake-up protocol (:mod:`._wake`), where and in which
context the handler runs (:mod:`._modes`: ``run_in=``, ``context=``), and the shared state
(:mod:`._base`). A channel fed by an existing source (``lt.channel_from``) is in
:mod:`._source` (its readers: :mod:`._source_fd` on the loop, :mod:`._source_pump` in a
thread; the framings: :mod:`._framing`).
"""

from loopthread._channel._api import Channel
from loopthread._channel._base import OVERFLOW_POLICIES, Overflow
from loopthread._channel._source import SourceChannel, SourceStats
from loopthread._stats import ChannelStats

__all__ = [
    "OVERFLOW_POLICIES",
    "Channel",
    "ChannelStats",
    "Overflow",
    "SourceChannel",
    "SourceStats",
]
