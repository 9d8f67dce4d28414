"""The producer process of perf/_bench_source.py (spawned: stdlib only, quick to import)."""

from __future__ import annotations

import time
from typing import Any


def paced(q: Any, interval: float, events: int) -> None:
    """Put ``time.perf_counter()`` into ``q`` every ``interval`` seconds, ``events`` times,
    then wait until the feeder thread wrote everything to the pipe."""
    clock, sleep, put = time.perf_counter, time.sleep, q.put
    for _ in range(events):
        sleep(interval)
        put(clock())
    q.close()
    q.join_thread()
