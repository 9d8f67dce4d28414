"""Under fire (issue 11): exits with stuck work, fork children, signals in the drain, dead loops.

Each test pins one promise of the README (*Shutdown*, *Exit*, *Errors*, *Logs*) that an
adversarial pass broke, through the public API only. Exit scenarios run ``_fire_child.py`` (see
its docstring) in a subprocess with a hard timeout: a child that does not exit in time is
killed and the test fails ("hung"). Exit durations are measured from the child's last line of
main code (``MAIN_RETURNS``) to the end of the process.

Items of the issue covered here: 2 (stuck executor work at exit), 3 (multiprocessing children),
4 (signals during the exit drain), 5 (a loop that ``stop()`` gave up on), 6 (non-daemon threads
after main returned), 7 (one exit deadline for all loops), 10 (bad input), 11 (lifecycle events
at exit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

import loopthread
from loopthread import _util as _latch
from loopthread.logging import LoopHandler
from tests.reliability._support import SLACK, answer_of, record, run_python

CHILD = str(Path(__file__).with_name("_fire_child.py"))

#: loopthread._process.EXIT_TIMEOUT, the one deadline interpreter exit gives all loops together
#: (README, *Exit*); restated here so the test also runs against versions that lack the name.
EXIT_TIMEOUT = 5.0
#: What ``stop()`` may take past its deadline when the loop is blocked (README, *Shutdown*).
STOP_SLACK = 0.25
#: A bound on an answer that must come soon (a healthy run answers in milliseconds).
PROMPT = 5.0
#: A bound on an answer that must come at once (README: "a dead loop never hangs anyone").
AT_ONCE = 2.0
#: A timeout no lock or event accepts: it must mean "no limit" (README, issue item 10).
BEYOND_TIMEOUT_MAX = threading.TIMEOUT_MAX * 10


# ---------------------------------------------------------------------------- helpers


class Child:
    """What a ``_fire_child.py`` run left: exit code, output, tallies, exit duration."""

    def __init__(self, proc: subprocess.CompletedProcess[str], ended: float, outdir: Path) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.outdir = outdir
        returns = re.findall(r"^MAIN_RETURNS (\S+)$", proc.stdout, re.MULTILINE)
        #: Seconds from the end of the child's main code to the end of the process.
        self.exit_seconds = ended - float(returns[-1]) if returns else math.nan
        self.results: dict[str, Any] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                self.results.update(json.loads(line[len("RESULT ") :]))

    def tally(self, name: str) -> Counter[str]:
        """Sum the ``kind count`` lines of ``OUTDIR/name``."""
        totals: Counter[str] = Counter()
        path = self.outdir / name
        if path.exists():
            for line in path.read_text().splitlines():
                kind, count = line.split()
                totals[kind] += int(count)
        return totals

    def tail(self) -> str:
        """The end of stdout and stderr, for failure messages."""
        return f"--- stdout\n{self.stdout[-1500:]}\n--- stderr\n{self.stderr[-3000:]}"


def run_child(args: list[str], outdir: Path, *, hard_timeout: float, scenario: str) -> Child:
    """Run ``_fire_child.py args``; a child still running after ``hard_timeout`` is killed,
    recorded as hung under ``scenario``, and fails the test."""
    try:
        proc = run_python([CHILD, *args], timeout=hard_timeout)
    except subprocess.TimeoutExpired as exc:
        record(scenario, hung=1, killed_after_s=hard_timeout)
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(
            f"the child hung: killed after {hard_timeout}s\n--- stdout\n{out[-1500:]}\n"
            f"--- stderr\n{err[-3000:]}"
        )
    return Child(proc, time.time(), outdir)


def in_daemon_thread(
    fn: Callable[[], Any],
) -> tuple[threading.Thread, concurrent.futures.Future[Any]]:
    """Run ``fn()`` in a daemon thread (a call that never returns cannot hold up the run)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def body() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - the outcome is the test's to judge
            future.set_exception(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, future


#: Where the waits live: ``threading`` (a Condition, an Event) and the channel's latch.
WAIT_FILES = frozenset({threading.__file__, _latch.__file__})


def in_wait(thread: threading.Thread) -> bool:
    """True while ``thread`` is blocked in a wait (a Condition, an Event, a channel latch)."""
    ident = thread.ident
    frame = sys._current_frames().get(ident) if ident is not None else None
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename in WAIT_FILES:
            return True
        frame = frame.f_back
    return False


def wait_until(predicate: Callable[[], bool], bound: float = PROMPT) -> bool:
    """Poll ``predicate`` (a state, cheap to read) until it is true or ``bound`` passed."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def blocked_in_wait(thread: threading.Thread) -> bool:
    """Wait until ``thread`` blocks in a wait (or ends); True if it is blocked."""
    wait_until(lambda: in_wait(thread) or not thread.is_alive())
    return in_wait(thread)


@contextmanager
def blocked_loop(lt: loopthread.LoopThread) -> Iterator[None]:
    """Block ``lt``'s loop with user code that never awaits; unblock it on the way out."""
    entered = threading.Event()
    release = threading.Event()

    async def block() -> None:
        entered.set()
        release.wait(60)  # blocks the loop thread itself, like a stray time.sleep()

    lt.submit(block())
    try:
        assert entered.wait(PROMPT), "the blocking coroutine never ran"
        yield
    finally:
        release.set()
        thread = lt.thread
        if thread is not None:
            thread.join(PROMPT)


def quiet_loop(name: str, **options: Any) -> loopthread.LoopThread:
    """A started LoopThread without the lag monitor and stall watchdog (no log noise)."""
    return loopthread.LoopThread(name, lag_interval=None, slow_callback=None, **options).start()


def outcome(future: concurrent.futures.Future[Any], bound: float = PROMPT) -> str:
    """A short description of ``future``'s answer (or ``"no answer"``) for comparisons."""
    done, _ = concurrent.futures.wait([future], timeout=bound)
    if not done:
        return f"no answer within {bound}s"
    value = answer_of(future, 0)
    return type(value).__name__ if isinstance(value, BaseException) else repr(value)


def raised(fn: Callable[[], Any]) -> str:
    """The name of the exception ``fn()`` raised, or ``returned <value>``."""
    try:
        value = fn()
    except BaseException as exc:  # noqa: BLE001 - the outcome is the test's to judge
        return type(exc).__name__
    return f"returned {value!r}"


# ---------------------------------------------------------------------------- item 2


@pytest.mark.parametrize("kind", ["run_in_executor", "sync_enricher", "log_handler"])
def test_exit_is_bounded_whatever_is_stuck_in_the_executor(tmp_path: Path, kind: str) -> None:
    """Interpreter exit holds its bound (one EXIT_TIMEOUT, plus stop()'s slack) although user
    code is stuck in the default loop's executor for a minute: a job awaited by a call in
    flight, a plain-function enricher that timed out, a LoopHandler's wrapped handler stuck in
    emit(). The stdlib pool would join its workers without a timeout before atexit."""
    scenario = f"under fire: exit, {kind} stuck 60 s"
    child = run_child(
        ["stuck_executor", kind, str(tmp_path)], tmp_path, hard_timeout=14, scenario=scenario
    )
    record(
        scenario,
        exit_s=round(child.exit_seconds, 2),
        exit_code=child.returncode,
        hung=0,
    )
    assert child.returncode == 0, child.tail()
    assert child.exit_seconds < EXIT_TIMEOUT + STOP_SLACK + 2 * SLACK, child.tail()


# ---------------------------------------------------------------------------- item 3


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("process", Counter(channel=4 * 500)),
        ("log_records", Counter(log=2 * 200)),
        ("pool", Counter(channel=8 * 250)),
    ],
)
def test_multiprocessing_fork_children_drain_at_their_end(
    tmp_path: Path, kind: str, expected: Counter[str]
) -> None:
    """A multiprocessing child started by fork ends with os._exit() (no atexit), yet what it
    handed to loopthread is delivered: channel items put by Process children, LoopHandler
    records logged by them, and channel items put by ProcessPoolExecutor workers, each into a
    slow handler that still has a backlog when the child's work ends."""
    scenario = f"under fire: multiprocessing fork, {kind}"
    child = run_child(["mp", kind, str(tmp_path)], tmp_path, hard_timeout=14, scenario=scenario)
    accepted = child.tally("accepted")
    handled = child.tally("handled")
    record(
        scenario,
        children=child.results.get("children", 0),
        accepted=sum(accepted.values()),
        delivered=sum(handled.values()),
        lost=sum(accepted.values()) - sum(handled.values()),
    )
    assert child.returncode == 0, child.tail()
    assert accepted == expected, child.tail()
    assert handled == accepted, child.tail()


# ---------------------------------------------------------------------------- item 4


@pytest.mark.parametrize(
    ("first", "exit_codes"),
    [("sigterm", (128 + signal.SIGTERM,)), ("sigint", (128 + signal.SIGINT, -signal.SIGINT))],
)
def test_signals_during_the_exit_drain_do_not_tear_it_down(
    tmp_path: Path, first: str, exit_codes: tuple[int, ...]
) -> None:
    """A SIGTERM (install_signal_handlers) or Ctrl-C ends main with a 3,000-item backlog; the
    same signal arrives 3 more times while the exit drain runs: the drain goes on (no
    "Exception ignored in atexit callback"), every accepted item is handled, and the exit code
    is the first signal's."""
    scenario = f"under fire: {first} during the exit drain"
    child = run_child(
        ["signal_in_drain", first, str(tmp_path)], tmp_path, hard_timeout=14, scenario=scenario
    )
    accepted = child.tally("accepted")
    handled = child.tally("handled")
    sent = child.tally("sent")["signal"]
    record(
        scenario,
        signals=1 + sent,
        items=accepted["channel"],
        lost=accepted["channel"] - handled["channel"],
        exit_code=child.returncode,
    )
    assert "Exception ignored in atexit callback" not in child.stderr, child.tail()
    assert accepted["channel"] == 3000, child.tail()
    assert sent == 3, child.tail()  # the drain lasted long enough to receive all three
    assert handled["channel"] == accepted["channel"], child.tail()
    assert child.returncode in exit_codes, child.tail()


# ---------------------------------------------------------------------------- item 5


def test_a_loop_that_stop_gave_up_on_closes_its_channels_and_wakes_every_waiter() -> None:
    """stop() gives up on a loop blocked by user code: at once its channels refuse puts with
    ChannelClosedError, what was inside is counted unhandled (in stats() and the report), a
    producer blocked on a full channel and a flush() without timeout both wake, nothing is
    handled afterwards, and later calls get LoopNotRunningError."""
    lt = quiet_loop("fire-dead-channels")
    handled: list[Any] = []

    async def handle(batch: list[Any]) -> None:
        handled.extend(batch)

    full = lt.channel(handle, maxsize=2, overflow="block", name="full")
    other = lt.channel(handle, name="other")
    with blocked_loop(lt):
        assert [full.put(1), full.put(2), other.put("x")] == [True, True, True]
        producer, blocked_put = in_daemon_thread(lambda: full.put(3))
        flusher, flush = in_daemon_thread(other.flush)  # no timeout
        assert blocked_in_wait(producer), outcome(blocked_put, 0)
        assert blocked_in_wait(flusher), outcome(flush, 0)

        started = time.monotonic()
        report = lt.stop(timeout=0.5)
        stop_took = time.monotonic() - started

        # Every answer must come at once; each call runs in a daemon thread, so one that
        # would block forever costs AT_ONCE seconds and shows as "no answer".
        observed = {
            "stop finished": report.finished,
            "state": lt.state,
            "blocked producer": outcome(blocked_put, AT_ONCE),
            "flush without timeout": outcome(flush, AT_ONCE),
            "later put (other)": outcome(in_daemon_thread(lambda: other.put("y"))[1], AT_ONCE),
            "later put (full)": outcome(in_daemon_thread(lambda: full.put(4))[1], AT_ONCE),
            "later run": outcome(
                in_daemon_thread(lambda: lt.run(asyncio.sleep(0), timeout=PROMPT))[1], AT_ONCE
            ),
            "unhandled (full)": full.stats().unhandled,
            "unhandled (other)": other.stats().unhandled,
            "report items_unhandled": report.items_unhandled,
            "handled": list(handled),
        }
    expected = {
        "stop finished": False,
        "state": "dead",
        "blocked producer": "ChannelClosedError",
        "flush without timeout": "False",
        "later put (other)": "ChannelClosedError",
        "later put (full)": "ChannelClosedError",
        "later run": "LoopNotRunningError",
        "unhandled (full)": 2,
        "unhandled (other)": 1,
        "report items_unhandled": 3,
        "handled": [],
    }
    record(
        "under fire: stop() gives up on a blocked loop",
        waiters_woken=sum(
            observed[k] != f"no answer within {AT_ONCE}s"
            for k in ("blocked producer", "flush without timeout")
        ),
        counted_unhandled=report.items_unhandled,
        lost=3 - report.items_unhandled,
        stop_s=round(stop_took, 2),
    )
    assert observed == expected
    assert stop_took < 0.5 + STOP_SLACK + SLACK
    # Once the loop runs again (the blocking code returned), nothing is handled late.
    assert handled == []
    for ch in (full, other):
        stats = ch.stats()
        assert stats.handled + stats.failed + stats.dropped + stats.unhandled == stats.put, stats


def _log_into_a_given_up_loop(
    name: str,
) -> tuple[LoopHandler, list[str], loopthread.ShutdownReport, list[MutableMapping[str, Any]], Any]:
    """Log one record through a LoopHandler into a loop that stop() then gives up on.

    Returns the handler (still attached, loop unblocked again), what its wrapped handler wrote,
    stop()'s report, loopthread's events meanwhile, and the logger.
    """
    lt = quiet_loop(name)
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    handler = LoopHandler(Collect(), loop_thread=lt)
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    with structlog.testing.capture_logs() as events, blocked_loop(lt):
        log.info("queued to a loop that will be given up")
        report = lt.stop(timeout=0.5)
    return handler, written, report, events, log


def test_loop_handler_flush_does_not_wait_on_a_loop_that_stop_gave_up_on() -> None:
    """A LoopHandler bound to a loop that stop() gave up on (what logging.shutdown meets at
    exit): flush() and close() return at once instead of waiting their 5 s on the dead loop,
    and the record that was queued is counted unhandled (handler stats and stop()'s report)."""
    handler, written, report, _, log = _log_into_a_given_up_loop("fire-dead-logging")
    try:
        started = time.monotonic()
        handler.flush()  # default timeout: 5 s
        flush_took = time.monotonic() - started
        started = time.monotonic()
        handler.close()
        close_took = time.monotonic() - started
    finally:
        log.removeHandler(handler)
    channel = handler.stats().channel
    unhandled = -1 if channel is None else channel.unhandled
    record(
        "under fire: LoopHandler on a given-up loop",
        flush_s=round(flush_took, 2),
        close_s=round(close_took, 2),
        counted_unhandled=unhandled,
        lost=1 - unhandled - len(written),
    )
    assert not report.finished, report
    assert flush_took < SLACK, f"flush() waited {flush_took:.2f}s on a dead loop"
    assert close_took < SLACK, f"close() waited {close_took:.2f}s on a dead loop"
    assert written == []
    assert unhandled == 1
    assert report.items_unhandled == 1, report


def test_records_left_in_a_loop_that_stop_gave_up_on_are_reported_in_a_log_event() -> None:
    """The record a given-up loop could not handle is not lost without a word: a warning or
    error event of loopthread carries the count (at exit nobody sees stop()'s report, so the
    log is the only place a user can learn it)."""
    handler, _, report, events, log = _log_into_a_given_up_loop("fire-dead-logging-word")
    log.removeHandler(handler)
    handler.close()
    reported = [
        e
        for e in events
        if e.get("log_level") in ("warning", "error", "critical")
        and 1 in (e.get("unhandled"), e.get("items_unhandled"))
    ]
    record(
        "under fire: unhandled record of a given-up loop logged", events_with_count=len(reported)
    )
    assert report.items_unhandled == 1, report
    assert reported, f"no warning/error event reports the unhandled record: {events}"


# ---------------------------------------------------------------------------- item 6


def test_non_daemon_threads_can_use_the_executor_after_main_returned(tmp_path: Path) -> None:
    """A non-daemon thread that runs on after main returned (README: "they may use the loops
    until then") still gets the loop's executor: run_in_executor, asyncio.to_thread,
    loop.getaddrinfo and a plain-function enricher all work, and a LoopHandler record logged
    then is written."""
    scenario = "under fire: executor after main returned"
    child = run_child(["after_main", str(tmp_path)], tmp_path, hard_timeout=14, scenario=scenario)
    results = child.results
    record(
        scenario,
        uses=4 + 1,
        failed=sum(
            1
            for k in ("run_in_executor", "to_thread", "getaddrinfo", "sync_enricher")
            if isinstance(results.get(k), str) and str(results.get(k)).startswith("error")
        ),
    )
    assert child.returncode == 0, child.tail()
    assert results.get("main_alive") is False, child.tail()  # main had returned
    assert {k: results.get(k) for k in ("run_in_executor", "to_thread", "getaddrinfo")} == {
        "run_in_executor": 42,
        "to_thread": 43,
        "getaddrinfo": True,
    }, child.tail()
    assert results.get("sync_enricher") == "eu", child.tail()
    assert (results.get("enricher_ok"), results.get("enricher_failures")) == (1, 0), child.tail()
    assert results.get("log_lines") == ["logged after main returned"], child.tail()


# ---------------------------------------------------------------------------- item 7


def test_sixteen_blocked_loops_share_one_exit_deadline(tmp_path: Path) -> None:
    """Interpreter exit with 16 LoopThreads whose loops are blocked by user code, one of them
    holding a LoopHandler record: all are given one deadline together (EXIT_TIMEOUT plus
    stop()'s slack), not 5 s plus 0.25 s per loop, and the LoopHandler's flush in
    logging.shutdown adds no 5 s of its own."""
    scenario = "under fire: exit with 16 blocked loops"
    child = run_child(
        ["many_blocked", "16", str(tmp_path)], tmp_path, hard_timeout=12, scenario=scenario
    )
    record(
        scenario,
        loops=16,
        exit_s=round(child.exit_seconds, 2),
        hung=0,
    )
    assert child.returncode == 0, child.tail()
    assert child.results.get("loops") == 16, child.tail()
    assert child.exit_seconds < EXIT_TIMEOUT + STOP_SLACK + 2 * SLACK, child.tail()


# ---------------------------------------------------------------------------- item 10


def test_timeouts_beyond_timeout_max_mean_no_limit() -> None:
    """A timeout above threading.TIMEOUT_MAX means "no limit" on every wait (run, call,
    gather, a put blocked on a full channel, flush, close, stop) instead of raising
    OverflowError from the lock underneath."""
    lt = quiet_loop("fire-huge-timeouts")
    try:
        gate: asyncio.Event | None = None

        async def make_gate() -> None:
            nonlocal gate
            gate = asyncio.Event()

        lt.run(make_gate())
        handled: list[int] = []

        async def gated(batch: list[int]) -> None:
            assert gate is not None
            await gate.wait()
            handled.extend(batch)

        async def open_gate() -> None:
            assert gate is not None
            gate.set()

        async def echo(value: str) -> str:
            await asyncio.sleep(0)
            return value

        big = BEYOND_TIMEOUT_MAX
        observed: dict[str, str] = {
            "run": raised(lambda: lt.run(echo("run"), timeout=big)),
            "call": raised(lambda: lt.call(echo, "call", timeout=big)),
            "gather": raised(lambda: lt.gather(echo("a"), echo("b"), timeout=big)),
        }
        ch = lt.channel(gated, maxsize=1, overflow="block", batch_size=1)
        ch.put(1)
        wait_until(lambda: ch.stats().in_flight == 1)  # the handler holds item 1 at the gate
        ch.put(2)  # waits in the channel: it is full now
        producer, blocked_put = in_daemon_thread(lambda: ch.put(3, timeout=big))
        flusher, flush = in_daemon_thread(lambda: ch.flush(timeout=big))
        observed["put blocked"] = "blocked" if blocked_in_wait(producer) else outcome(blocked_put)
        observed["flush waiting"] = "waiting" if blocked_in_wait(flusher) else outcome(flush)
        lt.run(open_gate())
        observed["put"] = outcome(blocked_put)
        observed["flush"] = outcome(flush)
        ch.put(4)
        observed["close"] = raised(lambda: ch.close(timeout=big))
        observed["handled"] = repr(handled)
        lt.submit(echo("in flight at stop"))
        try:
            report = lt.stop(timeout=big)
        except BaseException as exc:  # noqa: BLE001 - compared below
            observed["stop"] = type(exc).__name__
        else:
            observed["stop"] = f"finished={report.finished} clean={report.clean}"
    finally:
        lt.stop(timeout=PROMPT)
    record(
        "under fire: timeouts beyond TIMEOUT_MAX",
        entry_points=8,
        overflow_errors=sum(v == "OverflowError" for v in observed.values()),
    )
    assert observed == {
        "run": "returned 'run'",
        "call": "returned 'call'",
        "gather": "returned ['a', 'b']",
        "put blocked": "blocked",
        "flush waiting": "waiting",
        "put": "True",
        "flush": "True",
        "close": "returned None",
        "handled": "[1, 2, 3, 4]",
        "stop": "finished=True clean=True",
    }


def test_infinite_cancel_grace_means_no_limit_for_cleanup() -> None:
    """LoopThread(cancel_grace=math.inf): a run() whose timeout expires raises TimeoutError
    after the coroutine's cleanup finished (no limit on it), not OverflowError; stop() is
    clean."""
    lt = quiet_loop("fire-inf-grace", cancel_grace=math.inf)
    cleaned = threading.Event()

    async def slow_with_cleanup() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # cleanup that needs the loop for a while
            cleaned.set()

    try:
        result = raised(lambda: lt.run(slow_with_cleanup(), timeout=0.05))
        report = lt.stop(timeout=PROMPT)
    finally:
        lt.stop(timeout=PROMPT)
    record("under fire: cancel_grace=inf", overflow_errors=int(result == "OverflowError"))
    assert result == "TimeoutError"
    assert cleaned.is_set()
    assert report.finished, report
    assert report.clean, report


@pytest.mark.parametrize("timeout", [None, BEYOND_TIMEOUT_MAX], ids=["None", "beyond_max"])
def test_stop_without_limit_lets_calls_finish_with_infinite_cancel_grace(
    timeout: float | None,
) -> None:
    """LoopThread(cancel_grace=math.inf).stop() with no limit (None, or a timeout beyond
    TIMEOUT_MAX): a call in flight that finishes in 50 ms is let finish (README, *Shutdown*:
    calls in flight run until the soft deadline), its caller gets its result, and the report
    says completed=1, deadline_hit=False."""
    lt = quiet_loop("fire-inf-grace-stop", cancel_grace=math.inf)
    future = lt.submit(asyncio.sleep(0.05, "done"))
    try:
        report = lt.stop(timeout=timeout)
    finally:
        lt.stop(timeout=PROMPT)
    answer = outcome(future)
    record(
        "under fire: stop() without limit, cancel_grace=inf",
        calls=1,
        cut_short=int(answer != "'done'"),
    )
    assert answer == "'done'", report
    assert (report.completed, report.cancelled, report.deadline_hit) == (1, 0, False), report


def test_loop_factory_returning_a_non_loop_is_a_type_error_naming_it() -> None:
    """LoopThread(loop_factory=int).start() raises TypeError that names loop_factory and what
    to pass (not a bare AttributeError from deep inside), and the LoopThread is not running."""
    lt = loopthread.LoopThread("fire-bad-factory", loop_factory=int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loop_factory") as info:
        lt.start()
    record("under fire: loop_factory=int", clear_errors=1)
    assert "new_event_loop" in str(info.value)
    assert not lt.running


@pytest.mark.parametrize("api", ["run", "submit", "gather"])
def test_a_future_of_another_loop_is_refused_clearly(api: str) -> None:
    """An asyncio Future created by another event loop, passed to lt.run / lt.submit /
    lt.gather, is refused at once with LoopThreadError saying it belongs to another event
    loop (not asyncio's "got Future attached to a different loop" RuntimeError from the loop),
    and the LoopThread keeps working."""
    lt = quiet_loop(f"fire-foreign-{api}")
    other = asyncio.new_event_loop()
    try:
        foreign = other.create_future()
        calls: dict[str, Callable[[], Any]] = {
            "run": lambda: lt.run(foreign, timeout=PROMPT),
            "submit": lambda: lt.submit(foreign),
            "gather": lambda: lt.gather(foreign, timeout=PROMPT),
        }
        with pytest.raises(loopthread.LoopThreadError) as info:
            calls[api]()
        works = lt.run(asyncio.sleep(0, "still works"), timeout=PROMPT)
    finally:
        other.close()
        lt.stop(timeout=PROMPT)
    record("under fire: a Future of another loop", refused_clearly=1)
    assert type(info.value) is loopthread.LoopThreadError
    assert "another event loop" in str(info.value)
    assert works == "still works"


# ---------------------------------------------------------------------------- item 11


def test_stopped_events_of_loops_stopped_at_exit_are_not_lost(tmp_path: Path) -> None:
    """loopthread's events shown at DEBUG on stdout (README, *Logs*); 100 LoopThreads, each
    finishing a call in the exit drain so that their stops end together, are stopped at exit:
    each one's loop_thread.stopped event is on stdout, in 3 runs out of 3."""
    rounds, n = 3, 100
    scenario = "under fire: loop_thread.stopped at exit"
    seen: list[int] = []
    for _ in range(rounds):
        child = run_child(["stopped_events", str(n)], tmp_path, hard_timeout=14, scenario=scenario)
        assert child.returncode == 0, child.tail()
        assert child.results.get("started") == n, child.tail()
        names = set(re.findall(r"loop_thread\.stopped\b.*?\b(fire-lt-\d+)\b", child.stdout))
        seen.append(len(names))
    record(
        scenario,
        loops=rounds * n,
        events=sum(seen),
        lost=rounds * n - sum(seen),
    )
    assert seen == [n] * rounds
