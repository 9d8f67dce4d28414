"""Legacy worker threads reporting through an EventBus instead of a polled queue.

The workers stay plain threads; each gets a Reporter and calls ``report(type, data)``.
Handlers run on the loop thread, only when there are events (nothing polls): a plain one
keeps the totals, an async one stands in for a write to a dashboard service.

Run: python examples/legacy_reporter.py
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import Counter
from typing import Any

import structlog

import loopthread

# loopthread reports its own lifecycle through structlog; show only its warnings here.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

totals: Counter[str] = Counter()
dashboard_writes = 0


def on_progress(event: dict[str, Any]) -> None:
    """A plain handler: quick bookkeeping on the loop thread."""
    totals[event["worker"]] += event["done"]


async def on_finished(event: dict[str, Any]) -> None:
    """An async handler: one 'network' write per finished job."""
    global dashboard_writes
    await asyncio.sleep(0.001)
    dashboard_writes += 1
    print(f"{event['worker']} finished: digest {event['digest'][:12]}")


def legacy_worker(name: str, chunks: int, reporter: loopthread.Reporter) -> None:
    """Unchanged sync code, except that it reports instead of putting into a queue."""
    digest = hashlib.sha256()
    for chunk in range(chunks):
        digest.update(f"{name}-{chunk}".encode())
        reporter.report("progress", {"worker": name, "done": 1})
    reporter.report("finished", {"worker": name, "digest": digest.hexdigest()})


def main() -> None:
    """Run three workers, wait for their events to be handled, print the totals."""
    bus = loopthread.EventBus()
    bus.on("progress", on_progress)
    bus.on("finished", on_finished)
    reporter = bus.reporter()

    jobs = {"resize": 300, "thumbnail": 200, "upload": 100}
    threads = [
        threading.Thread(target=legacy_worker, args=(name, chunks, reporter))
        for name, chunks in jobs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bus.flush()  # every event reported so far went through its handlers

    stats = bus.stats()
    print("progress:", ", ".join(f"{name}={totals[name]}" for name in jobs))
    print(f"events handled {stats.events}, handler calls {stats.handler_calls}, ", end="")
    print(f"failures {stats.handler_failures}, dashboard writes {dashboard_writes}")


if __name__ == "__main__":
    main()
