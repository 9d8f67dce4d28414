"""The channel's wake-up and mutex protocol: signal safety (issue 11) and the wake-up path
(issue 15).

- a storm of signals raising in a main-thread producer never wedges the loop (a child process
  with a hard bound: a wedged child is killed and fails the test);
- the latch whose setter never blocks, and a signal inside ``Condition.wait``'s own gap;
- a sync handler gets its batch in the wake-up callback itself (an async one too on 3.12+);
- exactly once, FIFO per producer, one handler call at a time, for every kind of handler;
- a wake-up lost to a second signal is repaired by the next caller that waits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopthread import Channel, LoopThread
from tests._seam_support import run_python

# ---------------------------------------------------------------- a storm of signals

#: How long the storm child may take in all before it counts as wedged (and is killed).
STORM_BOUND = 60.0

_STORM_CHILD = r"""
import faulthandler, json, random, signal, sys, threading, time
import loopthread

MAX_INTERRUPTS, BUDGET, SEED = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
# Wedged: say where every thread is before the parent kills us.
faulthandler.dump_traceback_later(float(sys.argv[4]), exit=True)
rng = random.Random(SEED)


class Alarm(Exception):
    pass


class State:
    interrupts = 0
    stop = False
    lock_errors = []   # RuntimeErrors about locks that reached a caller
    other_errors = []
    wedged_at = None   # interrupts so far when the loop first stopped answering


state = State()


def unraisable(info):
    # The storm's own Alarm, raised while a cyclic GC pass that this thread ran finalised a
    # loop-side object (asyncio's WeakSet of tasks drops it in a weakref callback): CPython
    # reports it as "Exception ignored", and nothing of the put saw it. Any other unraisable
    # exception is still printed (and fails the test).
    if isinstance(info.exc_value, Alarm):
        return
    sys.__unraisablehook__(info)


sys.unraisablehook = unraisable


def on_alarm(signum, frame):
    state.interrupts += 1
    if not state.stop:
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(50e-6, 500e-6))
    raise Alarm()


lt = loopthread.LoopThread("storm", metrics_registry=None, slow_callback=None).start()
handled = {"block": [], "default": []}


def handle_block(batch):          # sync: handled in the wake-up callback
    handled["block"].extend(batch)


async def handle_default(batch):  # async: in a consumer task
    handled["default"].extend(batch)


block = lt.channel(handle_block, maxsize=2, overflow="block", batch_size=1, name="block")
default = lt.channel(handle_default, name="default")
channels = {"block": block, "default": default}
accepted = {"block": set(), "default": set()}
attempted = {"block": set(), "default": set()}
i = 0  # puts so far (the watcher reads it)


def watch():
    # Not the main thread: no signals here. Pings the loop; notes when it stops answering,
    # and when the main thread stops making progress.
    last, since, said = -1, time.monotonic(), False
    while not state.stop:
        if i != last:
            last, since = i, time.monotonic()
        elif not said and time.monotonic() - since > 2.0:
            said = True
            sys.stderr.write(f"stalled: the main thread made no progress for 2 s after "
                             f"{state.interrupts} interrupts\n")
            sys.stderr.flush()
        answered = threading.Event()
        try:
            lt.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return
        if not answered.wait(1.0) and state.wedged_at is None:
            state.wedged_at = state.interrupts
            sys.stderr.write(f"wedged: the loop did not answer for 1 s after "
                             f"{state.wedged_at} interrupts\n")
            sys.stderr.flush()
        time.sleep(0.05)


watcher = threading.Thread(target=watch, daemon=True)
watcher.start()


def note(exc):
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("acquired" in text or "unlocked" in text):
        state.lock_errors.append(repr(exc))
    else:
        state.other_errors.append(repr(exc))


def put(name, i):
    attempted[name].add(i)
    ch = channels[name]
    if ch.put(i, timeout=0.05) if name == "block" else ch.put(i):
        accepted[name].add(i)


deadline = time.monotonic() + BUDGET


def storm():
    global i
    while state.interrupts < MAX_INTERRUPTS and time.monotonic() < deadline:
        try:
            while state.interrupts < MAX_INTERRUPTS and time.monotonic() < deadline:
                i += 1
                put("block", i)
                put("default", i)
                if i % 5 == 0:
                    block.flush(timeout=0.05)
                    default.flush(timeout=0.05)
        except Alarm:
            pass
        except Exception as exc:
            note(exc)


signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001)
while True:  # an Alarm landing in storm()'s own except clause lands here
    try:
        storm()
        state.stop = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        break
    except Alarm:
        continue
    except Exception as exc:
        note(exc)
# A last alarm may still be on its way: let it land here.
for _ in range(3):
    try:
        time.sleep(0.002)
    except Alarm:
        pass
signal.signal(signal.SIGALRM, signal.SIG_IGN)

after = {}
for name, ch in channels.items():
    ok = ch.put(-1, timeout=5) if name == "block" else ch.put(-1)
    after[name] = {"put": ok, "flush": ch.flush(timeout=5)}
stats = {name: ch.stats() for name, ch in channels.items()}
started = time.monotonic()
report = lt.stop(timeout=5)
stop_took = time.monotonic() - started
print(json.dumps({
    "interrupts": state.interrupts,
    "puts": i,
    "wedged_at": state.wedged_at,
    "lock_errors": state.lock_errors[:5],
    "other_errors": state.other_errors[:5],
    "after": after,
    "stop_finished": report.finished,
    "stop_took": stop_took,
    "channels": {
        name: {
            "put": s.put, "handled": s.handled, "failed": s.failed, "dropped": s.dropped,
            "unhandled": s.unhandled, "depth": s.depth, "in_flight": s.in_flight,
            "handled_items": len(handled[name]),
            "duplicates": len(handled[name]) - len(set(handled[name])),
            "accepted_not_handled": len(accepted[name] - set(handled[name]) - {-1}),
            "handled_not_attempted": len(set(handled[name]) - attempted[name] - {-1}),
        }
        for name, s in stats.items()
    },
}), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
@pytest.mark.timeout(STORM_BOUND + 30)
def test_signal_storm_in_a_main_thread_producer_never_wedges_the_loop() -> None:
    """SIGALRM every 50-500 µs raising a custom exception in the main thread while it puts
    into a tiny "block" channel (sync handler: the slow path, the wake-up callback) and a
    default channel (async handler) and flushes both: afterwards a put and a flush work, every
    put is accounted for once, stop() finishes, and no caller ever saw a RuntimeError about
    an un-acquired or unlocked lock. (The channel used to wedge its loop for good: a signal
    inside ``threading.Condition.__enter__`` or janus's put left a lock held that the loop
    thread then waited on.)"""
    result = run_python(
        _STORM_CHILD, "3000", "8", "20261201", str(STORM_BOUND - 10), timeout=STORM_BOUND
    )
    assert not result.hung, result.describe()
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()  # the watcher thread too
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["interrupts"] >= 100, out  # the storm did happen
    assert out["wedged_at"] is None, out
    assert out["lock_errors"] == [], out
    assert out["other_errors"] == [], out
    assert out["after"] == {
        "block": {"put": True, "flush": True},
        "default": {"put": True, "flush": True},
    }, out
    assert out["stop_finished"], out
    for name, ch in out["channels"].items():
        assert ch["duplicates"] == 0, (name, out)
        assert ch["accepted_not_handled"] == 0, (name, out)
        assert ch["handled_not_attempted"] == 0, (name, out)
        assert ch["handled"] == ch["handled_items"], (name, out)
        assert (ch["depth"], ch["in_flight"], ch["failed"], ch["unhandled"]) == (0, 0, 0, 0)
        # put == handled + dropped, up to one per interrupted put (a count with no item
        # behind it: the documented inexactness of ChannelStats).
        slack = ch["put"] - (ch["handled"] + ch["dropped"])
        assert 0 <= slack <= out["interrupts"], (name, out)


# ---------------------------------------------------------------- the latch


class Interrupt(Exception):
    """What the test's signal handler raises."""


@pytest.fixture(name="alarm")
def fixture_alarm() -> Iterator[Callable[[float], None]]:
    """``alarm(seconds)``: raise Interrupt in the main thread after ``seconds`` (SIGALRM)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer")

    def raise_interrupt(signum: int, frame: object) -> None:
        raise Interrupt

    def alarm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    try:
        yield alarm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_latch_set_wakes_every_waiter_and_is_idempotent() -> None:
    """set() wakes every waiting thread; later waits return at once; set() twice is fine."""
    from loopthread._util import Latch

    latch = Latch()
    results: list[bool] = []
    waiting = threading.Barrier(4)

    def wait() -> None:
        waiting.wait()
        results.append(latch.wait(10))

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for t in threads:
        t.start()
    waiting.wait()
    latch.set()
    latch.set()
    for t in threads:
        t.join(10)
    assert results == [True, True, True]
    assert latch.is_set()
    assert latch.wait(0) is True
    assert latch.wait(None) is True


def test_latch_wait_times_out_and_leaves_nothing_behind() -> None:
    """A wait that times out returns False after its timeout and deregisters its lock."""
    from loopthread._util import Latch

    latch = Latch()
    started = time.monotonic()
    assert latch.wait(0.05) is False
    assert time.monotonic() - started >= 0.05
    assert latch.wait(0) is False
    assert not latch._waiters  # nothing left registered
    assert not latch.is_set()


def test_latch_timeout_above_timeout_max_is_capped() -> None:
    """A timeout above threading.TIMEOUT_MAX does not raise OverflowError."""
    from loopthread._util import Latch

    latch = Latch()
    setter = threading.Timer(0.01, latch.set)
    setter.start()
    assert latch.wait(threading.TIMEOUT_MAX * 10) is True
    setter.join()


def test_latch_setter_never_blocks_after_an_interrupted_waiter(
    alarm: Callable[[float], None],
) -> None:
    """A main-thread waiter interrupted by a signal (many times, at varied points) leaves the
    latch settable at once from another thread, and later waiters are woken by that set()."""
    from loopthread._util import Latch

    latch = Latch()
    interrupted = 0
    for delay in (1e-5, 5e-5, 1e-4, 3e-4, 1e-3) * 20:
        try:
            alarm(delay)  # one-shot, well inside the wait below
            latch.wait(0.05)
        except Interrupt:
            interrupted += 1
    assert interrupted == 100
    setter = threading.Thread(target=latch.set)
    setter.start()
    setter.join(5)
    assert not setter.is_alive(), "set() blocked"
    assert latch.wait(0) is True


def test_interrupt_behind_finds_the_signal_of_an_interrupted_condition_wait() -> None:
    """The RuntimeError a stray RLock release raises inside the handling of a signal's
    exception gives that exception back; any other error gives None."""
    from loopthread._util import interrupt_behind

    lock = threading.RLock()
    caught: list[BaseException] = []
    try:
        try:
            raise Interrupt
        finally:
            lock.release()  # not held: "cannot release un-acquired lock"
    except RuntimeError as exc:
        caught.append(exc)
    assert isinstance(interrupt_behind(caught[0]), Interrupt)
    assert interrupt_behind(RuntimeError("cannot release un-acquired lock")) is None
    assert interrupt_behind(ValueError("x")) is None


def test_signal_in_condition_wait_gap_reaches_the_put_as_itself(lt: LoopThread) -> None:
    """A signal inside Condition.wait after it released the channel's mutex and before its
    ``try`` (reproduced: the wait releases, then raises): the blocked put raises the signal's
    own exception, not ``RuntimeError: cannot release un-acquired lock``, and the channel
    goes on (the mutex is free, puts and flushes work)."""
    gate = threading.Event()
    entered = threading.Event()

    async def handler(batch: list[int]) -> None:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)

    ch = lt.channel(handler, maxsize=1, batch_size=1)
    assert ch.put(1)
    assert entered.wait(5)
    assert ch.put(2)  # full now
    cond = ch._cond
    real_wait = cond.wait

    def wait_with_the_gap(timeout: float | None = None) -> bool:
        cond.wait = real_wait  # type: ignore[method-assign]
        cond._release_save()  # type: ignore[attr-defined]
        raise Interrupt

    cond.wait = wait_with_the_gap  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        ch.put(3, timeout=5)
    gate.set()
    assert ch.flush(timeout=5)
    assert ch.put(4, timeout=5)
    assert ch.flush(timeout=5)
    stats = ch.stats()
    assert (stats.put, stats.handled) == (3, 3)


# ---------------------------------------------------------------- the wake-up path


class WakeOrder:
    """Puts one item into an idle channel, then schedules a marker callback right behind the
    wake-up; the handler notes, each round, whether it ran before the marker."""

    def __init__(self) -> None:
        self.marker = threading.Event()
        self.before: list[bool] = []
        self.in_task: list[bool] = []

    def saw(self) -> None:
        """Called by the handler."""
        self.before.append(not self.marker.is_set())
        self.in_task.append(asyncio.current_task() is not None)

    def run(self, lt: LoopThread, handler: Callable[[list[int]], Any]) -> list[bool]:
        self.before.clear()
        self.in_task.clear()
        for _ in range(5):
            # A fresh channel each round: its consumer parks at once after its first batch
            # (a consumer woken right after it parked lingers first: see Consumer._linger).
            ch: Channel[int] = lt.channel(handler)
            ch.put(0)
            assert ch.flush(timeout=5)
            lt.run(asyncio.sleep(0), timeout=5)  # the consumer parked
            self.marker = threading.Event()
            ch.put(1)
            lt.loop.call_soon_threadsafe(self.marker.set)
            assert ch.flush(timeout=5)
            ch.close(timeout=5)
            del self.before[-2], self.in_task[-2]  # item 0's call
        return self.before


def test_sync_handler_gets_its_batch_in_the_wake_up_callback(lt: LoopThread) -> None:
    """The idle-to-busy wake-up of a sync handler costs one call_soon_threadsafe: the handler
    runs in that callback, before a callback scheduled right after the put (it used to run
    in the consumer task's step, one or two loop iterations later)."""
    order = WakeOrder()

    def handler(batch: list[int]) -> None:
        order.saw()

    assert order.run(lt, handler) == [True] * 5


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks need Python 3.12+")
def test_async_handler_first_step_runs_in_the_wake_up_callback(lt: LoopThread) -> None:
    """On 3.12+ the consumer task starts eagerly: an async handler's first step runs in the
    wake-up callback too, inside the consumer task (asyncio.current_task() is set)."""
    order = WakeOrder()

    async def handler(batch: list[int]) -> None:
        order.saw()

    assert order.run(lt, handler) == [True] * 5
    assert order.in_task == [True] * 5


# ---------------------------------------------------------------- properties, every handler


def _handler_of(kind: str, record: Callable[[list[Any]], None]) -> Callable[[list[Any]], Any]:
    if kind == "sync":
        return record

    async def run(batch: list[Any]) -> None:
        record(batch)
        await asyncio.sleep(0)  # suspends: a second batch must not start meanwhile

    if kind == "async":
        return run

    def returns_awaitable(batch: list[Any]) -> Awaitable[None]:  # a plain function
        return run(batch)

    return returns_awaitable


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["sync", "async", "returns_awaitable"]),
    maxsize=st.integers(1, 8),
    batch_size=st.integers(1, 5),
    producers=st.integers(1, 3),
    per_producer=st.integers(0, 80),
    pause_every=st.integers(0, 20),
)
def test_exactly_once_fifo_one_call_at_a_time(
    lt: LoopThread,
    *,
    kind: str,
    maxsize: int,
    batch_size: int,
    producers: int,
    per_producer: int,
    pause_every: int,
) -> None:
    """Every accepted item reaches the handler exactly once, each producer's items in its
    order, handler calls never overlap, and stats() adds up: for sync handlers (in the wake-up
    callback), async ones and plain functions returning an awaitable. Producers pause now and
    then (the consumer parks, and the next put wakes it: the idle-to-busy path)."""
    handed: list[tuple[int, int]] = []
    running = [0]
    overlaps = [0]

    def record(batch: list[tuple[int, int]]) -> None:
        running[0] += 1
        if running[0] > 1:
            overlaps[0] += 1
        handed.extend(batch)
        running[0] -= 1

    ch = lt.channel(
        _handler_of(kind, record), maxsize=maxsize, overflow="block", batch_size=batch_size
    )

    def produce(p: int) -> None:
        for i in range(per_producer):
            assert ch.put((p, i), timeout=10)
            if pause_every and i % pause_every == 0:
                time.sleep(0.0005)  # idle long enough for the consumer to park

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ch.flush(timeout=10)
    stats = ch.stats()
    ch.close(timeout=5)
    assert overlaps == [0]
    assert len(handed) == len(set(handed)) == producers * per_producer
    for p in range(producers):
        assert [i for q, i in handed if q == p] == list(range(per_producer))
    assert stats.put == stats.handled == producers * per_producer
    assert (stats.depth, stats.in_flight, stats.failed, stats.unhandled) == (0, 0, 0, 0)


# ---------------------------------------------------------------- repairs


def test_wake_up_lost_to_a_second_signal_is_repaired_by_flush(lt: LoopThread) -> None:
    """Ctrl-C after put() claimed the park, and a second one inside the request that would
    have had the loop look (``_interrupted``): no wake-up is on its way. The next flush() asks
    the loop again and completes; puts flow afterwards."""
    got: list[int] = []
    ch: Channel[int] = lt.channel(got.extend)
    assert ch.put(0)
    assert ch.flush(timeout=5)
    lt.run(asyncio.sleep(0), timeout=5)  # parked

    def wake() -> None:
        del ch._wake_consumer
        ch._parked.pop()
        raise KeyboardInterrupt

    def interrupted() -> None:
        del ch._interrupted
        raise KeyboardInterrupt

    ch._wake_consumer = wake  # type: ignore[method-assign]
    ch._interrupted = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        ch.put(1)
    assert ch.flush(timeout=5)
    assert got == [0, 1]
    assert ch.put(2)
    assert ch.flush(timeout=5)
    assert got == [0, 1, 2]


def test_cancelling_every_task_while_an_async_handler_runs_keeps_the_channel(
    lt: LoopThread,
) -> None:
    """User code cancels every task while the consumer task is inside the handler: that batch
    is counted unhandled (as a cancelled handler call is), the channel goes on with what comes
    next, and stop() drains it."""
    gate = threading.Event()
    entered = threading.Event()
    got: list[int] = []

    async def handler(batch: list[int]) -> None:
        if 0 in batch:
            entered.set()
            await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        got.extend(batch)

    ch: Channel[int] = lt.channel(handler, batch_size=1)
    assert ch.put(0)
    assert entered.wait(5)

    async def cancel_every_other_task() -> int:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        for task in others:
            task.cancel()
        return len(others)

    assert lt.run(cancel_every_other_task(), timeout=5) >= 1
    gate.set()
    for i in range(1, 4):
        assert ch.put(i)
    assert ch.flush(timeout=5)
    assert got == [1, 2, 3]
    stats = ch.stats()
    assert (stats.put, stats.handled, stats.unhandled) == (4, 3, 1)
    assert lt.stop(timeout=5).finished
