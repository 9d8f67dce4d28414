"""Pre-fork serving: the gunicorn example app against per-request loops, and what
prometheus_client's multiprocess mode costs loopthread.

**Requests/s and CPU per request.** A real gunicorn (``--workers 2``, sync workers,
``--preload``) runs each app; every request makes the same async upstream call
(``GET /item`` to an asyncio HTTP/1.1 keep-alive server in its own process, as in
tests/test_gunicorn.py) with httpx's ``AsyncClient``:

* ``loopthread``: ``examples/gunicorn/app.py`` as it is (``loopthread.run`` on the worker's
  default loop, one ``AsyncClient`` and so one connection pool per worker);
* ``loopthread, multiprocess metrics``: the same with ``PROMETHEUS_MULTIPROC_DIR`` set and
  ``examples/gunicorn/gunicorn.conf.py``: the metrics written to prometheus_client's files;
* ``loopthread again``: the first server's twin, so the table shows how far two identical
  servers measured in the same run differ (on a shared VM, easily 10-20%);
* ``asyncio.run per request``: :func:`asyncio_run_app`, a new loop per request;
* ``asgiref async_to_sync``: :func:`asgiref_app`; from a sync worker (no running loop) it
  too starts a new loop for every call.

A client belongs to the loop it first ran on, so the two per-request-loop apps create one
per request (``async with httpx.AsyncClient()``), and with it a new upstream connection:
that is what those patterns cost, and the ``upstream connections`` column shows it. They
get their best case: one ``ssl.SSLContext`` per process, passed as ``verify=``, since a new
client would otherwise load the CA store on every request. All
servers run for the whole benchmark and get their load in turn, round by round. The load
comes from this process: ``LOAD_THREADS`` threads, each sending its share of the round's
requests one after another on a new connection per request (no keep-alive: gunicorn's sync
workers close the connection after each response). CPU per request is the ``utime + stime``
of the gunicorn master and its workers (``/proc/<pid>/stat``) over the round / requests;
the upstream's is reported apart.

**lt.run in multiprocess mode.** In a child interpreter with ``PROMETHEUS_MULTIPROC_DIR``
set: ``lt.run(noop())`` per call with metrics off, with metrics on and the files not written
(``loopthread._metrics_mp.active`` patched to False: the single-process cost), and with the
files written, interleaved on fresh LoopThreads, every thread on one CPU (as bench_calls'
on / off table); then the cost of one write (``metrics.flush``) of a loop with 10 channels
and 2 enricher chains, how many writes a busy loop made per second, and the wake-ups per
second of loopthread's threads while idle with the files on.

Run: ``python -m perf.bench_prefork [--quick]`` (Linux: reads ``/proc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from perf._harness import Result, interleave, markdown_table, one_cpu, overhead_verdict, p99

__all__ = ["asgiref_app", "asyncio_run_app", "report"]

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "examples" / "gunicorn"
WORKERS = 2
LOAD_THREADS = 4
OVERHEAD_LIMIT = 1.05
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class _Plan:
    rounds: int
    requests: int  # per competitor and round
    call_rounds: int
    calls: int
    busy_seconds: float
    idle_seconds: float


FULL = _Plan(rounds=5, requests=480, call_rounds=40, calls=1000, busy_seconds=5.0, idle_seconds=5.0)
QUICK = _Plan(rounds=3, requests=120, call_rounds=10, calls=500, busy_seconds=1.0, idle_seconds=1.0)

LOOPTHREAD = "loopthread (examples/gunicorn/app.py)"
LOOPTHREAD_MP = "loopthread, multiprocess metrics"
LOOPTHREAD_AA = "loopthread again (A/A: the noise between two identical servers)"
ASYNCIO_RUN = "asyncio.run per request"
ASGIREF = "asgiref async_to_sync"


# ---------------------------------------------------------------------- the competitor apps

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8001")
# Made once per process: a new AsyncClient would otherwise load the CA store per request.
_TLS = ssl.create_default_context()


async def _fetch_with_new_client(path: str) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=UPSTREAM, timeout=5.0, verify=_TLS) as client:
        response = await client.get(path)
        return response.status_code, response.text


def _respond(start_response: Callable[..., Any], status: int, text: str) -> Iterable[bytes]:
    body = f"{text} pid={os.getpid()}\n".encode()
    start_response(
        f"{200 if status == 200 else 502} OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def asyncio_run_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: the upstream call in ``asyncio.run``, a new loop (and client) per request."""
    status, text = asyncio.run(_fetch_with_new_client(environ.get("PATH_INFO", "/")))
    return _respond(start_response, status, text)


def asgiref_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: the upstream call through ``asgiref.sync.async_to_sync``."""
    from asgiref.sync import async_to_sync

    status, text = async_to_sync(_fetch_with_new_client)(environ.get("PATH_INFO", "/"))
    return _respond(start_response, status, text)


# ---------------------------------------------------------------------- processes

_UPSTREAM_CODE = r"""
import asyncio, sys
opened = 0
async def handle(reader, writer):
    global opened
    opened += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = str(opened).encode() if head.startswith(b"GET /__opened") else b"hello"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
asyncio.run(main())
"""


def _cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class _Upstream:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _UPSTREAM_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def opened(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/__opened")
            return int(conn.getresponse().read()) - 1  # not this one
        finally:
            conn.close()

    def cpu(self) -> float:
        return _cpu_seconds([self.proc.pid])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Server:
    """One gunicorn serving one app, booted and warm."""

    def __init__(self, app: str, chdir: Path, upstream: int, extra: Mapping[str, str]) -> None:
        with socket_port() as port:
            self.port = port
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(chdir),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(WORKERS),
            "--backlog",
            "1024",
            "--log-level",
            "warning",
            "--preload",
            *(["--config", extra["config"]] if "config" in extra else []),
            app,
        ]
        env = {**os.environ, "UPSTREAM_URL": f"http://127.0.0.1:{upstream}"}
        env.update({k: v for k, v in extra.items() if k != "config"})
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:  # booted: it answers (the connect is refused until it listens)
            try:
                status, body = _get(self.port, "/item")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"gunicorn {app} did not start") from None
                time.sleep(0.05)
        if status != 200:
            raise RuntimeError(f"gunicorn {app}: {status} {body!r}")
        self.workers = _children(self.proc.pid)

    def cpu(self) -> float:
        return _cpu_seconds([self.proc.pid, *self.workers])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


# ---------------------------------------------------------------------- load


@dataclass
class _Round:
    seconds_per_request: float
    cpu_per_request: float
    upstream_cpu_per_request: float
    connections_per_request: float


def _load(server: _Server, upstream: _Upstream, requests: int, latencies: list[float]) -> _Round:
    """``requests`` requests from LOAD_THREADS threads; every answer must be 200."""
    per_thread = requests // LOAD_THREADS
    failures: list[object] = []
    clock = time.perf_counter

    def client() -> None:
        for i in range(per_thread):
            t0 = clock()
            status, body = _get(server.port, f"/item{i}")
            latencies.append(clock() - t0)
            if status != 200:
                failures.append((status, body))

    opened, cpu, upstream_cpu = upstream.opened(), server.cpu(), upstream.cpu()
    threads = [threading.Thread(target=client) for _ in range(LOAD_THREADS)]
    start = clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = clock() - start
    done = per_thread * LOAD_THREADS
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]!r}")
    return _Round(
        seconds_per_request=wall / done,
        cpu_per_request=(server.cpu() - cpu) / done,
        upstream_cpu_per_request=(upstream.cpu() - upstream_cpu) / done,
        # minus the connection of the first opened() call itself
        connections_per_request=(upstream.opened() - opened - 1) / done,
    )


def _serve(plan: _Plan) -> tuple[dict[str, Result], dict[str, list[_Round]]]:
    apps = {
        LOOPTHREAD: ("app:app", APP_DIR, {}),
        LOOPTHREAD_MP: ("app:app", APP_DIR, {"config": str(APP_DIR / "gunicorn.conf.py")}),
        LOOPTHREAD_AA: ("app:app", APP_DIR, {}),
        ASYNCIO_RUN: ("perf.bench_prefork:asyncio_run_app", ROOT, {}),
        ASGIREF: ("perf.bench_prefork:asgiref_app", ROOT, {}),
    }
    rounds: dict[str, list[_Round]] = {name: [] for name in apps}
    latencies: dict[str, list[float]] = {name: [] for name in apps}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as files:
        upstream = _Upstream()
        stack.callback(upstream.close)
        servers: dict[str, _Server] = {}
        for name, (app, chdir, extra) in apps.items():
            env = dict(extra)
            if name == LOOPTHREAD_MP:
                env["PROMETHEUS_MULTIPROC_DIR"] = files
            servers[name] = _Server(app, chdir, upstream.port, env)
            stack.callback(servers[name].close)

        def run(name: str) -> float:
            one = _load(servers[name], upstream, plan.requests, latencies[name])
            rounds[name].append(one)
            return one.seconds_per_request

        results = interleave(
            {name: functools.partial(run, name) for name in apps}, plan.rounds, warmup=1
        )
    for name, result in results.items():
        rounds[name] = rounds[name][1:]  # not the warm-up round
        result.samples = latencies[name][plan.requests // LOAD_THREADS * LOAD_THREADS :]
    return results, rounds


def _serve_table(results: dict[str, Result], rounds: dict[str, list[_Round]]) -> str:
    base = results[LOOPTHREAD]
    base_cpu = statistics.median(r.cpu_per_request for r in rounds[LOOPTHREAD])
    rows: list[list[object]] = []
    for name, result in results.items():
        cpu = statistics.median(r.cpu_per_request for r in rounds[name])
        rows.append(
            [
                name,
                1 / result.median,
                statistics.median(result.samples) * 1e3,
                p99(result.samples) * 1e3,
                cpu * 1e6,
                statistics.median(r.upstream_cpu_per_request for r in rounds[name]) * 1e6,
                f"{statistics.median(r.connections_per_request for r in rounds[name]):.2f}",
                f"{base.median / result.median:.2f}x",
                f"{cpu / base_cpu:.2f}x",
            ]
        )
    return markdown_table(
        [
            "app",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "server CPU µs / request",
            "upstream CPU µs / request",
            "upstream connections / request",
            "requests/s vs loopthread",
            "CPU vs loopthread",
        ],
        rows,
        key="serve",
    )


# ---------------------------------------------------------------------- lt.run in multiprocess mode

OFF = "metrics off"
ONE_PROCESS = "metrics on, files not written (one process)"
FILES = "metrics on, multiprocess files written"


def _child_main(quick: bool) -> None:
    """In a child with PROMETHEUS_MULTIPROC_DIR set: print the measurements as JSON."""
    import loopthread
    from loopthread import _metrics_mp, metrics
    from perf._harness import timed

    plan = QUICK if quick else FULL
    assert _metrics_mp.active(), "PROMETHEUS_MULTIPROC_DIR must be set before the import"
    writes = 0
    real_write = _metrics_mp.LoopWriter.write

    def counted(self: _metrics_mp.LoopWriter) -> bool:
        nonlocal writes
        written = real_write(self)
        writes += written
        return written

    async def noop(x: int) -> int:
        return x

    def one_round(options: dict[str, Any], files: bool, samples: list[float]) -> float:
        patch = contextlib.nullcontext() if files else mock.patch.object(_metrics_mp, "active")
        with patch as active:
            if active is not None:
                active.return_value = False
            lt = loopthread.LoopThread("bench-mp", **options).start()
        try:
            for _ in range(20):
                lt.run(noop(1))
            return timed(lambda: lt.run(noop(1)), plan.calls, samples=samples)
        finally:
            lt.stop()

    off = {"metrics_registry": None, "lag_interval": None, "slow_callback": None}
    configs = {OFF: (off, False), ONE_PROCESS: ({}, False), FILES: ({}, True)}
    samples: dict[str, list[float]] = {name: [] for name in configs}
    competitors: dict[str, Callable[[], float]] = {
        name: functools.partial(one_round, options, files, samples[name])
        for name, (options, files) in configs.items()
    }
    with one_cpu() as pinned:
        results = interleave(competitors, plan.call_rounds)
    # A loop kept busy with back-to-back calls: how often its files are written.
    patched = mock.patch.object(_metrics_mp.LoopWriter, "write", counted)
    with patched, loopthread.LoopThread("bench-busy") as lt:
        writes = 0
        calls = 0
        start = time.perf_counter()
        while time.perf_counter() - start < plan.busy_seconds:
            lt.run(noop(1))
            calls += 1
        busy = time.perf_counter() - start
        busy_writes = writes
    out: dict[str, Any] = {
        "pinned": pinned,
        "medians": {name: r.median for name, r in results.items()},
        "p99s": {name: p99(samples[name]) for name in configs},
        "busy_writes_per_s": busy_writes / busy,
        "busy_calls": calls,
    }
    out["write_us"], out["idle"] = _write_cost_and_idle(plan, metrics)
    sys.stdout.write(json.dumps(out) + "\n")


def _write_cost_and_idle(plan: _Plan, metrics: Any) -> tuple[float, dict[str, float]]:
    import loopthread
    from perf._harness import timed

    async def handle(batch: list[int]) -> None:
        return None

    async def enrich(event: Mapping[str, Any]) -> dict[str, Any]:
        return {"f": 1}

    with loopthread.LoopThread("bench-write") as lt:
        channels = [lt.channel(handle, name=f"channel-{c}") for c in range(10)]
        for channel in channels:
            for i in range(100):
                channel.put(i)
            channel.flush(timeout=10)
        chains = [
            loopthread.EnricherChain(
                [loopthread.enricher(enrich, name=f"e{i}") for i in range(5)],
                loop_thread=lt,
                name=f"chain-{c}",
            )
            for c in range(2)
        ]
        for chain in chains:
            for i in range(100):
                chain.enrich_sync({"n": i})
        samples: list[float] = []
        timed(lambda: metrics.flush(lt), 200, samples=samples)
        idle = _idle_wakeups(plan.idle_seconds)
    return statistics.median(samples) * 1e6, idle


def _idle_wakeups(seconds: float) -> dict[str, float]:
    """Voluntary context switches per second of this process's loopthread threads."""
    time.sleep(1.0)  # let the monitor park after the last work (it stays awake 0.1 s)
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}

    def switches() -> dict[str, int]:
        counts: dict[str, int] = {}
        for tid, name in names.items():
            if not name.startswith("bench-write"):
                continue
            try:
                status = Path(f"/proc/self/task/{tid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    counts[name] = int(line.split()[1])
        return counts

    before = switches()
    time.sleep(seconds)
    after = switches()
    return {name: (after[name] - before[name]) / seconds for name in after if name in before}


def _calls_in_mp_mode(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as files:
        proc = subprocess.run(
            [sys.executable, "-m", "perf.bench_prefork", "--mp-child", *(["--quick"] * quick)],
            cwd=ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": files},
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _calls_table(child: dict[str, Any]) -> str:
    base = child["medians"][OFF]
    rows = [
        [name, median * 1e6, child["p99s"][name] * 1e6, f"{median / base:.3f}x"]
        for name, median in child["medians"].items()
    ]
    return markdown_table(["configuration", "median µs", "p99 µs", "vs off"], rows, key="calls")


# ---------------------------------------------------------------------- report


def report(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section (tables, targets, notes)."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    results, rounds = _serve(plan)
    served = time.perf_counter() - started
    child = _calls_in_mp_mode(quick)
    elapsed = time.perf_counter() - started
    medians = child["medians"]
    files_vs_one = medians[FILES] / medians[ONE_PROCESS]
    lt_rps = 1 / results[LOOPTHREAD].median
    lt_cpu = statistics.median(r.cpu_per_request for r in rounds[LOOPTHREAD])

    def ratio(name: str) -> tuple[float, float]:
        """(loopthread's requests/s / name's, name's CPU per request / loopthread's)"""
        cpu = statistics.median(r.cpu_per_request for r in rounds[name])
        return lt_rps * results[name].median, cpu / lt_cpu

    idle = ", ".join(f"{name}: {rate:.1f}" for name, rate in sorted(child["idle"].items()))
    return "\n".join(
        [
            f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs; "
            f"httpx {_version('httpx')}, gunicorn {_version('gunicorn')}, asgiref "
            f"{_version('asgiref')}, prometheus_client {_version('prometheus_client')}; "
            f"{'--quick, ' if quick else ''}{elapsed:.0f} s ({served:.0f} s serving).",
            "",
            f"### gunicorn, {WORKERS} sync workers, one upstream call per request "
            f"({plan.rounds} interleaved rounds x {plan.requests} requests from "
            f"{LOAD_THREADS} threads, a new connection per request)",
            "",
            _serve_table(results, rounds),
            "",
            f"### lt.run(noop()) in multiprocess mode, µs per call ({plan.call_rounds} "
            f"interleaved rounds x {plan.calls} calls, a fresh LoopThread per round"
            f"{', all threads on one CPU' if child['pinned'] else ''})",
            "",
            _calls_table(child),
            "",
            f"- one write of a loop with 10 channels and 2 chains x 5 enrichers "
            f"(`metrics.flush`): {child['write_us']:.0f} µs. A loop kept busy with back-to-back "
            f"lt.run calls ({child['busy_calls']:,} in {plan.busy_seconds:.0f} s) was written "
            f"{child['busy_writes_per_s']:.1f} times per second (at most 1 / 0.5 s).",
            f"- idle, with the files on, wake-ups per second: {idle or 'no thread found'}.",
            "",
            "### Targets (ratios within this run)",
            "",
            "- requests/s, loopthread / asyncio.run per request: "
            f"{ratio(ASYNCIO_RUN)[0]:.2f}x; server CPU per request, asyncio.run / loopthread: "
            f"{ratio(ASYNCIO_RUN)[1]:.2f}x",
            "- requests/s, loopthread / asgiref async_to_sync: "
            f"{ratio(ASGIREF)[0]:.2f}x; server CPU per request, asgiref / loopthread: "
            f"{ratio(ASGIREF)[1]:.2f}x",
            "- requests/s, loopthread / loopthread with multiprocess metrics: "
            f"{ratio(LOOPTHREAD_MP)[0]:.2f}x; server CPU per request, multiprocess / not: "
            f"{ratio(LOOPTHREAD_MP)[1]:.2f}x; the same two ratios for the identical twin: "
            f"{ratio(LOOPTHREAD_AA)[0]:.2f}x, {ratio(LOOPTHREAD_AA)[1]:.2f}x (no target: "
            "whole servers on a shared VM are too coarse for 5%; the lt.run row below is not)",
            overhead_verdict(
                "lt.run(noop()) median, multiprocess files written / not written",
                files_vs_one,
                OVERHEAD_LIMIT,
            ),
            "",
            "Notes:",
            "- requests/s: the median over rounds of requests / wall time of the round; p50 "
            "and p99 over every request; CPU: median over rounds (the clock tick is "
            f"1/{_TICKS} s, so short rounds are coarse); ratios to the loopthread row.",
            "- the per-request-loop apps open an upstream connection per request (a client "
            "cannot outlive its loop); loopthread keeps one pool per worker. With 2 cores "
            "shared by the load generator, the upstream and the workers, requests/s is "
            "bounded by all three: CPU per request is the cleaner comparison.",
            "- multiprocess mode: the files are written at the monitor thread's own wake-ups "
            "(at most every 0.5 s while a loop has work, once after it went idle, at stop), "
            "never at each call; writing them at each call would cost ~5 µs per lt.run "
            "(4-5 prometheus_client value writes of 0.9-2 µs each).",
        ]
    )


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main() -> None:
    if "--mp-child" in sys.argv:
        _child_main("--quick" in sys.argv)
        return
    from perf._harness import run_main

    run_main("bench_prefork", report, __doc__ or "")


if __name__ == "__main__":
    main()
