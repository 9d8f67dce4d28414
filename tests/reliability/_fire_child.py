"""The programs that test_under_fire.py runs in subprocesses: exits under adverse conditions.

Usage: ``python _fire_child.py MODE OUTDIR [ARG]``. Every mode writes what loopthread accepted
to ``OUTDIR/accepted`` and what the handlers got to ``OUTDIR/handled`` (``kind count`` lines,
one ``os.write`` each on ``O_APPEND`` descriptors, so nothing depends on buffers being flushed
at exit), prints ``RESULT <json>`` lines with what it observed, and ``MAIN_RETURNS <time>``
(``time.time()``) just before its main code returns, so the parent can time the exit alone.
Work that must look stuck sleeps (:data:`STUCK`, far past every bound the parent allows).

Modes:

* ``stuck_executor KIND``: user code stuck in the default loop's executor at exit. KIND:
  ``run_in_executor`` (a call in flight awaits a stuck job), ``sync_enricher`` (an
  ``EnricherChain`` plain-function enricher that timed out but keeps its thread),
  ``log_handler`` (a ``LoopHandler`` whose wrapped ``logging.Handler`` is stuck in ``emit``).
* ``mp KIND``: ``multiprocessing`` children started by fork, which end with ``os._exit()``.
  KIND: ``process`` (4 ``Process`` children put 500 channel items each into a slow handler),
  ``log_records`` (2 children log 200 records each through a ``LoopHandler`` to a slow handler),
  ``pool`` (a fork ``ProcessPoolExecutor`` of 2 workers runs 8 tasks of 250 channel items).
* ``signal_in_drain FIRST``: a 3,000-item backlog; the first signal (FIRST: ``sigterm`` with
  ``install_signal_handlers()``, or ``sigint``: Ctrl-C) ends main; the channel handler sends
  the same signal 3 more times while the exit drain runs (the LoopThread is ``stopping``).
* ``many_blocked N``: N LoopThreads, each loop blocked by a coroutine that never awaits, one
  of them with a ``LoopHandler`` holding a record; main returns.
* ``after_main``: a non-daemon thread waits until main returned, then uses the executor of a
  LoopThread: ``run_in_executor``, ``asyncio.to_thread``, ``loop.getaddrinfo``, a plain-function
  enricher, a ``LoopHandler`` (whose wrapped handler writes in the executor).
* ``stopped_events N``: N started LoopThreads, loopthread's events shown at DEBUG on stdout
  (``logging.getLogger("loopthread")`` with a ``StreamHandler``); main returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import loopthread
from loopthread.logging import LoopHandler

#: How long "stuck" work sleeps: far past every bound the parent allows for the exit.
STUCK = 60.0
#: Bound on this program's own waits for a state it set up (a healthy run takes milliseconds).
BOUND = 10.0

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def _fd(outdir: str, name: str) -> int:
    return os.open(os.path.join(outdir, name), _FLAGS)


def _tally(fd: int, kind: str, count: int) -> None:
    os.write(fd, f"{kind} {count}\n".encode())


def _result(**fields: Any) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


def _main_returns() -> None:
    print(f"MAIN_RETURNS {time.time()!r}", flush=True)


def _block_loop(entered: threading.Event) -> Any:
    async def block() -> None:
        entered.set()
        time.sleep(STUCK)  # noqa: ASYNC251 - user code that blocks the loop thread

    return block()


# ---------------------------------------------------------------------------- stuck_executor


class _StuckHandler(logging.Handler):
    """A wrapped handler stuck in I/O: ``emit`` never returns within the test."""

    def __init__(self, entered: threading.Event) -> None:
        super().__init__()
        self._entered = entered

    def emit(self, record: logging.LogRecord) -> None:
        self._entered.set()
        time.sleep(STUCK)


def stuck_executor(kind: str, outdir: str) -> None:
    del outdir
    lt = loopthread.default()
    entered = threading.Event()
    if kind == "run_in_executor":

        def stuck_job() -> None:
            entered.set()
            time.sleep(STUCK)

        async def awaits_stuck_job() -> None:
            await asyncio.get_running_loop().run_in_executor(None, stuck_job)

        lt.submit(awaits_stuck_job())
    elif kind == "sync_enricher":

        def stuck_enricher(event: Any) -> dict[str, Any]:
            entered.set()
            time.sleep(STUCK)
            return {"never": True}

        chain = loopthread.EnricherChain([stuck_enricher], timeout=0.1)
        enriched = chain.enrich_sync({"event": 1})  # the enricher times out; its thread stays
        _result(enriched=sorted(enriched))
    elif kind == "log_handler":
        log = logging.getLogger("fire-stuck")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(LoopHandler(_StuckHandler(entered)))
        log.info("this record's handler gets stuck in I/O")
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    if not entered.wait(BOUND):
        raise SystemExit("the stuck work never started")
    _main_returns()


# ---------------------------------------------------------------------------- mp

_pool_channel: Any = None


def _slow_channel(outdir: str, kind: str) -> Any:
    handled = _fd(outdir, "handled")

    async def on_batch(batch: list[int]) -> None:
        await asyncio.sleep(0.005)  # a slow sink: a backlog is left when the child's work ends
        _tally(handled, kind, len(batch))

    return loopthread.default().channel(on_batch, maxsize=100_000, batch_size=10)


def _process_target(outdir: str, n: int) -> None:
    channel = _slow_channel(outdir, "channel")
    accepted = sum(bool(channel.put(i)) for i in range(n))
    _tally(_fd(outdir, "accepted"), "channel", accepted)
    # Returning ends the child with os._exit() once multiprocessing ran its finalizers.


class _SlowHandler(logging.Handler):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.002)  # slow I/O
        _tally(self._fd, "log", 1)


def _log_target(outdir: str, n: int) -> None:
    log = logging.getLogger(f"fire-mp-{os.getpid()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoopHandler(_SlowHandler(_fd(outdir, "handled"))))
    for i in range(n):
        log.info("record %d", i)
    _tally(_fd(outdir, "accepted"), "log", n)


def _pool_task(outdir: str, n: int) -> int:
    global _pool_channel
    if _pool_channel is None:
        _pool_channel = _slow_channel(outdir, "channel")
    return sum(bool(_pool_channel.put(i)) for i in range(n))


def mp(kind: str, outdir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    if kind in ("process", "log_records"):
        target, count, n = (_process_target, 4, 500) if kind == "process" else (_log_target, 2, 200)
        children = [ctx.Process(target=target, args=(outdir, n)) for _ in range(count)]
        for child in children:
            child.start()
        for child in children:
            child.join(BOUND * 2)
        _result(children=count, exitcodes=[c.exitcode for c in children])
    elif kind == "pool":
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            futures = [pool.submit(_pool_task, outdir, 250) for _ in range(8)]
            accepted = sum(f.result(BOUND) for f in futures)
        _tally(_fd(outdir, "accepted"), "channel", accepted)
        _result(children=2, tasks=8)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    _main_returns()


# ---------------------------------------------------------------------------- signal_in_drain


def signal_in_drain(first: str, outdir: str) -> None:
    if first == "sigterm":
        loopthread.install_signal_handlers()
        sig = signal.SIGTERM
    else:
        sig = signal.SIGINT
    handled = _fd(outdir, "handled")
    sent = _fd(outdir, "sent")
    lt = loopthread.default()
    batches_while_stopping = 0

    async def on_batch(batch: list[int]) -> None:
        nonlocal batches_while_stopping
        if lt.state == "stopping":  # the exit drain runs
            batches_while_stopping += 1
            if batches_while_stopping in (1, 10, 30):
                os.kill(os.getpid(), sig)
                _tally(sent, "signal", 1)
        await asyncio.sleep(0.005)  # 300 batches: the drain takes about 1.5 s
        _tally(handled, "channel", len(batch))

    channel = lt.channel(on_batch, maxsize=100_000, batch_size=10)
    accepted = sum(bool(channel.put(i)) for i in range(3000))
    _tally(_fd(outdir, "accepted"), "channel", accepted)
    _main_returns()
    os.kill(os.getpid(), sig)  # SystemExit(143) or KeyboardInterrupt lands in the wait below
    threading.Event().wait(BOUND)
    raise SystemExit("the first signal never arrived")


# ---------------------------------------------------------------------------- many_blocked


def many_blocked(n: int, outdir: str) -> None:
    loops = [loopthread.LoopThread(f"fire-blocked-{i}").start() for i in range(n)]
    entered = [threading.Event() for _ in loops]
    for lt, event in zip(loops, entered, strict=True):
        lt.submit(_block_loop(event))
    for event in entered:
        if not event.wait(BOUND):
            raise SystemExit("a loop was never blocked")
    log = logging.getLogger("fire-blocked")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(
        LoopHandler(logging.FileHandler(os.path.join(outdir, "log")), loop_thread=loops[0])
    )
    log.info("a record queued to a blocked loop")
    _result(loops=n)
    _main_returns()


# ---------------------------------------------------------------------------- after_main


def after_main(outdir: str) -> None:
    lt = loopthread.LoopThread("fire-late").start()

    def region(event: Any) -> dict[str, Any]:  # a plain function: runs in the executor
        return {"region": "eu"}

    chain = loopthread.EnricherChain([region], loop_thread=lt, timeout=BOUND)
    log = logging.getLogger("fire-late")
    log.propagate = False
    log.setLevel(logging.INFO)
    log_path = os.path.join(outdir, "log")
    file_handler = logging.FileHandler(log_path)
    loop_handler = LoopHandler(file_handler, loop_thread=lt)
    log.addHandler(loop_handler)

    async def in_executor() -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: 42)

    async def to_thread() -> Any:
        return await asyncio.to_thread(lambda: 43)

    async def dns() -> Any:
        infos = await asyncio.get_running_loop().getaddrinfo("127.0.0.1", 80)
        return len(infos) > 0

    def late_work() -> None:
        threading.main_thread().join(BOUND)
        outcomes: dict[str, Any] = {"main_alive": threading.main_thread().is_alive()}
        checks: dict[str, Any] = {
            "run_in_executor": lambda: lt.run(in_executor(), timeout=BOUND),
            "to_thread": lambda: lt.run(to_thread(), timeout=BOUND),
            "getaddrinfo": lambda: lt.run(dns(), timeout=BOUND),
            "sync_enricher": lambda: chain.enrich_sync({"e": 1}).get("region"),
        }
        for name, check in checks.items():
            try:
                outcomes[name] = check()
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                outcomes[name] = f"error: {exc!r}"
        stats = chain.stats().enrichers[0]
        outcomes["enricher_ok"] = stats.ok
        outcomes["enricher_failures"] = stats.failures
        log.info("logged after main returned")
        loop_handler.flush(BOUND)
        file_handler.flush()
        with open(log_path) as f:
            outcomes["log_lines"] = f.read().splitlines()
        _result(**outcomes)

    threading.Thread(target=late_work, name="fire-late-worker").start()  # non-daemon
    _main_returns()


# ---------------------------------------------------------------------------- stopped_events


def stopped_events(n: int) -> None:
    events = logging.getLogger("loopthread")
    events.setLevel(logging.DEBUG)
    events.addHandler(logging.StreamHandler(sys.stdout))
    loops = [loopthread.LoopThread(f"fire-lt-{i}").start() for i in range(n)]
    for lt in loops:  # each loop finishes a call during the exit drain: the stops end together
        lt.submit(asyncio.sleep(0.2))
    _result(started=sum(lt.running for lt in loops))
    _main_returns()


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "stuck_executor":
        stuck_executor(argv[1], argv[2])
    elif mode == "mp":
        mp(argv[1], argv[2])
    elif mode == "signal_in_drain":
        signal_in_drain(argv[1], argv[2])
    elif mode == "many_blocked":
        many_blocked(int(argv[1]), argv[2])
    elif mode == "after_main":
        after_main(argv[1])
    elif mode == "stopped_events":
        stopped_events(int(argv[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
