"""The monitor thread's wake-ups under back-to-back calls.

A loop that runs ``lt.run`` calls back to back is idle (in ``select``) for microseconds
between them. The monitor must count it as busy: stay awake with timed sleeps (about one
wake-up per ``slow_callback``, plus the lag probes) rather than park and be woken by the next
call, over and over. Multiprocess metrics are written at those wake-ups, so they are also
what keeps those writes at about two a second on a busy loop.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from loopthread import LoopThread


def _switches(native_id: int) -> int:
    """Voluntary context switches of one thread of this process (Linux)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return next(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches")
    )


async def noop() -> int:
    return 1


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_back_to_back_calls_do_not_make_the_monitor_ping_pong() -> None:
    with LoopThread("pingpong", lag_interval=0.5, slow_callback=0.1) as lt:
        monitor = next(t for t in threading.enumerate() if t.name == "pingpong-monitor")
        assert monitor.native_id is not None
        for _ in range(100):
            lt.run(noop())
        before = _switches(monitor.native_id)
        start = time.monotonic()
        calls = 0
        while time.monotonic() - start < 1.0:  # a second of calls, not of sleep
            lt.run(noop())
            calls += 1
        elapsed = time.monotonic() - start
        woken = _switches(monitor.native_id) - before
    assert calls > 1000
    # ~10 timed sleeps (slow_callback) + 2 probes a second; parking between calls made it 45-95.
    assert woken / elapsed <= 30, (woken, elapsed, calls)
