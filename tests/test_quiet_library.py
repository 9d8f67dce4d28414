"""A library is quiet: nothing on stdout, nothing at INFO, no warning on a normal start
(issue 12, item 6). Each case runs in a fresh interpreter, as a program would."""

from __future__ import annotations

import json

from tests._seam_support import run_python

_UNCONFIGURED_AT_INFO = """
import asyncio, logging, loopthread
logging.basicConfig(level=logging.INFO)  # the application shows INFO and above (on stderr)

async def answer():
    return 42

print("result", loopthread.run(answer()))
with loopthread.LoopThread("own") as lt:
    lt.run(asyncio.sleep(0))
"""


def test_unconfigured_structlog_prints_nothing_and_logs_nothing_at_info() -> None:
    """structlog not configured, the application's logging at INFO: ``loopthread.run()`` and a
    LoopThread's start and stop write nothing to stdout (which may be a CLI tool's data) and
    log nothing at INFO or above."""
    child = run_python(_UNCONFIGURED_AT_INFO, timeout=30)
    assert child.returncode == 0, child.describe()
    assert child.stdout == "result 42\n", child.describe()
    assert child.stderr == "", child.describe()


_ENRICH_CONFIGURED = """
import asyncio, json, sys, structlog, loopthread
from loopthread.structlog import enrich

async def region(event):
    return {"region": "eu-west"}

chain = loopthread.EnricherChain([region])  # on the default loop, started by the first event
processor = enrich(chain)
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        processor,
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.PrintLoggerFactory(sys.stdout),
)
log = structlog.get_logger()
log.info("first")  # starts the default loop: its "started" event is logged on the loop thread
loopthread.run(asyncio.sleep(0))
log.info("second")
stats = processor.stats()
print(json.dumps({"stats": [stats.events, stats.enriched, stats.degraded]}))
"""


def test_enrich_configured_process_start_logs_no_warning() -> None:
    """structlog configured with ``enrich()``, every level shown: starting the default loop
    (and stopping it at exit) logs no WARNING (it logged one about WouldDeadlockError at every
    process start), and the application's events are enriched."""
    child = run_python(_ENRICH_CONFIGURED, timeout=30)
    assert child.returncode == 0, child.describe()
    assert "WouldDeadlockError" not in child.stdout + child.stderr, child.describe()
    records = [json.loads(line) for line in child.stdout.splitlines()]
    assert [r for r in records if r.get("level") in ("warning", "error")] == [], child.describe()
    app = [r for r in records if r.get("event") in ("first", "second")]
    assert [r["region"] for r in app] == ["eu-west", "eu-west"], child.describe()
    assert {"stats": [2, 2, 0]} in records, child.describe()
    assert child.stderr == "", child.describe()
