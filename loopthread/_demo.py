"""The demo behind ``python -m loopthread demo``: a sync program using the blocking facade."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import loopthread


async def lookup(user_id: int) -> dict[str, object]:
    """Stand-in for an async client call (an HTTP request, a cache lookup)."""
    await asyncio.sleep(0.001)
    return {"user_id": user_id, "region": "eu-west" if user_id % 2 else "us-east"}


def run_demo(*, metrics_port: int | None = None) -> int:
    """Run the demo and print what flowed where. Returns the exit code."""
    del metrics_port  # served once the metrics module lands
    calls = 2_000
    with loopthread.LoopThread("demo") as lt:
        started = time.perf_counter()
        with ThreadPoolExecutor(8, thread_name_prefix="request") as pool:
            results = list(pool.map(lambda i: lt.run(lookup(i)), range(calls)))
        facade = time.perf_counter() - started
        assert [r["user_id"] for r in results] == list(range(calls))
        batch = lt.gather(*(lookup(i) for i in range(100)))
        stats = lt.stats()

    started = time.perf_counter()
    for i in range(200):
        asyncio.run(lookup(i))
    per_run = (time.perf_counter() - started) / 200

    print()
    print("loopthread demo: 8 request threads calling an async client through lt.run()")
    print(f"  calls            {calls:>8}  in {facade:.2f}s ({calls / facade:,.0f} calls/s)")
    print(f"  gather of 100    {len(batch):>8}  results with one hand-off")
    print(f"  loops created    {stats.loops_created:>8}  (asyncio.run would create {calls})")
    print(f"  calls ok         {stats.calls_ok:>8}")
    print(f"  asyncio.run/call {per_run * 1e6:>8.0f}  µs each, a new loop every time")
    return 0
