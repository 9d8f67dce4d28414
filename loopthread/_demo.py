"""The demo behind ``python -m loopthread demo``: a small sync application built on loopthread.

Four worker threads process items. For each item a worker

* calls an async inventory client through the blocking facade (``lt.run``); the client is one
  shared ``lt.resource``, created once on the loop and reused by every call;
* logs through the stdlib ``logging`` module into a ``LoopHandler``, whose async enrichers (one
  of them also uses the shared client) add fields on the loop before a FileHandler writes;
* reports progress through an ``EventBus``, whose handler on the loop draws a progress bar.

It ends with a table of what flowed where (from the ``stats()`` of each part) and what the
same calls would have cost with ``asyncio.run`` per call, measured on a few calls and
extrapolated.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

import loopthread
from loopthread.logging import LoopHandler

WORKERS = 4
ITEMS_PER_WORKER = 40
WORK_SECONDS = 0.02  # the sync part of processing one item
HANDSHAKE_SECONDS = 0.005  # what opening the client costs (a TLS handshake, say)
LOOKUP_SECONDS = 0.002  # one request over an open connection
ASYNCIO_RUN_SAMPLES = 10


class InventoryClient:
    """Stand-in for an async HTTP or database client: costly to open, cheap to reuse."""

    opened = 0

    @classmethod
    async def connect(cls) -> InventoryClient:
        await asyncio.sleep(HANDSHAKE_SECONDS)
        cls.opened += 1
        return cls()

    async def stock(self, item: int) -> int:
        await asyncio.sleep(LOOKUP_SECONDS)
        return (item * 7) % 13

    async def tenant_of(self, item: int) -> str:
        await asyncio.sleep(LOOKUP_SECONDS / 4)
        return ("acme", "globex", "initech")[item % 3]

    async def aclose(self) -> None:
        await asyncio.sleep(0)


class ProgressBar:
    """A text progress bar drawn by an EventBus handler on the loop thread.

    On a terminal it redraws one line in place; otherwise (a pipe, a CI log) it prints a line
    at every quarter, so the output stays readable.
    """

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.tty = out.isatty()
        self._shown = -1

    def on_progress(self, event: dict[str, Any]) -> None:
        self.done += event["items"]
        percent = 100 * self.done // self.total
        step = percent if self.tty else percent // 25 * 25
        if step == self._shown:
            return
        self._shown = step
        filled = 30 * self.done // self.total
        bar = "#" * filled + "." * (30 - filled)
        line = f"progress [{bar}] {percent:3d}% ({self.done}/{self.total})"
        if self.tty:
            self.out.write("\r" + line + ("\n" if self.done == self.total else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


def _quiet_loopthread_logs() -> None:
    # The demo is an application, so it may configure structlog: loopthread's own lifecycle
    # events would interleave with the progress bar; keep warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _serve_metrics(port: int) -> Any:
    """Start the Prometheus endpoint; None (with a note) if it cannot be served."""
    try:
        from loopthread import metrics

        server = metrics.serve(port)
    except Exception as exc:  # noqa: BLE001 - the demo runs on without metrics
        print(f"metrics: not served ({type(exc).__name__}: {exc})")
        return None
    print(f"metrics: serving {server.url} while the demo runs")
    return server


def _scrape(server: Any) -> str:
    """Read the metrics endpoint once, to show that it serves this run's LoopThread."""
    import urllib.request

    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            text = response.read().decode()
    except Exception as exc:  # noqa: BLE001 - a report line, not a failure
        return f"scrape failed ({exc!r})"
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    ours = sum(1 for f in families if f.startswith("loopthread_"))
    calls = next(
        (
            line
            for line in text.splitlines()
            if line.startswith("loopthread_calls_total{") and 'outcome="ok"' in line
        ),
        "",
    )
    return f"{ours} loopthread_* families, e.g. {calls}" if calls else f"{ours} families"


async def _standalone_check(item: int) -> int:
    """One item's async work the way it is done without loopthread: its own loop and client."""
    client = await InventoryClient.connect()
    try:
        return await client.stock(item)
    finally:
        await client.aclose()


def _measure_asyncio_run() -> float:
    """Seconds per ``asyncio.run`` call of the same work, on a worker thread (no SIGINT dance)."""
    samples: list[float] = []

    def sample() -> None:
        for item in range(ASYNCIO_RUN_SAMPLES):
            started = time.perf_counter()
            asyncio.run(_standalone_check(item))
            samples.append(time.perf_counter() - started)

    thread = threading.Thread(target=sample, name="asyncio-run-sample")
    thread.start()
    thread.join()
    return statistics.median(samples)


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(*, metrics_port: int | None = None) -> int:
    """Run the demo and print what flowed where. Returns the exit code."""
    _quiet_loopthread_logs()
    out = sys.stdout
    total = WORKERS * ITEMS_PER_WORKER
    metrics_server = _serve_metrics(metrics_port) if metrics_port is not None else None
    InventoryClient.opened = 0
    started = time.perf_counter()
    call_seconds: list[float] = []

    with tempfile.TemporaryDirectory() as tmp, loopthread.LoopThread("demo") as lt:
        client = lt.resource(InventoryClient.connect, name="inventory-client")

        async def tenant(record: Mapping[str, Any]) -> dict[str, Any] | None:
            if "item" not in record:
                return None
            return {"tenant": await (await client.get()).tenant_of(record["item"])}

        async def region(record: Mapping[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0.0005)
            return {"region": "eu-west" if record.get("item", 0) % 2 else "us-east"}

        chain = loopthread.EnricherChain(
            [
                loopthread.enricher(tenant, name="tenant"),
                loopthread.enricher(region, name="region"),
            ],
            loop_thread=lt,
            name="log-context",
        )
        logfile = Path(tmp) / "demo.log"
        file_handler = logging.FileHandler(logfile)
        file_handler.setFormatter(
            logging.Formatter(
                "%(levelname)s %(threadName)s tenant=%(tenant)s region=%(region)s %(message)s"
            )
        )
        handler = LoopHandler(file_handler, enrichers=chain, loop_thread=lt)
        log = logging.getLogger("loopthread.demo.app")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(handler)

        bar = ProgressBar(total, out)
        bus = loopthread.EventBus(lt)
        bus.on("progress", bar.on_progress)
        reporter = bus.reporter()

        async def check(item: int) -> int:
            return await (await client.get()).stock(item)

        def worker(index: int) -> None:
            mine: list[float] = []
            for n in range(ITEMS_PER_WORKER):
                item = index * ITEMS_PER_WORKER + n
                t0 = time.perf_counter()
                stock = lt.run(check(item), timeout=5)
                mine.append(time.perf_counter() - t0)
                time.sleep(WORK_SECONDS)  # the sync part of the job
                log.info("item %d checked: %d in stock", item, stock, extra={"item": item})
                reporter.report("progress", {"worker": index, "items": 1})
            call_seconds.extend(mine)

        threads = [
            threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        handler.flush()
        bus.flush()
        elapsed = time.perf_counter() - started

        loop_stats = lt.stats()
        log_stats = handler.stats()
        bus_stats = bus.stats()
        chain_stats = chain.stats()
        scraped = _scrape(metrics_server) if metrics_server is not None else None
        log.removeHandler(handler)
        handler.close()
        bus.close()
        lines = logfile.read_text().splitlines()
        file_handler.close()
        report = lt.stop()

    clients = InventoryClient.opened
    per_run = _measure_asyncio_run()
    calls = len(call_seconds)
    per_call = statistics.median(call_seconds)
    if metrics_server is not None:
        metrics_server.close()

    print()
    print(f"loopthread demo: {WORKERS} worker threads, {total} items, {elapsed:.2f} s")
    print(f"a log line: {lines[-1]}")
    print()
    log_channel = log_stats.channel
    bus_channel = bus_stats.channel
    enrichers = ", ".join(f"{e.name} {e.ok}/{e.calls} ok" for e in chain_stats.enrichers)
    rows = [
        ("what", "flowed", "where / details"),
        (
            "facade calls (lt.run)",
            f"{loop_stats.calls_ok} ok",
            f"{loop_stats.calls_failed} failed, {loop_stats.calls_timed_out} timed out, "
            f"{loop_stats.loops_created} event loop in all",
        ),
        (
            "shared async resource",
            f"{clients} client",
            f"lt.resource: reused by {calls} calls and the tenant enricher",
        ),
        (
            "progress events (EventBus)",
            f"{bus_stats.events} events",
            f"{bus_channel.batches if bus_channel else 0} batches, "
            f"{bus_stats.handler_failures} handler failures",
        ),
        (
            "log records (LoopHandler)",
            f"{log_stats.emitted} emitted",
            f"{log_channel.handled if log_channel else 0} written in "
            f"{log_channel.batches if log_channel else 0} batches, {log_stats.dropped} dropped; "
            f"file: {len(lines)} lines",
        ),
        (
            f"enricher chain '{chain_stats.name}'",
            f"{chain_stats.events} events",
            f"{enrichers}, {chain_stats.degraded} degraded",
        ),
        (
            "stop()",
            "clean" if report.clean else "NOT clean",
            f"{report.items_unhandled} items unhandled, {report.duration * 1000:.1f} ms",
        ),
    ]
    if scraped is not None:
        rows.append(("metrics", "served", scraped))
    print(_table(rows))
    print()
    print("The same calls with asyncio.run per call (measured, then extrapolated):")
    print(
        f"  asyncio.run: {per_run * 1000:.1f} ms per call (median of {ASYNCIO_RUN_SAMPLES} "
        "run on a worker thread; each opens its own client, bound to its own loop)"
    )
    print(f"  lt.run here: {per_call * 1000:.1f} ms per call (median of {calls})")
    print(
        f"  for {calls} calls: ~{per_run * calls:.2f} s spent waiting instead of "
        f"{sum(call_seconds):.2f} s; {calls} loops and {calls} clients instead of "
        f"{loop_stats.loops_created} and {clients}"
    )
    return 0
