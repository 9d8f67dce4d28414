"""LoopHandler: stdlib logging whose records are enriched by async code and written off-thread.

The threads that log pay for a copy and a hand-off; on the loop thread an async enricher adds
a field to each record, then the wrapped StreamHandler writes it (in the loop's executor).

Run: python examples/logging_handler.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

import structlog

from loopthread.logging import LoopHandler

# loopthread reports its own lifecycle through structlog; show only its warnings here.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

REGIONS = {1: "eu-west", 2: "us-east", 3: "ap-south"}


async def add_region(record: Mapping[str, Any]) -> dict[str, Any]:
    """An async enricher: a stand-in for a cache or service lookup by user id."""
    await asyncio.sleep(0.001)
    return {"region": REGIONS.get(record.get("user", 0), "unknown")}


def main() -> None:
    """Log from three threads through one LoopHandler, then show what it counted."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s [region=%(region)s]"))
    handler = LoopHandler(console, enrichers=[add_region])

    log = logging.getLogger("shop")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)

    def worker(user: int) -> None:
        for order in range(2):
            log.info("user %d placed order %d", user, order, extra={"user": user})

    threads = [threading.Thread(target=worker, args=(user,)) for user in REGIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()  # wait until the wrapped handler wrote everything logged so far

    stats = handler.stats()
    written = stats.channel.handled if stats.channel else 0
    print(f"emitted {stats.emitted}, written on the loop {written}, dropped {stats.dropped}")


if __name__ == "__main__":
    main()
