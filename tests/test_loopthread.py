"""The LoopThread and its blocking facade: results, errors, context, timeouts, lifecycle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import structlog

import loopthread
from loopthread import (
    LoopNotRunningError,
    LoopThread,
    LoopThreadError,
    ShutdownReport,
    WouldDeadlockError,
    testing,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def echo(x: Any) -> Any:
    return x


async def suspend_then_echo(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


class Boom(Exception):
    """A user error that must come back with its type and traceback."""


async def raise_boom() -> None:
    await asyncio.sleep(0)
    raise Boom("inner")


class Parked:
    """A coroutine factory that parks until released and records its cleanup."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cleaned = threading.Event()
        self.cancelled = threading.Event()
        self.release: asyncio.Event | None = None

    async def run(self, value: Any = None) -> Any:
        self.release = asyncio.Event()
        self.started.set()
        try:
            await self.release.wait()
            return value
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.cleaned.set()


@pytest.fixture(name="parked")
def fixture_parked() -> Parked:
    """A parking coroutine helper."""
    return Parked()


# ---------------------------------------------------------------- results and errors


def test_run_returns_result(lt: LoopThread) -> None:
    """run() returns the coroutine's value, suspended or not."""
    assert lt.run(echo(1)) == 1
    assert lt.run(suspend_then_echo("x")) == "x"


def test_call_passes_args_and_kwargs(lt: LoopThread) -> None:
    """call() invokes the async function with positional and keyword arguments."""

    async def combine(a: int, b: int, *, c: int = 0) -> int:
        return a * 100 + b * 10 + c

    assert lt.call(combine, 1, 2, c=3) == 123
    # A required keyword-only parameter: through functools.partial, so types stay checked.

    async def keyed(a: int, *, c: int) -> int:
        return a + c

    assert lt.call(functools.partial(keyed, c=2), 1) == 3


def test_call_runs_function_on_loop_thread(lt: LoopThread) -> None:
    """call() calls the function itself on the loop thread, so it may use the running loop."""
    seen: list[int] = []

    def make() -> asyncio.Future[int]:
        seen.append(threading.get_ident())
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(7)
        return fut

    assert lt.call(make) == 7
    assert seen == [lt.thread.ident]


def test_call_non_awaitable_return_is_type_error(lt: LoopThread) -> None:
    """A plain function given to call() fails with a TypeError that says what to do."""

    def plain() -> int:
        return 1

    with pytest.raises(TypeError, match="expects an async function"):
        lt.call(plain)  # type: ignore[arg-type]


def test_exception_keeps_type_and_traceback(lt: LoopThread) -> None:
    """The coroutine's exception reaches the caller with its own frames in the traceback."""
    with pytest.raises(Boom, match="inner") as info:
        lt.run(raise_boom())
    names = [entry.name for entry in info.traceback]
    assert "raise_boom" in names


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_base_exceptions_reach_caller_and_loop_survives(
    lt: LoopThread, exc_type: type[BaseException]
) -> None:
    """SystemExit and KeyboardInterrupt raised inside reach the caller; the loop keeps running."""

    async def raiser() -> None:
        raise exc_type()

    with pytest.raises(exc_type):
        lt.run(raiser())
    assert lt.running
    assert lt.run(echo(5)) == 5


def test_gather_results_in_order(lt: LoopThread) -> None:
    """gather() runs many awaitables with one hand-off and keeps argument order."""
    assert lt.gather(*(suspend_then_echo(i) for i in range(50))) == list(range(50))
    assert lt.gather() == []


def test_gather_return_exceptions(lt: LoopThread) -> None:
    """gather(return_exceptions=True) returns exceptions in place; False raises the first."""
    out = lt.gather(echo(1), raise_boom(), return_exceptions=True)
    assert out[0] == 1
    assert isinstance(out[1], Boom)
    with pytest.raises(Boom):
        lt.gather(echo(1), raise_boom())


def test_gather_runs_concurrently(lt: LoopThread) -> None:
    """gather() awaits concurrently: two coroutines that need each other both finish."""

    async def pair() -> tuple[Coroutine[Any, Any, str], Coroutine[Any, Any, str]]:
        a, b = asyncio.Event(), asyncio.Event()

        async def left() -> str:
            a.set()
            await b.wait()
            return "left"

        async def right() -> str:
            await a.wait()
            b.set()
            return "right"

        return left(), right()

    left, right = lt.run(pair())
    assert lt.gather(left, right) == ["left", "right"]


def test_submit_returns_concurrent_future(lt: LoopThread) -> None:
    """submit() returns a concurrent.futures.Future with the result or the exception."""
    fut = lt.submit(suspend_then_echo(9))
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=5) == 9
    bad = lt.submit(raise_boom())
    with pytest.raises(Boom):
        bad.result(timeout=5)


def test_submit_never_blocks_while_loop_is_busy(lt: LoopThread) -> None:
    """submit() returns at once even while the loop thread is blocked in user code."""
    blocker_entered = threading.Event()
    unblock = threading.Event()

    async def block_loop() -> None:
        blocker_entered.set()
        unblock.wait(10)  # deliberately blocks the loop thread

    first = lt.submit(block_loop())
    assert blocker_entered.wait(5)
    futures = [lt.submit(echo(i)) for i in range(100)]  # must not wait for the loop
    assert not any(f.done() for f in futures)
    unblock.set()
    assert [f.result(timeout=5) for f in futures] == list(range(100))
    first.result(timeout=5)


def test_submit_cancel_cancels_task_on_loop(lt: LoopThread, parked: Parked) -> None:
    """Cancelling the Future returned by submit() cancels the coroutine on the loop."""
    fut = lt.submit(parked.run())
    assert parked.started.wait(5)
    assert fut.cancel()
    assert parked.cancelled.wait(5)
    assert parked.cleaned.wait(5)
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result()


def test_submit_from_loop_thread_is_allowed(lt: LoopThread) -> None:
    """submit() never blocks, so it is safe from coroutines on the loop itself."""

    async def outer() -> int:
        fut = lt.submit(echo(3))
        return await asyncio.wrap_future(fut)

    assert lt.run(outer()) == 3


def test_awaitable_objects_and_futures(lt: LoopThread) -> None:
    """Any awaitable works, not only coroutine objects."""

    class Awaitable:
        def __await__(self) -> Any:
            return echo(11).__await__()

    assert lt.run(Awaitable()) == 11


# ---------------------------------------------------------------- context


def test_contextvars_visible_inside(lt: LoopThread) -> None:
    """The caller's contextvars are visible inside run(), call(), submit() and gather()."""

    async def read() -> str:
        await asyncio.sleep(0)
        return request_id.get()

    token = request_id.set("req-42")
    try:
        assert lt.run(read()) == "req-42"
        assert lt.call(read) == "req-42"
        assert lt.submit(read()).result(5) == "req-42"
        assert lt.gather(read(), read()) == ["req-42", "req-42"]
    finally:
        request_id.reset(token)
    assert lt.run(read()) == "none"


def test_contextvars_per_thread(lt: LoopThread) -> None:
    """Concurrent callers each see their own context."""

    async def read() -> str:
        await asyncio.sleep(0)
        return request_id.get()

    def worker(i: int) -> bool:
        request_id.set(f"t{i}")
        return all(lt.run(read()) == f"t{i}" for _ in range(50))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(worker, range(8)))


def test_changes_inside_do_not_leak_out(lt: LoopThread) -> None:
    """A coroutine setting a contextvar works on a copy; the caller's value is unchanged."""

    async def write() -> None:
        request_id.set("inside")

    request_id.set("outside")
    lt.run(write())
    assert request_id.get() == "outside"


# ---------------------------------------------------------------- timeouts and interrupts


def test_timeout_cancels_and_waits_for_cleanup(lt: LoopThread, parked: Parked) -> None:
    """On timeout the coroutine is cancelled on the loop and its finally has run before raising."""
    with pytest.raises(TimeoutError, match=r"timeout=0\.05s"):
        lt.run(parked.run(), timeout=0.05)
    assert parked.cancelled.is_set()
    assert parked.cleaned.is_set()  # already set when run() raised: no waiting here
    assert lt.stats().calls_timed_out == 1
    assert lt.stats().in_flight == 0


def test_timeout_with_slow_cleanup_is_bounded_by_grace() -> None:
    """Cleanup that outlives cancel_grace does not hold the caller longer than the grace."""
    cleanup_done = threading.Event()
    proceed = threading.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, proceed.wait, 10)
            cleanup_done.set()

    with LoopThread("grace", cancel_grace=0.1) as lt:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="still running after cancel_grace"):
            lt.run(slow_cleanup(), timeout=0.05)
        assert time.monotonic() - started < 5
        assert not cleanup_done.is_set()
        proceed.set()
        assert cleanup_done.wait(5)


def test_timeout_result_before_cancel_is_returned(
    lt: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout of 0 with a coroutine that finishes at once still returns its value or raises.

    Either the value arrives before the cancellation (returned, nothing lost) or the call is
    cancelled (TimeoutError); it never hangs and never returns a wrong value. Nothing lost: every
    call the loop counted as finished ok was returned to its caller, and every TimeoutError is a
    call the loop counted as timed out. On 3.12+ the coroutine runs eagerly in the very loop
    callback that starts it, which the caller queued before its cancellation: all values arrive.
    And made to happen on every version: a value that lands after the caller's timeout expired,
    while its cancellation is queued but has not reached the loop yet, is returned.
    """
    import sys

    returned = timed_out = 0
    for i in range(200):
        try:
            value = lt.run(echo(i), timeout=0)
        except TimeoutError:
            timed_out += 1
        else:
            assert value == i
            returned += 1
    assert returned + timed_out == 200
    stats = lt.stats()
    assert (stats.calls_ok, stats.calls_timed_out) == (returned, timed_out)
    assert (stats.calls_failed, stats.calls_cancelled, stats.in_flight) == (0, 0, 0)
    if sys.version_info >= (3, 12):
        assert returned == 200

    # The late value, deterministically: the coroutine holds the loop in its first step until
    # this (the calling) thread has given up and queued the cancellation through the loop's
    # call_soon_threadsafe, then returns without awaiting, before that cancellation runs.
    started = threading.Event()
    cancel_queued = threading.Event()
    caller = threading.get_ident()
    loop = lt.loop
    real_call_soon_threadsafe = loop.call_soon_threadsafe

    def watching_call_soon_threadsafe(callback: Any, *args: Any, **kwargs: Any) -> Any:
        # Only a post the caller makes after the coroutine started is its cancellation.
        after_start = started.is_set()
        handle = real_call_soon_threadsafe(callback, *args, **kwargs)
        if after_start and threading.get_ident() == caller:
            cancel_queued.set()
        return handle

    async def lands_late() -> str:
        started.set()
        assert cancel_queued.wait(5)  # deliberately holds the loop: no await
        return "late value"

    monkeypatch.setattr(loop, "call_soon_threadsafe", watching_call_soon_threadsafe)
    with structlog.testing.capture_logs():  # holding the loop may be logged as a stall
        assert lt.run(lands_late(), timeout=0.05) == "late value"
    monkeypatch.undo()
    assert cancel_queued.is_set()  # the caller's timeout did expire first
    stats = lt.stats()
    assert (stats.calls_ok, stats.calls_timed_out) == (returned + 1, timed_out)
    assert stats.in_flight == 0


def test_keyboard_interrupt_cancels_coroutine(parked: Parked) -> None:
    """Ctrl-C in a waiting caller cancels the coroutine on the loop and waits for its cleanup."""
    if threading.current_thread() is not threading.main_thread():
        pytest.fail("signals need the main thread")
    with LoopThread("sigint") as lt:

        def interrupt_when_started() -> None:
            assert parked.started.wait(5)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        sender = threading.Thread(target=interrupt_when_started)
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            lt.run(parked.run())
        sender.join()
        assert parked.cancelled.is_set()
        assert parked.cleaned.is_set()
        assert lt.running
        assert lt.run(echo(1)) == 1


# ---------------------------------------------------------------- misuse


def test_blocking_call_from_loop_thread_raises(lt: LoopThread) -> None:
    """run()/call()/gather() from the loop's own thread raise instead of deadlocking."""
    closed: list[bool] = []

    async def inner() -> None:
        closed.append(True)

    async def outer() -> list[str]:
        errors = []
        for attempt in (
            lambda: lt.run(inner()),
            lambda: lt.call(inner),
            lambda: lt.gather(inner()),
        ):
            try:
                attempt()
            except WouldDeadlockError as exc:
                errors.append(str(exc))
        return errors

    errors = lt.run(outer())
    assert len(errors) == 3
    assert all("await" in message for message in errors)
    assert closed == []  # refused coroutines never ran


def test_refused_coroutine_is_closed_without_warning() -> None:
    """A coroutine refused (loop not running) is closed: no 'never awaited' RuntimeWarning."""
    lt = LoopThread("never-started")
    coro = echo(1)
    with pytest.raises(LoopNotRunningError, match=r"lt\.start\(\)"):
        lt.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_run_before_start_and_after_stop() -> None:
    """The facade raises LoopNotRunningError before start() and after stop()."""
    lt = LoopThread("life")
    with pytest.raises(LoopNotRunningError):
        lt.submit(echo(1))
    lt.start()
    assert lt.run(echo(1)) == 1
    lt.stop()
    with pytest.raises(LoopNotRunningError, match="stopped"):
        lt.run(echo(1))


def test_stopped_loopthread_cannot_restart() -> None:
    """start() after stop() is a clear error, not a silent second loop."""
    lt = LoopThread("once").start()
    lt.stop()
    with pytest.raises(LoopThreadError, match="cannot be restarted"):
        lt.start()


def test_start_is_idempotent_and_one_loop_ever(lt: LoopThread) -> None:
    """start() while running returns the same object; one loop per LoopThread, ever."""
    assert lt.start() is lt
    for i in range(200):
        lt.run(echo(i))
    assert lt.stats().loops_created == 1


def test_concurrent_start_calls_start_one_loop() -> None:
    """Many threads calling start() at once get one running loop."""
    lt = LoopThread("race")
    barrier = threading.Barrier(8)

    def go() -> LoopThread:
        barrier.wait()
        return lt.start()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: go(), range(8)))
    assert all(r is lt for r in results)
    assert lt.stats().loops_created == 1
    lt.stop()


def test_loop_factory_error_reaches_start() -> None:
    """A failing loop_factory raises from start() and leaves the LoopThread dead."""

    def bad_factory() -> asyncio.AbstractEventLoop:
        raise OSError("no loop for you")

    lt = LoopThread("bad", loop_factory=bad_factory)
    with pytest.raises(OSError, match="no loop for you"):
        lt.start()
    assert lt.state == "dead"
    assert lt.stop().finished


def test_loop_factory_is_used() -> None:
    """loop_factory makes the loop."""
    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        made.append(loop)
        return loop

    with LoopThread("factory", loop_factory=factory) as lt:
        assert lt.loop is made[0]


def test_uvloop_option() -> None:
    """uvloop=True runs on a uvloop loop (make test's venv installs the uvloop extra; an
    interpreter uvloop does not support, such as free-threaded 3.13, skips this)."""
    uvloop = pytest.importorskip("uvloop")

    with LoopThread("uv", uvloop=True) as lt:
        assert isinstance(lt.loop, uvloop.Loop)
        assert lt.run(suspend_then_echo(4)) == 4


def test_executor_is_shared_and_sized(lt: LoopThread) -> None:
    """The loop's default executor is the one shared executor, sized by executor_workers."""
    with LoopThread("pool", executor_workers=3) as small:

        async def where() -> str:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: threading.current_thread().name
            )

        assert small.run(where()).startswith("pool-executor")
        assert small.stats().executor_workers == 3
        assert small.executor.max_workers == 3


# ---------------------------------------------------------------- load


def test_sixteen_threads_thousand_calls_each(lt: LoopThread) -> None:
    """16 threads x 1,000 calls: every result is the right one."""

    def worker(t: int) -> bool:
        ok = True
        for i in range(1000):
            value = (t, i)
            coro = echo(value) if i % 2 else suspend_then_echo(value)
            ok &= lt.run(coro) == value
        return ok

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert all(pool.map(worker, range(16)))
    stats = lt.stats()
    assert stats.calls_ok == 16_000
    assert stats.in_flight == 0
    assert stats.loops_created == 1


# ---------------------------------------------------------------- death and stop


def test_loop_stopped_by_user_code_fails_waiters_promptly(parked: Parked) -> None:
    """If user code stops the loop, waiting and later callers get LoopNotRunningError."""
    lt = LoopThread("victim").start()
    waiter = lt.submit(parked.run())
    assert parked.started.wait(5)

    async def kill() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.Event().wait()

    with structlog.testing.capture_logs() as logs:
        with pytest.raises(LoopNotRunningError):
            lt.run(kill())
        with pytest.raises(LoopNotRunningError):
            waiter.result(timeout=5)
        lt.thread.join(5)
        assert not lt.thread.is_alive()
    assert lt.state == "dead"
    with pytest.raises(LoopNotRunningError, match=r"loop\.stop"):
        lt.run(echo(1))
    assert any(e["event"] == "loop_thread.died" for e in logs)
    assert lt.stop().finished


def test_loop_crash_fails_waiters() -> None:
    """A BaseException escaping a raw loop callback kills the loop; callers still get answers."""
    lt = LoopThread("crash").start()
    parked = Parked()
    waiter = lt.submit(parked.run())
    assert parked.started.wait(5)

    def explode() -> None:
        raise SystemExit("from a callback")

    with structlog.testing.capture_logs():
        lt.loop.call_soon_threadsafe(explode)
        with pytest.raises(LoopNotRunningError):
            waiter.result(timeout=5)
        lt.thread.join(5)
    assert lt.state == "dead"
    with pytest.raises(LoopNotRunningError, match="crashed"):
        lt.run(echo(1))


def test_stop_with_calls_in_flight_answers_everyone() -> None:
    """stop() while 50 callers wait: each gets its result or LoopNotRunningError."""
    lt = LoopThread("busy", cancel_grace=0.2).start()
    gate = threading.Event()
    started = threading.Semaphore(0)

    async def job(i: int) -> int:
        started.release()
        if i % 2:
            await asyncio.Event().wait()  # never finishes: cancelled at the deadline
        return i

    def caller(i: int) -> str:
        gate.wait()
        try:
            return "ok" if lt.run(job(i)) == i else "wrong"
        except LoopNotRunningError:
            return "stopped"

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(caller, i) for i in range(50)]
        gate.set()
        for _ in range(50):
            assert started.acquire(timeout=5)
        report = lt.stop(timeout=1.0)
        outcomes = [f.result(timeout=5) for f in futures]
    assert outcomes.count("ok") == 25
    assert outcomes.count("stopped") == 25
    assert report.finished
    assert report.cancelled >= 25
    assert report.deadline_hit
    assert not report.clean


def test_stop_lets_running_work_finish(lt: LoopThread) -> None:
    """Work in flight that finishes before the deadline completes normally during stop()."""
    release = threading.Event()
    entered = threading.Event()

    async def finishing() -> str:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        return "done"

    async def on_stop(deadline: float) -> int:
        release.set()  # runs once stop() has begun, while finishing() is in flight
        return 0

    testing.add_stop_hook(lt, on_stop)
    fut = lt.submit(finishing())
    assert entered.wait(5)
    report = lt.stop(5.0)
    assert fut.result(timeout=1) == "done"
    assert report.finished
    assert report.cancelled == 0
    assert report.completed == 1


def test_stop_is_idempotent_and_bounded_with_blocked_loop() -> None:
    """stop() returns within its timeout even if the loop is blocked; waiters are released."""
    lt = LoopThread("stuck").start()
    unblock = threading.Event()
    entered = threading.Event()

    async def block() -> None:
        entered.set()
        unblock.wait(30)

    blocked = lt.submit(block())
    assert entered.wait(5)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        report = lt.stop(timeout=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert not report.finished
    assert report.deadline_hit
    with pytest.raises(LoopNotRunningError):
        blocked.result(timeout=1)
    stop_logs = [e for e in logs if e["event"] == "loop_thread.stop_timed_out"]
    assert stop_logs
    assert "block" in stop_logs[0]["loop_stack"]
    unblock.set()
    lt.thread.join(5)
    assert isinstance(lt.stop(), ShutdownReport)


def test_stop_from_loop_thread_schedules_and_returns() -> None:
    """stop() called on the loop thread does not deadlock: it schedules the shutdown."""
    lt = LoopThread("self-stop").start()

    async def stop_myself() -> bool:
        report = lt.stop()
        return report.finished

    assert lt.run(stop_myself()) is False
    lt.thread.join(5)
    assert not lt.thread.is_alive()
    assert lt.state == "stopped"


def test_stop_runs_asyncgen_cleanup(lt: LoopThread) -> None:
    """stop() shuts down async generators: their finally blocks run."""
    finalized = threading.Event()

    async def agen() -> Any:
        try:
            yield 1
            yield 2
        finally:
            finalized.set()

    async def start_gen() -> Any:
        gen = agen()
        await gen.__anext__()
        return gen

    keep = lt.run(start_gen())
    lt.stop()
    assert finalized.is_set()
    del keep


def test_context_manager_stops(lt: LoopThread) -> None:
    """The with-block starts and stops the loop."""
    with LoopThread("ctx") as inner:
        assert inner.running
        thread = inner.thread
    assert not inner.running
    assert not thread.is_alive()


def test_stop_never_started() -> None:
    """stop() on a LoopThread never started is a finished no-op."""
    report = LoopThread("idle").stop()
    assert report.finished
    assert report.clean


def test_lifecycle_logged_with_structlog() -> None:
    """Lifecycle events are logged through structlog's 'loopthread' logger."""
    with structlog.testing.capture_logs() as logs:
        lt = LoopThread("logged").start()
        lt.stop()
    events = [e["event"] for e in logs if e.get("loop_thread") == "logged"]
    assert events == ["loop_thread.started", "loop_thread.stopping", "loop_thread.stopped"]


def test_repr_and_stats(lt: LoopThread) -> None:
    """__repr__ shows live counts derived from stats()."""
    lt.run(echo(1))
    text = repr(lt)
    assert "test-loop" in text
    assert "running" in text
    assert "calls=1" in text
    assert lt.stats().calls_started == 1


# ---------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_loopthread_from_parent_raises_in_forked_child(lt: LoopThread) -> None:
    """A LoopThread inherited across fork() raises in the child instead of hanging."""
    lt.run(echo(1))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        code = 1
        try:
            lt.run(echo(1), timeout=2)
        except LoopNotRunningError as exc:
            code = 0 if "forked child" in str(exc) else 2
        except BaseException:  # noqa: BLE001 - any other outcome is a failure code
            code = 3
        os.write(write_fd, bytes([code]))
        os._exit(0)
    os.close(write_fd)
    try:
        result = os.read(read_fd, 1)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert result == b"\x00"
    assert lt.run(echo(2)) == 2  # the parent is unaffected


@pytest.fixture(name="many_loops")
def fixture_many_loops() -> Iterator[list[LoopThread]]:
    """Several running LoopThreads, stopped afterwards."""
    loops = [LoopThread(f"many-{i}").start() for i in range(4)]
    yield loops
    for lt in loops:
        lt.stop()


def test_independent_loop_threads(many_loops: list[LoopThread]) -> None:
    """Several LoopThreads run side by side, each on its own thread."""
    threads = {lt.run(_thread_name()) for lt in many_loops}
    assert threads == {f"many-{i}" for i in range(4)}


async def _thread_name() -> str:
    return threading.current_thread().name


def test_module_run_uses_default() -> None:
    """loopthread.run() runs on the default loop."""
    assert loopthread.run(_thread_name()) == "loopthread-default"


def test_interrupt_between_queueing_and_waking_does_not_wedge(lt: LoopThread) -> None:
    """Ctrl-C landing after a call was queued but before the loop was woken: the call is
    cancelled, and later calls still run (the wake-up flag is repaired)."""
    loop = lt.loop
    real = loop.call_soon_threadsafe
    fired: list[bool] = []

    def interrupted_once(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return real(callback, *args, **kwargs)

    loop.call_soon_threadsafe = interrupted_once  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            lt.run(echo(1))
    finally:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
    assert fired
    assert lt.run(echo(2), timeout=5) == 2
    assert lt.stats().in_flight == 0
