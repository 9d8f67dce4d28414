"""What an idle loopthread costs: wake-ups per second of every thread it starts, and CPU.

Run: ``python -m perf.bench_idle [--quick]`` (10 s windows; ``--quick``: 2 s).

A loop with no work has no lag to measure and cannot stall, so with the *default* monitoring
(lag probe every 0.5 s, stall watchdog at 0.1 s) an idle LoopThread must cost nothing: no
wake-up of the loop thread, of the monitor thread or of anything else loopthread started.
Wake-ups are the threads' voluntary context switches (``/proc/self/task/<tid>/status``), CPU is
their ``utime + stime`` (``/proc/self/task/<tid>/stat``), over the same window. Each row is
measured alone, after its threads settled; the anchors are what loopthread replaces or builds
on: a parked janus queue (an asyncio loop thread awaiting ``async_q.get()``), the 1 ms poller
(daglite's event processor), and the stdlib's ``QueueListener`` (a thread blocked in ``get``).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import janus

import loopthread
from perf._harness import markdown_table, run_main

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _task_status(native_id: int) -> tuple[int, float] | None:
    """(voluntary context switches, CPU seconds) of one thread of this process."""
    base = Path(f"/proc/self/task/{native_id}")
    try:
        status = (base / "status").read_text()
        stat = (base / "stat").read_text()
    except OSError:
        return None
    switches = next(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches:")
    )
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return switches, cpu


def _measure(threads: list[threading.Thread], seconds: float) -> tuple[float, float]:
    """Wake-ups per second and CPU share of ``threads`` together, over ``seconds``."""
    ids = [t.native_id for t in threads if t.native_id is not None]
    before = [_task_status(i) for i in ids]
    time.sleep(seconds)  # the measurement window: nothing else runs
    after = [_task_status(i) for i in ids]
    wakeups = cpu = 0.0
    for b, a in zip(before, after, strict=True):
        if a is not None and b is not None:
            wakeups += a[0] - b[0]
            cpu += a[1] - b[1]
    return wakeups / seconds, cpu / seconds


def _threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@contextmanager
def _loopthread(name: str, **options: object) -> Iterator[list[threading.Thread]]:
    async def noop() -> None:
        pass

    async def handle(batch: list[int]) -> None:
        pass

    lt = loopthread.LoopThread(name, **options).start()  # type: ignore[arg-type]
    try:
        lt.run(noop())
        ch = lt.channel(handle)
        ch.put(1)
        ch.flush()
        lt.run(asyncio.to_thread(lambda: None))  # an executor worker exists too
        yield _threads_named(name)
    finally:
        lt.stop()


@contextmanager
def _janus_parked() -> Iterator[list[threading.Thread]]:
    ready = threading.Event()
    done: list[Callable[[], None]] = []

    def run() -> None:
        async def main() -> None:
            q: janus.Queue[int] = janus.Queue()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def wake() -> None:
                loop.call_soon_threadsafe(stop.set)

            done.append(wake)
            getter = asyncio.ensure_future(q.async_q.get())
            ready.set()
            await stop.wait()
            getter.cancel()
            await q.aclose()

        asyncio.run(main())

    thread = threading.Thread(target=run, name="anchor-janus")
    thread.start()
    ready.wait()
    try:
        yield [thread]
    finally:
        done[0]()
        thread.join()


@contextmanager
def _poller() -> Iterator[list[threading.Thread]]:
    items: deque[int] = deque()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            while items:
                items.popleft()
            time.sleep(0.001)

    thread = threading.Thread(target=consume, name="anchor-poller")
    thread.start()
    try:
        yield [thread]
    finally:
        stop.set()
        thread.join()


@contextmanager
def _queue_listener() -> Iterator[list[threading.Thread]]:
    q: queue.Queue[logging.LogRecord] = queue.Queue()
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    thread = listener._thread  # the stdlib keeps no public handle on its thread
    assert thread is not None
    try:
        yield [thread]
    finally:
        listener.stop()


def report(*, quick: bool = False) -> str:
    """Run the idle measurements and return a markdown table."""
    seconds = 2.0 if quick else 10.0
    rows = []
    cases: list[tuple[str, Callable[[], object]]] = [
        ("LoopThread, defaults (metrics, lag probe, watchdog)", lambda: _loopthread("idle-def")),
        (
            "LoopThread, monitoring off",
            lambda: _loopthread(
                "idle-off", metrics_registry=None, lag_interval=None, slow_callback=None
            ),
        ),
        ("anchor: parked janus queue", _janus_parked),
        ("anchor: 1 ms poller", _poller),
        ("anchor: QueueListener", _queue_listener),
    ]
    for name, make in cases:
        with make() as threads:  # type: ignore[attr-defined]
            time.sleep(0.5)  # settle: the monitor's grace after activity, the one last probe
            wakeups, cpu = _measure(threads, seconds)
        rows.append([name, len(threads), f"{wakeups:.1f}", f"{cpu * 100:.2f}%"])
    return (
        f"Idle for {seconds:g} s after one call, one channel item and one executor job.\n\n"
        + markdown_table(
            ["who", "threads", "wake-ups/s (all its threads)", "CPU"], rows, key="idle"
        )
    )


if __name__ == "__main__":
    run_main("bench_idle", report, __doc__ or "")
