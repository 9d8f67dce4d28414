"""Worker processes for tests/test_channel_source.py (spawned: importable, stdlib only)."""

from __future__ import annotations

from typing import Any


def produce(q: Any, worker: int, count: int) -> None:
    """Put ``(worker, 0) .. (worker, count - 1)`` into ``q``, then flush the feeder and exit."""
    for seq in range(count):
        q.put((worker, seq))
    q.close()
    q.join_thread()  # every item is in the pipe once this returns


def put_and_exit(q: Any, items: list[Any]) -> None:
    """Put ``items`` into ``q`` and exit once they are in the pipe."""
    for item in items:
        q.put(item)
    q.close()
    q.join_thread()


def count_until_none(q: Any, out: Any, ready: Any) -> None:
    """Another reader of ``q``: get() until None, then put how many items it got into ``out``."""
    ready.set()
    count = 0
    while q.get() is not None:
        count += 1
    out.put(count)
