"""Logging: LoopHandler against QueueHandler + QueueListener, a plain StreamHandler and fapilog.

Competitors, interleaved round by round in one run (A, B, C, D, A, B, C, D, ...), each fed by
1 and then 4 threads calling ``logger.info`` back to back, each writing every record to an
in-memory stream:

* ``LoopHandler``: ``LoopHandler(StreamHandler(stream))`` on a LoopThread (defaults: maxsize
  10,000, "block", batch 256), which captures each caller's ``contextvars`` with every record
  (its enrichers, filters and formatting run in the context of the thread that logged it);
  every caller thread runs with a request id in a ContextVar, as a web app's would;
* ``LoopHandler, new context per call``: the same, each call made after setting a new request
  id (a distinct context per record: the capture's worst case; the ``ContextVar.set`` is in
  the timed call);
* ``QueueHandler + QueueListener``: the stdlib pair (``queue.SimpleQueue``), the listener
  writing through the same kind of StreamHandler;
* ``StreamHandler``: the plain synchronous handler (the caller does all the work);
* ``fapilog``: ``fapilog.get_logger(sinks=[sink], settings=...)``, its own sync logger (an
  async pipeline on a worker thread), with a sink whose ``async write(entry)`` writes the
  message to the stream; its default enrichers and redactors off (the stdlib competitors
  add nothing either), the rest at its defaults.

Measured per round: the caller-side cost of one call (each call timed in its thread) and
end-to-end records/s (all records, from the callers' start until the sink wrote the last
one; the sink signals it, nothing polls). Then, with one enricher that awaits 0.5 ms:
LoopHandler's records/s with nothing dropped, against fapilog with the same enricher; and
records lost when a program that logged from 4 threads simply returns (a subprocess each).

Also measured: what ``contextvars.copy_context()`` costs by itself, per call.

Run: ``python -m perf.bench_logging [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import logging.handlers
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

import loopthread
from loopthread.logging import LoopHandler
from perf._harness import markdown_table, p99, run_main

__all__ = ["report"]

LOOP = "LoopHandler"
LOOP_NEW_CONTEXT = "LoopHandler, new context per call"
QUEUE = "QueueHandler + QueueListener"
STREAM = "StreamHandler (synchronous)"
FAPILOG = "fapilog 0.18.1"

ENRICH_DELAY = 0.0005

# Every caller runs with a request id in a ContextVar (set once per thread; the "new context
# per call" competitor sets a new one before each call).
request_id: contextvars.ContextVar[int] = contextvars.ContextVar("bench_request_id", default=0)


@dataclass(frozen=True, slots=True)
class _Plan:
    rounds: int
    records: int  # per round and competitor, split between the threads
    enrich_rounds: int
    enrich_records: int
    fapilog_enrich_records: int
    exit_records: int  # per thread, in the exit subprocesses


FULL = _Plan(
    rounds=7,
    records=20_000,
    enrich_rounds=3,
    enrich_records=20_000,
    fapilog_enrich_records=2_000,
    exit_records=2_500,
)
QUICK = _Plan(
    rounds=2,
    records=5_000,
    enrich_rounds=1,
    enrich_records=5_000,
    fapilog_enrich_records=500,
    exit_records=1_000,
)

CALLER_TARGET = 1.2  # LoopHandler's caller cost <= 1.2x QueueHandler's
E2E_TARGET_1 = 1.0  # records/s >= QueueListener's from 1 thread
E2E_TARGET_4 = 2.0  # ... and >= 2x from 4 threads
FAPILOG_TARGET = 3.0  # ... and >= 3x fapilog's
ENRICH_TARGET = 20_000.0


# ---------------------------------------------------------------------- the sinks


class CountingStream(io.StringIO):
    """An in-memory stream that sets ``done`` once ``target`` writes arrived.

    Every competitor writes one record per ``write`` call (StreamHandler writes the message
    and terminator together), so the write count is the record count.
    """

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target
        self.count = 0
        self.done = threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self.count += 1
        if self.count >= self.target:
            self.done.set()
        return n


def _stream_handler(stream: io.StringIO) -> logging.StreamHandler[Any]:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    return handler


class FapilogSink:
    """A fapilog sink writing the message to an in-memory stream."""

    name = "memory"

    def __init__(self, stream: CountingStream) -> None:
        self.stream = stream

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def write(self, entry: dict[str, Any]) -> None:
        self.stream.write(f"{entry.get('level')} bench {entry.get('message')}\n")


class SlowEnricher:
    """An enricher awaiting 0.5 ms of simulated I/O; usable by LoopHandler and fapilog."""

    name = "slow_lookup"

    async def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(ENRICH_DELAY)
        return {"region": "eu-west"}

    async def start(self) -> None:  # fapilog's lifecycle hooks
        return None

    async def stop(self) -> None:
        return None

    async def enrich(self, event: dict[str, Any]) -> dict[str, Any]:  # fapilog's entry point
        await asyncio.sleep(ENRICH_DELAY)
        return {"context": {"region": "eu-west"}}


# ---------------------------------------------------------------------- the pipelines


@dataclass
class _Pipeline:
    """One competitor set up for one round: ``log(i)`` from the callers, then ``finish()``."""

    log: Callable[[int], None]
    stream: CountingStream
    finish: Callable[[], int]  # tears down; returns records dropped (if the pipeline knows)


def _stdlib_logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    return logger


def _info(logger: logging.Logger) -> Callable[[int], None]:
    info = logger.info
    return lambda i: info("request %d handled", i)


def _info_new_context(logger: logging.Logger) -> Callable[[int], None]:
    info = logger.info
    set_id = request_id.set

    def log(i: int) -> None:
        set_id(i)
        info("request %d handled", i)

    return log


def _loop_handler(
    lt: loopthread.LoopThread, target: int, *, new_context: bool = False, **options: Any
) -> _Pipeline:
    stream = CountingStream(target)
    handler = LoopHandler(_stream_handler(stream), loop_thread=lt, **options)
    logger = _stdlib_logger("loop", handler)
    log = _info_new_context(logger) if new_context else _info(logger)

    def finish() -> int:
        handler.flush()
        stats = handler.stats()
        logger.removeHandler(handler)
        handler.close()
        return stats.dropped + (stats.channel.dropped if stats.channel else 0)

    return _Pipeline(log, stream, finish)


def _queue_listener(target: int) -> _Pipeline:
    stream = CountingStream(target)
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, _stream_handler(stream))
    listener.start()
    logger = _stdlib_logger("queue", logging.handlers.QueueHandler(q))

    def finish() -> int:
        listener.stop()
        return 0

    return _Pipeline(_info(logger), stream, finish)


def _plain_stream(target: int) -> _Pipeline:
    stream = CountingStream(target)
    logger = _stdlib_logger("stream", _stream_handler(stream))
    return _Pipeline(_info(logger), stream, lambda: 0)


def _fapilog(target: int, *, enricher: SlowEnricher | None = None) -> _Pipeline:
    import fapilog

    stream = CountingStream(target)
    settings = fapilog.Settings.model_validate({"core": {"enrichers": [], "redactors": []}})
    logger = fapilog.get_logger(
        "bench", sinks=[FapilogSink(stream)], settings=settings, reuse=False
    )
    if enricher is not None:
        logger.enable_enricher(enricher)  # type: ignore[arg-type]
    info = logger.info

    def finish() -> int:
        result = asyncio.run(logger.stop_and_drain())
        return int(result.dropped)

    return _Pipeline(lambda i: info(f"request {i} handled"), stream, finish)


# ---------------------------------------------------------------------- one round


@dataclass
class _Run:
    caller: float  # mean seconds per call, over every call of every thread
    samples: list[float]
    records_per_s: float
    written: int
    dropped: int


def _drive(pipeline: _Pipeline, threads: int, records: int, wait: float = 60.0) -> _Run:
    """Log ``records`` from ``threads`` threads; time each call and the whole delivery."""
    per_thread = records // threads
    barrier = threading.Barrier(threads + 1)
    samples: list[list[float]] = [[] for _ in range(threads)]
    log = pipeline.log
    clock = time.perf_counter

    def caller(index: int) -> None:
        mine = samples[index]
        append = mine.append
        request_id.set(index + 1)
        barrier.wait()
        for i in range(per_thread):
            t0 = clock()
            log(i)
            append(clock() - t0)

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = clock()
    for worker in workers:
        worker.join()
    delivered = pipeline.stream.done.wait(wait)
    elapsed = clock() - started
    dropped = pipeline.finish()
    written = pipeline.stream.count
    if not delivered:  # records were dropped: rate of what arrived, by the time it arrived
        elapsed = clock() - started
    flat = [s for mine in samples for s in mine]
    return _Run(
        caller=statistics.fmean(flat),
        samples=flat,
        records_per_s=written / elapsed,
        written=written,
        dropped=dropped,
    )


@dataclass
class _Series:
    runs: list[_Run] = field(default_factory=list)

    @property
    def caller(self) -> float:
        return statistics.median(r.caller for r in self.runs)

    @property
    def caller_p99(self) -> float:
        return p99([s for r in self.runs for s in r.samples])

    @property
    def records_per_s(self) -> float:
        return statistics.median(r.records_per_s for r in self.runs)

    @property
    def lost(self) -> int:
        return sum(r.dropped for r in self.runs)


def _compare(
    lt: loopthread.LoopThread, plan: _Plan, threads: int, with_fapilog: bool
) -> dict[str, _Series]:
    n = plan.records
    makers: dict[str, Callable[[], _Pipeline]] = {
        LOOP: lambda: _loop_handler(lt, n),
        LOOP_NEW_CONTEXT: lambda: _loop_handler(lt, n, new_context=True),
        QUEUE: lambda: _queue_listener(n),
        STREAM: lambda: _plain_stream(n),
    }
    if with_fapilog:
        makers[FAPILOG] = lambda: _fapilog(n)
    series = {name: _Series() for name in makers}
    for make in makers.values():  # warm-up round, not kept
        _drive(make(), threads, n)
    for _ in range(plan.rounds):
        for name, make in makers.items():
            series[name].runs.append(_drive(make(), threads, n))
    return series


def _enriched(lt: loopthread.LoopThread, plan: _Plan, with_fapilog: bool) -> dict[str, _Series]:
    n = plan.enrich_records
    makers: dict[str, Callable[[], _Pipeline]] = {
        LOOP: lambda: _loop_handler(lt, n, enrichers=[SlowEnricher()]),
    }
    if with_fapilog:
        m = plan.fapilog_enrich_records
        makers[FAPILOG] = lambda: _fapilog(m, enricher=SlowEnricher())
    series = {name: _Series() for name in makers}
    for _ in range(plan.enrich_rounds):
        for name, make in makers.items():
            records = n if name == LOOP else plan.fapilog_enrich_records
            series[name].runs.append(_drive(make(), 1, records, wait=15.0))
    return series


# ---------------------------------------------------------------------- exit


_EXIT_SCRIPTS = {
    LOOP: """
        import logging, sys, threading
        from loopthread.logging import LoopHandler
        handler = logging.FileHandler(sys.argv[1])
        logging.getLogger().addHandler(LoopHandler(handler))
        logging.getLogger().setLevel(logging.INFO)
        def worker(t):
            for i in range({n}):
                logging.info("%d %d", t, i)
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        """,
    QUEUE + " (stop() never called)": """
        import logging, logging.handlers, queue, sys, threading
        q = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(q, logging.FileHandler(sys.argv[1]))
        listener.start()
        logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
        logging.getLogger().setLevel(logging.INFO)
        def worker(t):
            for i in range({n}):
                logging.info("%d %d", t, i)
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        """,
    FAPILOG: """
        import sys, threading
        import fapilog
        class FileSink:
            name = "file"
            def __init__(self, path): self.f = open(path, "w")
            async def start(self): pass
            async def stop(self): self.f.flush()
            async def write(self, entry):
                self.f.write(str(entry.get("message")) + "\\n"); self.f.flush()
        settings = fapilog.Settings(core={{"enrichers": [], "redactors": []}})
        log = fapilog.get_logger("exit", sinks=[FileSink(sys.argv[1])], settings=settings)
        def worker(t):
            for i in range({n}):
                log.info(f"{{t}} {{i}}")
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        """,
}


@dataclass(frozen=True, slots=True)
class _Exit:
    logged: int
    written: int
    returncode: int
    seconds: float


def _exit_losses(plan: _Plan, with_fapilog: bool) -> dict[str, _Exit]:
    out: dict[str, _Exit] = {}
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, script in _EXIT_SCRIPTS.items():
            if name == FAPILOG and not with_fapilog:
                continue
            target = Path(tmp) / f"{len(out)}.log"
            source = textwrap.dedent(script.format(n=plan.exit_records))
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", source, str(target)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=env,
            )
            lines = target.read_text().count("\n") if target.exists() else 0
            out[name] = _Exit(
                4 * plan.exit_records, lines, proc.returncode, time.perf_counter() - started
            )
    return out


# ---------------------------------------------------------------------- report


def _fapilog_available() -> bool:
    try:
        import fapilog  # noqa: F401
    except ImportError:
        return False
    return True


def _table(one: dict[str, _Series], four: dict[str, _Series]) -> str:
    q1, q4 = one[QUEUE], four[QUEUE]
    rows = []
    for name, a in one.items():
        b = four[name]
        rows.append(
            [
                name,
                a.caller * 1e6,
                a.caller_p99 * 1e6,
                f"{a.caller / q1.caller:.2f}x",
                a.records_per_s,
                f"{a.records_per_s / q1.records_per_s:.2f}x",
                b.caller * 1e6,
                b.records_per_s,
                f"{b.records_per_s / q4.records_per_s:.2f}x",
                a.lost + b.lost,
            ]
        )
    return markdown_table(
        [
            "handler",
            "1 thread: µs per call",
            "p99 µs",
            "vs QueueHandler",
            "1 thread: records/s",
            "1 thread: vs QueueListener",
            "4 threads: µs per call",
            "4 threads: records/s",
            "4 threads: vs QueueListener",
            "dropped",
        ],
        rows,
        key="throughput",
    )


def _enrich_table(series: dict[str, _Series], plan: _Plan) -> str:
    rows = []
    for name, s in series.items():
        logged = plan.enrich_records if name == LOOP else plan.fapilog_enrich_records
        rows.append(
            [
                name,
                logged,
                statistics.median(r.written for r in s.runs),
                s.lost,
                s.records_per_s,
                s.caller * 1e6,
            ]
        )
    return markdown_table(
        [
            "handler",
            "logged per round",
            "written (median)",
            "dropped (all rounds)",
            "records/s",
            "µs per call",
        ],
        rows,
        key="enrich",
    )


def _exit_table(exits: dict[str, _Exit]) -> str:
    rows = [
        [name, e.logged, e.written, e.logged - e.written, e.returncode, e.seconds]
        for name, e in exits.items()
    ]
    return markdown_table(
        [
            "program that logs from 4 threads and returns",
            "logged",
            "written",
            "lost",
            "exit code",
            "s",
        ],
        rows,
        key="exit",
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _targets(
    one: dict[str, _Series],
    four: dict[str, _Series],
    enriched: dict[str, _Series],
    exits: dict[str, _Exit],
    plan: _Plan,
) -> list[str]:
    lines = []
    for name in (LOOP, LOOP_NEW_CONTEXT):
        caller = one[name].caller / one[QUEUE].caller
        r1 = one[name].records_per_s / one[QUEUE].records_per_s
        r4 = four[name].records_per_s / four[QUEUE].records_per_s
        lines += [
            f"- {name}: caller-side cost <= {CALLER_TARGET}x QueueHandler's (1 thread): "
            f"{caller:.2f}x, {_verdict(caller <= CALLER_TARGET)}",
            f"- {name}: end-to-end records/s >= QueueListener's from 1 thread: {r1:.2f}x, "
            f"{_verdict(r1 >= E2E_TARGET_1)}",
            f"- {name}: end-to-end records/s >= {E2E_TARGET_4:.0f}x QueueListener's from 4 "
            f"threads: {r4:.2f}x, {_verdict(r4 >= E2E_TARGET_4)}",
        ]
    if FAPILOG in one:
        f1 = one[LOOP].records_per_s / one[FAPILOG].records_per_s
        f4 = four[LOOP].records_per_s / four[FAPILOG].records_per_s
        lines.append(
            f"- end-to-end records/s >= {FAPILOG_TARGET:.0f}x fapilog's: {f1:.2f}x (1 thread), "
            f"{f4:.2f}x (4 threads), {_verdict(min(f1, f4) >= FAPILOG_TARGET)}"
        )
    else:
        lines.append("- >= 3x fapilog's: not measured (fapilog is not installed)")
    loop = enriched[LOOP]
    complete = all(r.written == plan.enrich_records for r in loop.runs) and loop.lost == 0
    lines.append(
        f"- with an enricher awaiting 0.5 ms, >= {ENRICH_TARGET:,.0f} records/s with nothing "
        f"dropped: {loop.records_per_s:,.0f} records/s, "
        f"{'nothing dropped' if complete else 'records DROPPED'}, "
        f"{_verdict(complete and loop.records_per_s >= ENRICH_TARGET)}"
    )
    lost = exits[LOOP].logged - exits[LOOP].written
    clean = lost == 0 and exits[LOOP].returncode == 0
    lines.append(f"- 0 records lost at exit: {lost} lost, {_verdict(clean)}")
    return lines


def _copy_context_cost(calls: int = 200_000) -> float:
    """Seconds per ``contextvars.copy_context()`` with a few variables set (best of 5)."""
    for k in range(4):
        extra: contextvars.ContextVar[int] = contextvars.ContextVar(f"bench_extra_{k}")
        extra.set(k)
    request_id.set(1)
    copy = contextvars.copy_context
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            copy()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def report(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section (tables, targets, notes)."""
    plan = QUICK if quick else FULL
    with_fapilog = _fapilog_available()
    started = time.perf_counter()
    with capture_logs():
        lt = loopthread.LoopThread("bench-logging")
        lt.start()
        try:
            one = _compare(lt, plan, 1, with_fapilog)
            four = _compare(lt, plan, 4, with_fapilog)
            enriched = _enriched(lt, plan, with_fapilog)
        finally:
            lt.stop()
    exits = _exit_losses(plan, with_fapilog)
    capture = contextvars.Context().run(_copy_context_cost)
    elapsed = time.perf_counter() - started
    versions = f"structlog {version('structlog')}"
    if with_fapilog:
        versions += f", fapilog {version('fapilog')}"
    return "\n".join(
        [
            f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs; "
            f"{versions}; {'--quick, ' if quick else ''}{elapsed:.0f} s.",
            "",
            f"### logger.info to an in-memory stream ({plan.rounds} interleaved rounds x "
            f"{plan.records:,} records)",
            "",
            _table(one, four),
            "",
            f"### One enricher awaiting 0.5 ms, 1 thread ({plan.enrich_rounds} rounds)",
            "",
            _enrich_table(enriched, plan),
            "",
            "### Exit without shutdown (a subprocess each)",
            "",
            _exit_table(exits),
            "",
            "### Targets (ratios within this run)",
            "",
            *_targets(one, four, enriched, exits, plan),
            "",
            "Notes:",
            f"- LoopHandler captures the caller's context with each record: "
            f"`contextvars.copy_context()` costs {capture * 1e9:.0f} ns per call here (5 "
            "variables set). A thread's consecutive records share one snapshot while its "
            'variables do not change; the "new context per call" row gives every record '
            "its own (and its timed call includes the `ContextVar.set`).",
            "- µs per call: every `logger.info` call timed in its own thread (mean over all "
            "calls of a round, median over rounds; p99 over all calls). With 4 threads it "
            "includes waiting for the GIL and for locks.",
            "- records/s: records written by the sink / wall time from the callers' start "
            "until the sink wrote the last one (median over rounds). StreamHandler writes in "
            "the caller, so its two columns measure the same thing.",
            "- each stdlib handler formats `%(levelname)s %(name)s %(message)s`; the fapilog "
            "sink writes the same fields from its entry dict. fapilog runs with "
            "`core.enrichers=[]` and `core.redactors=[]` (its defaults add runtime info and "
            "URL-credential scrubbing, which the others do not do) and otherwise its defaults "
            "(queue 10,000, drop after 50 ms of backpressure).",
            "- LoopHandler enriches the records of a batch concurrently (up to `batch_size`); "
            "fapilog runs its enrichers one event at a time.",
        ]
    )


if __name__ == "__main__":
    run_main("bench_logging", report, __doc__ or "")
