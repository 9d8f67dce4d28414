"""structlog + offload: the request thread pays for a put; rendering and writing run on the loop.

Processors that read the caller's state (contextvars, the log level) run before ``offload``;
the renderer and the sink run on the loop thread. An ``async def`` sink gets whole batches.

Run: python examples/structlog_offload.py
"""

from __future__ import annotations

import logging
import threading
import time

import structlog

from loopthread.structlog import offload

written: list[str] = []


async def ship(batch: list[str]) -> None:
    """An async sink: one network write per batch (here, appending to a list)."""
    written.extend(batch)


def main() -> None:
    """Log 400 events from 4 threads; time the callers; flush; show what arrived."""
    to_loop = offload(structlog.processors.JSONRenderer(sort_keys=True), sink=ship)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # reads the caller's context: before
            structlog.processors.add_log_level,
            structlog.stdlib.filter_by_level,  # loopthread's own INFO events stop here
            to_loop,  # everything after this runs on the loop thread
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("loopthread").setLevel(logging.WARNING)
    log = structlog.get_logger("app")
    log.info("warm-up")  # the first event starts the default loop thread
    to_loop.flush()

    def request_thread(worker: int) -> None:
        structlog.contextvars.bind_contextvars(worker=worker)
        for n in range(100):
            log.info("handled", request=n)

    started = time.perf_counter()
    threads = [threading.Thread(target=request_thread, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_call = (time.perf_counter() - started) / 400
    to_loop.flush()  # wait until the sink got everything logged so far

    stats = to_loop.stats()
    batches = stats.channel.batches if stats.channel else 0
    print(next(line for line in written if '"worker": 2' in line))
    print(f"{len(written)} events written by the async sink in {batches} batches")
    print(f"offloaded {stats.offloaded}, dropped {stats.dropped}, failed {stats.failed}")
    print(f"caller side: {per_call * 1e6:.0f} µs per log call (4 threads, wall time)")


if __name__ == "__main__":
    main()
