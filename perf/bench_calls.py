"""The blocking facade: one call from synchronous code into a coroutine, against the alternatives.

Two workloads: ``async def noop(x): return x`` (finishes without suspending) and one that awaits
``asyncio.sleep(0)`` (suspends once). Competitors, interleaved round by round in one run:

* ``lt.run``: a started ``LoopThread`` with the default asyncio loop, and one with uvloop,
  both with the default options: metrics on the global registry, the lag monitor
  (``lag_interval=0.5``) and the watchdog (``slow_callback=0.1``);
* the floor: ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` on a plain background
  loop thread, the least any cross-thread hand-off can do;
* ``asyncio.run`` per call, on the main thread (it installs and restores a SIGINT handler on
  every call there) and, as a second row, from a caller that is not the main thread;
* ``ThreadPoolExecutor.submit(asyncio.run, coro).result()``: the pattern loopthread replaces;
* anyio ``from_thread.start_blocking_portal().call``; asgiref ``async_to_sync``.

Then the same with 8 caller threads (throughput), and ``lt.gather`` of 100 coroutines.

Last, what observability costs ``lt.run(noop())``, interleaved in the same run: off
(``metrics_registry=None, lag_interval=None, slow_callback=None``), the watchdog only, and on
(the defaults, with a fresh ``CollectorRegistry``), plus off / on with uvloop. Each round uses a
fresh LoopThread with every thread on one CPU (see ``perf._harness.one_cpu``). The cost of a
scrape is in perf/bench_metrics.py.

Run: ``python -m perf.bench_calls [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from anyio.from_thread import start_blocking_portal
from asgiref.sync import async_to_sync
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

import loopthread
from perf._harness import (
    Result,
    background_loop,
    interleave,
    markdown_table,
    one_cpu,
    overhead_verdict,
    run_main,
    timed,
)

__all__ = ["report"]

Workload = Callable[[int], Coroutine[Any, Any, int]]
Call = Callable[[], object]
Method = Callable[[Workload], Call]

LT = "lt.run (defaults: metrics + monitor on)"
LT_UVLOOP = "lt.run, uvloop (defaults: metrics + monitor on)"
FLOOR = "run_coroutine_threadsafe().result() (floor)"
ASYNCIO_RUN = "asyncio.run per call"
ASYNCIO_RUN_MAIN = "asyncio.run per call, main thread"
ASYNCIO_RUN_OFF_MAIN = "asyncio.run per call, non-main thread"
EXECUTOR = "executor.submit(asyncio.run, coro)"
ANYIO = "anyio portal.call"
ASGIREF = "asgiref async_to_sync"
GATHER = "lt.gather (defaults: metrics + monitor on)"
GATHER_UVLOOP = "lt.gather, uvloop (defaults: metrics + monitor on)"
GATHER_FLOOR = "run_coroutine_threadsafe(gather()) (floor)"

# The observability section: LoopThread options per configuration.
OFF = "off"
WATCHDOG = "watchdog only"
ON = "on (metrics + lag + watchdog)"
UV_OFF = "uvloop: off"
UV_ON = "uvloop: on"
OVERHEAD_LIMIT = 1.05  # on / off, lt.run median

CALLER_THREADS = 8
GATHER_SIZE = 100


async def noop(x: int) -> int:
    return x


async def sleep0(x: int) -> int:
    await asyncio.sleep(0)
    return x


WORKLOADS: dict[str, Workload] = {"noop": noop, "sleep(0)": sleep0}


@dataclass(frozen=True, slots=True)
class _Plan:
    rounds: int  # one caller: interleaved rounds
    calls: int  # one caller: calls per competitor per round
    threaded_rounds: int
    threaded_calls: int  # 8 callers: calls per caller thread per round
    gather_rounds: int
    gather_reps: int  # gathers per competitor per round
    overhead_rounds: int  # metrics on / off: a fresh LoopThread per configuration per round
    overhead_calls: int


FULL = _Plan(
    rounds=30,
    calls=300,
    threaded_rounds=15,
    threaded_calls=150,
    gather_rounds=20,
    gather_reps=20,
    overhead_rounds=80,
    overhead_calls=1000,
)
QUICK = _Plan(
    rounds=6,
    calls=100,
    threaded_rounds=5,
    threaded_calls=50,
    gather_rounds=4,
    gather_reps=5,
    overhead_rounds=6,
    overhead_calls=300,
)


# ---------------------------------------------------------------------- the competitors


@contextlib.contextmanager
def _anyio_portal() -> Iterator[Callable[[Workload, int], int]]:
    """anyio's blocking portal (its own loop thread), as a typed ``call(fn, x)``."""
    with start_blocking_portal() as portal:

        def call(fn: Workload, x: int) -> int:
            result: int = portal.call(fn, x)
            return result

        yield call


def _asgiref(fn: Workload) -> Callable[[int], int]:
    """asgiref's ``async_to_sync(fn)``, typed; wrapped once, as a decorator would."""
    wrapped: Callable[[int], int] = async_to_sync(fn)
    return wrapped


async def _gather_all(coros: list[Coroutine[Any, Any, int]]) -> list[int]:
    return list(await asyncio.gather(*coros))


@dataclass
class _Rig:
    """Everything the competitors run on, started once for the whole benchmark."""

    lt: loopthread.LoopThread
    lt_uvloop: loopthread.LoopThread | None  # None when uvloop is not installed
    floor: asyncio.AbstractEventLoop
    pool: ThreadPoolExecutor  # the executor of the executor + asyncio.run pattern
    helper: ThreadPoolExecutor  # runs a whole timing loop off the main thread
    portal_call: Callable[[Workload, int], int]

    def methods(self, *, threaded: bool) -> dict[str, Method]:
        """Each competitor: given a workload, a zero-argument blocking call of it."""
        lt, floor, pool, portal_call = self.lt, self.floor, self.pool, self.portal_call
        methods: dict[str, Method] = {LT: lambda fn: lambda: lt.run(fn(1))}
        if self.lt_uvloop is not None:
            uv = self.lt_uvloop
            methods[LT_UVLOOP] = lambda fn: lambda: uv.run(fn(1))
        methods[FLOOR] = lambda fn: lambda: asyncio.run_coroutine_threadsafe(fn(1), floor).result()
        run_name = ASYNCIO_RUN if threaded else _asyncio_run_name()
        methods[run_name] = lambda fn: lambda: asyncio.run(fn(1))
        if not threaded and run_name == ASYNCIO_RUN_MAIN:
            # The same calls, timed from a thread that is not the main thread (no SIGINT dance).
            methods[ASYNCIO_RUN_OFF_MAIN] = methods[run_name]
        methods[EXECUTOR] = lambda fn: lambda: pool.submit(asyncio.run, fn(1)).result()
        methods[ANYIO] = lambda fn: lambda: portal_call(fn, 1)
        methods[ASGIREF] = lambda fn: _bind(_asgiref(fn))
        return methods


def _bind(sync_fn: Callable[[int], int]) -> Call:
    return lambda: sync_fn(1)


def _asyncio_run_name() -> str:
    on_main = threading.current_thread() is threading.main_thread()
    return ASYNCIO_RUN_MAIN if on_main else ASYNCIO_RUN_OFF_MAIN


@contextlib.contextmanager
def _rig() -> Iterator[_Rig]:
    """Start every loop, thread and portal; stop them all on the way out, whatever happens."""
    with contextlib.ExitStack() as stack:
        lt = stack.enter_context(loopthread.LoopThread(name="bench-lt"))
        try:
            lt_uvloop: loopthread.LoopThread | None = stack.enter_context(
                loopthread.LoopThread(name="bench-lt-uvloop", uvloop=True)
            )
        except ImportError:
            lt_uvloop = None
        floor = stack.enter_context(background_loop())
        pool = stack.enter_context(
            ThreadPoolExecutor(CALLER_THREADS, thread_name_prefix="bench-asyncio-run")
        )
        helper = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="bench-caller"))
        portal_call = stack.enter_context(_anyio_portal())
        yield _Rig(lt, lt_uvloop, floor, pool, helper, portal_call)


# ---------------------------------------------------------------------- the timing loops

Round = Callable[[], float]  # one round of one competitor: seconds per operation
MakeRound = Callable[[list[float]], Round]  # given the list that collects per-call samples


def _single_round(
    call: Call, n: int, helper: ThreadPoolExecutor | None, samples: list[float]
) -> Round:
    """``n`` calls in a row from this thread, or with the whole loop on ``helper``'s thread."""
    if helper is None:
        return lambda: timed(call, n, samples=samples)
    return lambda: helper.submit(timed, call, n, samples=samples).result()


def _threaded_round(call: Call, n: int, samples: list[float]) -> Round:
    """8 threads released together make ``n`` calls each; wall time per call (1 / throughput)."""

    def run() -> float:
        barrier = threading.Barrier(CALLER_THREADS + 1, timeout=60.0)
        outs: list[list[float]] = [[] for _ in range(CALLER_THREADS)]
        errors: list[BaseException] = []

        def caller(out: list[float]) -> None:
            try:
                barrier.wait()
                timed(call, n, samples=out)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                errors.append(exc)
                barrier.abort()

        threads = [
            threading.Thread(target=caller, args=(out,), name=f"bench-caller-{i}", daemon=True)
            for i, out in enumerate(outs)
        ]
        for thread in threads:
            thread.start()
        try:
            barrier.wait()
            start = time.perf_counter()
        finally:
            for thread in threads:
                thread.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        for out in outs:
            samples.extend(out)
        return elapsed / (CALLER_THREADS * n)

    return run


def _run_section(rounds: dict[str, MakeRound], n_rounds: int) -> dict[str, Result]:
    """Warm every competitor up once, then interleave them; warm-up calls are not sampled."""
    for make in rounds.values():
        make([])()
    samples: dict[str, list[float]] = {name: [] for name in rounds}
    results = interleave(
        {name: make(samples[name]) for name, make in rounds.items()}, n_rounds, warmup=0
    )
    for name, result in results.items():
        result.samples = samples[name]
    return results


def _single(rig: _Rig, plan: _Plan, fn: Workload) -> dict[str, Result]:
    rounds: dict[str, MakeRound] = {}
    for name, method in rig.methods(threaded=False).items():
        helper = rig.helper if name == ASYNCIO_RUN_OFF_MAIN else None
        rounds[name] = functools.partial(_single_round, method(fn), plan.calls, helper)
    return _run_section(rounds, plan.rounds)


def _threaded(rig: _Rig, plan: _Plan, fn: Workload) -> dict[str, Result]:
    rounds: dict[str, MakeRound] = {
        name: functools.partial(_threaded_round, method(fn), plan.threaded_calls)
        for name, method in rig.methods(threaded=True).items()
    }
    return _run_section(rounds, plan.threaded_rounds)


def _gather(rig: _Rig, plan: _Plan, fn: Workload) -> dict[str, Result]:
    """Seconds per coroutine: each timed operation makes and gathers 100 coroutines."""
    lt, floor = rig.lt, rig.floor
    ops: dict[str, Call] = {GATHER: lambda: lt.gather(*[fn(i) for i in range(GATHER_SIZE)])}
    if rig.lt_uvloop is not None:
        uv = rig.lt_uvloop
        ops[GATHER_UVLOOP] = lambda: uv.gather(*[fn(i) for i in range(GATHER_SIZE)])
    ops[GATHER_FLOOR] = lambda: asyncio.run_coroutine_threadsafe(
        _gather_all([fn(i) for i in range(GATHER_SIZE)]), floor
    ).result()
    rounds: dict[str, MakeRound] = {
        name: functools.partial(_single_round, call, plan.gather_reps, None)
        for name, call in ops.items()
    }
    results = _run_section(rounds, plan.gather_rounds)
    for result in results.values():
        result.per_op = [t / GATHER_SIZE for t in result.per_op]
        result.samples = [t / GATHER_SIZE for t in result.samples]
    return results


# ---------------------------------------------------------------------- observability on / off


def _overhead_configs() -> dict[str, dict[str, Any]]:
    off: dict[str, Any] = {"metrics_registry": None, "lag_interval": None, "slow_callback": None}
    on: dict[str, Any] = {"lag_interval": 0.5, "slow_callback": 0.1}  # the defaults
    configs = {
        OFF: off,
        # The select wrapper and the watchdog thread, without metrics or lag probes.
        WATCHDOG: {**off, "slow_callback": 0.1},
        ON: on,
    }
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return configs
    configs[UV_OFF] = {**off, "uvloop": True}
    configs[UV_ON] = {**on, "uvloop": True}
    return configs


def _overhead_round(options: dict[str, Any], calls: int, samples: list[float]) -> float:
    """One round on a fresh LoopThread: a long-lived one per configuration would turn the
    placement of its threads, fixed at its start, into a bias between configurations."""
    kwargs = {"metrics_registry": CollectorRegistry(), **options}
    with loopthread.LoopThread("bench-overhead", **kwargs) as lt:
        for _ in range(20):
            lt.run(noop(1))
        return timed(lambda: lt.run(noop(1)), calls, samples=samples)


def _overhead(plan: _Plan) -> tuple[dict[str, Result], bool]:
    """lt.run(noop()) per configuration; noop, because the cost added per call weighs most
    against the cheapest call. Medians over rounds of the mean per call, so that rare costs
    (the watchdog's wake-up after an idle spell) count."""
    configs = _overhead_configs()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    competitors: dict[str, Callable[[], float]] = {
        name: functools.partial(_overhead_round, options, plan.overhead_calls, samples[name])
        for name, options in configs.items()
    }
    with one_cpu() as pinned:
        results = interleave(competitors, plan.overhead_rounds)
    for name, result in results.items():
        # The warm-up round's samples are in there too: 1 round in 80.
        result.samples = samples[name]
    return results, pinned


def _overhead_table(results: dict[str, Result]) -> str:
    rows: list[list[object]] = []
    for name, result in results.items():
        base = results[UV_OFF if name.startswith("uvloop") else OFF]
        rows.append(
            [name, _us(result.median), _us(result.p99), f"{result.median / base.median:.3f}x"]
        )
    return markdown_table(["configuration", "median µs", "p99 µs", "vs off"], rows, key="overhead")


def _overhead_targets(results: dict[str, Result]) -> list[str]:
    lines = [
        overhead_verdict(
            "lt.run(noop()) median, metrics + monitor on / off",
            results[ON].median / results[OFF].median,
            OVERHEAD_LIMIT,
        )
    ]
    if UV_ON in results:
        lines.append(
            overhead_verdict(
                "lt.run(noop()) median, uvloop, on / off",
                results[UV_ON].median / results[UV_OFF].median,
                OVERHEAD_LIMIT,
            )
        )
    return lines


# ---------------------------------------------------------------------- the report

Section = dict[str, dict[str, Result]]  # workload -> competitor -> result


def _median_call(result: Result) -> float:
    """The median single call (or single coroutine), robust to the odd slow round."""
    return statistics.median(result.samples)


def _us(seconds: float) -> float:
    return seconds * 1e6


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def _latency_table(section: Section, floor: str, unit: str, *, key: str) -> str:
    headers = ["method"]
    for workload in section:
        headers += [f"{workload} median {unit}", f"{workload} p99 {unit}", f"{workload} vs floor"]
    rows: list[list[object]] = []
    for name in next(iter(section.values())):
        row: list[object] = [name]
        for results in section.values():
            result = results[name]
            ratio = _median_call(result) / _median_call(results[floor])
            row += [_us(_median_call(result)), _us(result.p99), _x(ratio)]
        rows.append(row)
    return markdown_table(headers, rows, key=key)


def _throughput(result: Result) -> float:
    return 1.0 / result.median  # per_op holds wall seconds per call, one value per round


def _throughput_table(section: Section) -> str:
    headers = ["method"]
    for workload in section:
        headers += [f"{workload} calls/s", f"{workload} p99 µs", f"{workload} vs floor (time)"]
    rows: list[list[object]] = []
    for name in next(iter(section.values())):
        row: list[object] = [name]
        for results in section.values():
            result = results[name]
            ratio = _throughput(results[FLOOR]) / _throughput(result)
            row += [_throughput(result), _us(result.p99), _x(ratio)]
        rows.append(row)
    return markdown_table(headers, rows, key="threads")


def _verdict(label: str, ratio: float, target: str, met: bool) -> str:
    return f"- {label}: {_x(ratio)} (target {target}): {'**met**' if met else '**NOT met**'}"


def _targets(single: Section, threaded: Section, gathered: Section) -> list[str]:
    lines: list[str] = []
    for workload, results in single.items():
        lt = _median_call(results[LT])

        def faster(name: str, results: dict[str, Result] = results, lt: float = lt) -> float:
            return _median_call(results[name]) / lt

        ratio = lt / _median_call(results[FLOOR])
        lines.append(_verdict(f"{workload}: lt.run median / floor", ratio, "≤ 1.0x", ratio <= 1.0))
        for name, goal in ((EXECUTOR, 2.0), (ANYIO, 1.3), (ASGIREF, 4.0)):
            ratio = faster(name)
            lines.append(
                _verdict(f"{workload}: {name} / lt.run", ratio, f"≥ {goal}x", ratio >= goal)
            )
    for workload, results in threaded.items():
        ratio = _throughput(results[LT]) / _throughput(results[ASYNCIO_RUN])
        lines.append(
            _verdict(
                f"{workload}, {CALLER_THREADS} threads: lt.run throughput / asyncio.run per call",
                ratio,
                "≥ 3x",
                ratio >= 3.0,
            )
        )
    for workload, results in gathered.items():
        per_coro = _us(_median_call(results[GATHER]))
        met = per_coro <= 10.0
        lines.append(
            f"- {workload}: lt.gather of {GATHER_SIZE}: {per_coro:.2f} µs per coroutine "
            f"(target ≤ 10 µs): {'**met**' if met else '**NOT met**'}"
        )
    return lines


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _echo_problems(logs: list[MutableMapping[str, Any]]) -> None:
    """The lifecycle logs are captured to keep the report clean; anything worse still shows."""
    for entry in logs:
        if entry.get("log_level") in ("warning", "error", "critical"):
            print(f"bench_calls: {entry}", file=sys.stderr)


def report(quick: bool = False) -> str:
    """Run the benchmark and return its markdown section (tables, targets, notes)."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    with capture_logs() as logs:
        with _rig() as rig:
            single = {w: _single(rig, plan, fn) for w, fn in WORKLOADS.items()}
            threaded = {w: _threaded(rig, plan, fn) for w, fn in WORKLOADS.items()}
            gathered = {w: _gather(rig, plan, fn) for w, fn in WORKLOADS.items()}
            has_uvloop = rig.lt_uvloop is not None
        overhead, pinned = _overhead(plan)
    _echo_problems(logs)
    elapsed = time.perf_counter() - started

    lines = [
        f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs; "
        f"uvloop {_version('uvloop')}, anyio {_version('anyio')}, "
        f"asgiref {_version('asgiref')}; {'--quick, ' if quick else ''}{elapsed:.0f} s.",
        "",
        f"### 1 caller thread: µs per call ({plan.rounds} interleaved rounds x "
        f"{plan.calls} calls each)",
        "",
        _latency_table(single, FLOOR, "µs", key="single"),
        "",
        f"### {CALLER_THREADS} caller threads: throughput ({plan.threaded_rounds} interleaved "
        f"rounds x {CALLER_THREADS} threads x {plan.threaded_calls} calls)",
        "",
        _throughput_table(threaded),
        "",
        f"### lt.gather of {GATHER_SIZE} coroutines: µs per coroutine "
        f"({plan.gather_rounds} rounds x {plan.gather_reps} gathers)",
        "",
        _latency_table(gathered, GATHER_FLOOR, "µs", key="gather"),
        "",
        f"### Metrics and monitor on / off: lt.run(noop()), µs per call "
        f"({plan.overhead_rounds} interleaved rounds x {plan.overhead_calls} calls, a fresh "
        f"LoopThread per round{', all threads on one CPU' if pinned else ''})",
        "",
        _overhead_table(overhead),
        "",
        "### Targets (ratios within this run; the floor is the plain background loop)",
        "",
        *_targets(single, threaded, gathered),
        *_overhead_targets(overhead),
        "",
        "Notes:",
        "- the lt.run and lt.gather rows of the first three tables run on LoopThreads with the "
        "default options: metrics on the global registry, lag monitor every 0.5 s, watchdog at "
        "0.1 s. Their on / off cost is the last table's.",
        "- median and p99 are over every single call (every coroutine for gather); "
        "vs floor = median / the floor's median, lower is faster. With 8 threads, calls/s is "
        "the median over rounds of all calls / wall time, and vs floor is the floor's "
        "throughput / this one's.",
        f"- `{ASYNCIO_RUN_MAIN}`: on the main thread asyncio.run installs and restores a SIGINT "
        "handler on every call; the `non-main thread` row times the same calls with the whole "
        "timing loop on a helper thread, which skips that. With 8 threads every caller is "
        "non-main.",
        "- executor + asyncio.run uses one shared ThreadPoolExecutor of 8 workers. asgiref, "
        "called from plain sync code (no running loop), starts a 1-thread executor and a new "
        "loop for every call.",
        "- metrics on / off: median = median over rounds of the mean µs per call, p99 over "
        "every call. Off = `metrics_registry=None, lag_interval=None, slow_callback=None`; on "
        "= the defaults with a fresh `CollectorRegistry`. Per call, on adds two perf_counter() "
        "calls and a histogram bucket increment in the loop's _execute, and the watchdog's "
        "select wrapper (a tuple store and a flag read per loop iteration, two iterations per "
        "lt.run); the lag probe runs every 0.5 s and the counters are read from stats() only "
        "when scraped. On one CPU because unpinned, which CPUs a fresh LoopThread's threads "
        "land on moves a hand-off between about 25 and 75 µs: far more than the 5% measured.",
    ]
    if quick:
        lines.append(
            "- --quick is a smoke run: too few calls for the verdicts above to count; "
            "judge the targets on a full run on an otherwise idle machine."
        )
    if not has_uvloop:
        lines.append("- uvloop is not installed: its rows are missing (pip install uvloop).")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main("bench_calls", report, __doc__ or "")
