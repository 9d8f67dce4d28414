"""structlog + async enrichment: sync loggers get fields that async code looks up.

``loopthread.structlog.enrich(chain)`` runs an EnricherChain on the loop thread for each event
and merges its fields in, waiting at most ``timeout``; a slow lookup costs the event its
fields, never the request its time.

Run: python examples/structlog_enrich.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

import loopthread
from loopthread.structlog import enrich

USERS = {7: "ada", 8: "grace"}


async def user_name(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """Look the user up (a stand-in for an async database or HTTP call)."""
    if "user_id" not in event:
        return None
    await asyncio.sleep(0.002)
    return {"user": USERS.get(event["user_id"], "?")}


async def feature_flags(event: Mapping[str, Any]) -> dict[str, Any]:
    """A second lookup; the chain runs both concurrently."""
    await asyncio.sleep(0.002)
    return {"beta": event.get("user_id") == 7}


async def slow_geo(event: Mapping[str, Any]) -> dict[str, Any]:
    """A lookup that is too slow for the logging budget when asked about a proxy."""
    await asyncio.sleep(0.5 if event.get("ip") == "10.0.0.1" else 0.001)
    return {"country": "NZ"}


def main() -> None:
    """Configure structlog with an enrich processor and log a few events."""
    chain = loopthread.EnricherChain([user_name, feature_flags, slow_geo], timeout=None)
    enricher = enrich(chain, timeout=0.1)
    # structlog through stdlib logging, so loopthread's own lifecycle events can be kept at
    # WARNING with a plain logger level.
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=logging.INFO)
    logging.getLogger("loopthread").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.add_log_level,
            enricher,
            structlog.processors.KeyValueRenderer(key_order=["level", "event"], sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    log = structlog.get_logger("app")
    log.info("login", user_id=7, ip="192.0.2.1")
    log.info("login", user_id=8, ip="192.0.2.2")
    log.info("login", user_id=7, ip="10.0.0.1")  # slow_geo misses the 0.1 s budget

    # The warning line above is loopthread's own, logged through this same configuration
    # when the third login passed through without its fields; enrich() lets loopthread's own
    # events through untouched (it would otherwise wait on the loop that logs them).
    stats = enricher.stats()
    print(
        f"events {stats.events}, enriched {stats.enriched}, passed through {stats.degraded} "
        f"({stats.timeouts} timed out), loopthread's own {stats.own_events}"
    )


if __name__ == "__main__":
    main()
