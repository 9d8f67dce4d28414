"""The rest of the facade (issue "The whole facade"): plain callables on the loop thread
(``run_sync``, ``call_soon``), callers on another loop (``arun``), async context managers
(``enter``) and async iterators (``iterate``), through the public API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from loopthread import LoopNotRunningError, LoopThread, LoopThreadError, WouldDeadlockError

# ---------------------------------------------------------------------- run_sync / call_soon


def test_run_sync_calls_a_plain_function_on_the_loop_thread(lt: LoopThread) -> None:
    def where(x: int) -> tuple[bool, int]:
        return lt.in_loop_thread(), x + 1

    assert lt.run_sync(where, 1) == (True, 2)


def test_run_sync_sets_a_loop_affine_event(lt: LoopThread) -> None:
    event: asyncio.Event = lt.run(_make_event(), timeout=5)
    waiter = lt.submit(event.wait())
    lt.run_sync(event.set)
    assert waiter.result(timeout=5) is True


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


def test_run_sync_raises_what_the_function_raised(lt: LoopThread) -> None:
    def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        lt.run_sync(boom)


def test_run_sync_on_the_loop_thread_calls_at_once(lt: LoopThread) -> None:
    async def inner() -> int:
        return lt.run_sync(lambda: 7)

    assert lt.run(inner(), timeout=5) == 7


def test_call_soon_returns_a_future_of_the_result(lt: LoopThread) -> None:
    assert lt.call_soon(lambda a, b: a * b, 6, 7).result(timeout=5) == 42
    with pytest.raises(TypeError, match="plain callable"):
        lt.call_soon(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- arun


def test_arun_from_another_loop(lt: LoopThread) -> None:
    async def on_lt() -> tuple[bool, str]:
        return lt.in_loop_thread(), "done"

    async def caller() -> tuple[bool, str]:
        return await lt.arun(on_lt())

    assert asyncio.run(caller()) == (True, "done")


def test_cancelling_an_arun_caller_cancels_the_work_and_waits_for_its_cleanup(
    lt: LoopThread,
) -> None:
    started = threading.Event()
    cleaned: list[str] = []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # cleanup that takes a moment, on lt's loop
            cleaned.append("cleaned")

    async def caller() -> str:
        task = asyncio.ensure_future(lt.arun(work()))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return "cleaned" if cleaned else "not yet"

    assert asyncio.run(caller()) == "cleaned"


def test_arun_on_its_own_loop_says_to_await_directly(lt: LoopThread) -> None:
    async def inner() -> str:
        try:
            await lt.arun(asyncio.sleep(0))
        except LoopThreadError as exc:
            return str(exc)
        return "no error"

    assert "await the coroutine directly" in lt.run(inner(), timeout=5)


# ---------------------------------------------------------------------- enter


class Recorder:
    """An async context manager that records what happened, in which task."""

    def __init__(self, suppress: bool = False) -> None:
        self.events: list[Any] = []
        self.suppress = suppress
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def __aenter__(self) -> str:
        self.tasks.append(asyncio.current_task())
        self.events.append("enter")
        return "value"

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.tasks.append(asyncio.current_task())
        self.events.append(("exit", exc_type, exc))
        return self.suppress


def test_enter_runs_aenter_and_aexit_in_one_task_on_the_loop(lt: LoopThread) -> None:
    cm = Recorder()
    with lt.enter(cm) as value:
        assert value == "value"
        assert cm.events == ["enter"]
    assert cm.events == ["enter", ("exit", None, None)]
    assert cm.tasks[0] is cm.tasks[1] is not None


def test_enter_passes_the_exception_as_it_is_and_respects_suppression(lt: LoopThread) -> None:
    error = ValueError("in the block")
    cm = Recorder()
    with pytest.raises(ValueError, match="in the block") as raised, lt.enter(cm):
        raise error
    assert raised.value is error
    assert cm.events[1] == ("exit", ValueError, error)
    quiet = Recorder(suppress=True)
    with lt.enter(quiet):
        raise error
    assert quiet.events[1] == ("exit", ValueError, error)


def test_enter_with_a_failing_aenter_raises_and_never_exits(lt: LoopThread) -> None:
    class Failing:
        exited = False

        async def __aenter__(self) -> None:
            raise OSError("cannot connect")

        async def __aexit__(self, *exc: object) -> None:
            Failing.exited = True

    with pytest.raises(OSError, match="cannot connect"), lt.enter(Failing()):
        pass
    assert not Failing.exited


def test_enter_refuses_what_is_not_an_async_context_manager(lt: LoopThread) -> None:
    with pytest.raises(TypeError, match="async context manager"):
        lt.enter(object())  # type: ignore[arg-type]


def test_enter_works_with_contextlib_asynccontextmanager_and_contextvars(
    lt: LoopThread,
) -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def scoped() -> AsyncIterator[str]:
        token = var.set("inside")
        try:
            yield "ok"
        finally:
            seen.append(var.get())  # the same task: the var set on enter is still there
            var.reset(token)

    with lt.enter(scoped()) as value:
        assert value == "ok"
    assert seen == ["inside"]


# ---------------------------------------------------------------------- iterate


def counting(n: int, log: list[str]) -> AsyncIterator[int]:
    async def gen() -> AsyncIterator[int]:
        try:
            for i in range(n):
                await asyncio.sleep(0)
                yield i
        finally:
            log.append("finally")

    return gen()


@pytest.mark.parametrize("read_ahead", [1, 3, 64])
def test_iterate_yields_every_item_in_order(lt: LoopThread, read_ahead: int) -> None:
    log: list[str] = []
    assert list(lt.iterate(counting(200, log), read_ahead=read_ahead)) == list(range(200))
    assert log == ["finally"]


def test_breaking_out_of_iterate_acloses_the_generator_on_the_loop(lt: LoopThread) -> None:
    log: list[str] = []
    for item in lt.iterate(counting(10_000, log)):
        if item == 5:
            break
    # The loop's finally has run by the time the for loop is left (CPython closes the
    # generator as its last reference goes).
    gc.collect()
    assert log == ["finally"]


def test_closing_iterate_acloses_the_generator(lt: LoopThread) -> None:
    log: list[str] = []
    items = lt.iterate(counting(10_000, log))
    assert next(items) == 0
    items.close()  # type: ignore[attr-defined]
    assert log == ["finally"]


def test_iterate_times_out_and_acloses(lt: LoopThread) -> None:
    log: list[str] = []

    async def slow() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.Event().wait()
            yield 2
        finally:
            log.append("finally")

    got: list[int] = []
    with pytest.raises(TimeoutError, match="no item within"):
        got.extend(lt.iterate(slow(), timeout=0.2))
    assert got == [1]
    assert log == ["finally"]


def test_iterate_raises_what_the_source_raised_after_its_items(lt: LoopThread) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("source broke")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="source broke"):
        got.extend(lt.iterate(failing()))
    assert got == [1]


def test_iterate_refuses_bad_input_and_the_loop_thread(lt: LoopThread) -> None:
    with pytest.raises(TypeError, match="async iterable"):
        lt.iterate([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_ahead"):
        lt.iterate(counting(1, []), read_ahead=0)

    async def inner() -> str:
        try:
            lt.iterate(counting(1, []))
        except WouldDeadlockError as exc:
            return str(exc)
        return "no error"

    assert "async for" in lt.run(inner(), timeout=5)


def test_read_ahead_is_bounded(lt: LoopThread) -> None:
    produced: list[int] = []

    async def gen() -> AsyncIterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    items = lt.iterate(gen(), read_ahead=4)
    assert next(items) == 0
    # Let the pump run as far as it may: it stops when 4 items wait unread behind the batch
    # in hand (at most 4 itself), with one more being read.
    lt.run(asyncio.sleep(0.05), timeout=5)
    assert len(produced) <= 4 + 4 + 1
    assert list(items) == list(range(1, 1000))


def test_blocking_on_an_async_generator_function_gives_a_plain_iterator(lt: LoopThread) -> None:
    from loopthread import blocking

    log: list[str] = []

    @blocking(loop_thread=lt)
    async def numbers(n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i * i
        finally:
            log.append("finally")

    assert list(numbers(5)) == [0, 1, 4, 9, 16]
    assert log == ["finally"]


# ---------------------------------------------------------------------- a blocking call in a loop


def test_a_blocking_call_from_a_running_loop_warns_once_per_call_site(lt: LoopThread) -> None:
    import warnings

    from loopthread import BlockingInLoopWarning

    async def jupyter_cell() -> list[int]:
        return [lt.run(asyncio.sleep(0, i), timeout=5) for i in range(3)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert asyncio.run(jupyter_cell()) == [0, 1, 2]
    ours = [w for w in caught if issubclass(w.category, BlockingInLoopWarning)]
    assert len(ours) == 1  # three calls, one call site
    assert ours[0].filename == __file__
    assert "await lt.arun(coro)" in str(ours[0].message)

    async def strict() -> None:
        lt.run(asyncio.sleep(0), timeout=5)

    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockingInLoopWarning)
        with pytest.raises(BlockingInLoopWarning):
            asyncio.run(strict())


def test_a_blocking_call_outside_any_loop_does_not_warn(lt: LoopThread) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lt.run(asyncio.sleep(0, "quiet"), timeout=5) == "quiet"


# ---------------------------------------------------------------------- named tasks, on_stop


def test_calls_run_in_tasks_named_after_the_loop_and_the_coroutine(lt: LoopThread) -> None:
    async def fetch_user() -> str:
        task = asyncio.current_task()
        assert task is not None
        return task.get_name()

    assert lt.run(fetch_user(), timeout=5) == (
        "loopthread:test-loop:test_calls_run_in_tasks_named_after_the_loop_and_the_coroutine"
        ".<locals>.fetch_user"
    )


def test_on_stop_hooks_run_newest_first_before_resources_close() -> None:
    order: list[str] = []

    class Pool:
        async def aclose(self) -> None:
            order.append("resource closed")

    async def make_pool() -> Pool:
        return Pool()

    lt = LoopThread("hooks", metrics_registry=None).start()
    pool = lt.resource(make_pool)
    lt.run(pool.get(), timeout=5)

    @lt.on_stop
    async def first() -> None:
        await asyncio.sleep(0)
        order.append("first")

    @lt.on_stop
    async def second() -> None:
        order.append("second")
        raise RuntimeError("a faulty hook does not stop the others")

    report = lt.stop(timeout=5)
    assert report.finished
    assert order == ["second", "first", "resource closed"]
    with pytest.raises(TypeError, match="async function"):
        LoopThread("x", metrics_registry=None).on_stop(3)  # type: ignore[arg-type]


def test_enter_context_keeps_it_entered_until_stop_and_exits_newest_first() -> None:
    order: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name
            self.task: asyncio.Task[Any] | None = None

        async def __aenter__(self) -> str:
            self.task = asyncio.current_task()
            order.append(f"enter {self.name}")
            return self.name

        async def __aexit__(self, *exc: object) -> None:
            assert asyncio.current_task() is self.task  # the task that entered it
            order.append(f"exit {self.name}")

    lt = LoopThread("lifetime", metrics_registry=None).start()
    assert lt.enter_context(Named("db")) == "db"
    assert lt.enter_context(Named("cache")) == "cache"
    assert order == ["enter db", "enter cache"]
    assert lt.stop(timeout=5).finished
    assert order == ["enter db", "enter cache", "exit cache", "exit db"]


def test_stop_while_a_context_is_entered_exits_it_like_a_cancelled_async_with() -> None:
    events: list[Any] = []

    class CM:
        async def __aenter__(self) -> int:
            events.append("enter")
            return 1

        async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            events.append(("exit", exc_type))
            return False

    lt = LoopThread("stop-inside", metrics_registry=None).start()
    stopped = "LoopThread 'stop-inside' was stopped"
    with pytest.raises(LoopNotRunningError, match=stopped), lt.enter(CM()):
        assert lt.stop(timeout=5).finished
    assert events == ["enter", ("exit", asyncio.CancelledError)]


# ---------------------------------------------------------------------- what a review broke


def test_iterate_raises_a_failing_aiter_at_once(lt: LoopThread) -> None:
    class Broken:
        def __aiter__(self) -> AsyncIterator[int]:
            raise ValueError("boom in __aiter__")

    with pytest.raises(ValueError, match="boom in __aiter__"):
        list(lt.iterate(Broken(), timeout=10))


def _block_then_abandon(lt: LoopThread, entered: threading.Event) -> threading.Thread:
    """Block lt's loop (a coroutine that never awaits) and have stop() give up on it."""

    async def blocker() -> None:
        entered.wait(10)
        threading.Event().wait(2)  # blocks the loop thread itself

    lt.submit(blocker())

    def stop() -> None:
        entered.wait(10)
        lt.stop(timeout=0.2)

    stopper = threading.Thread(target=stop)
    stopper.start()
    return stopper


@pytest.mark.parametrize("use", ["iterate", "enter"])
def test_a_caller_waiting_in_iterate_or_enter_is_answered_when_stop_gives_up(use: str) -> None:
    lt = LoopThread("abandoned", metrics_registry=None, cancel_grace=0.2).start()
    entered = threading.Event()
    stopper = _block_then_abandon(lt, entered)

    class Slow:
        async def __aenter__(self) -> None:
            await asyncio.sleep(10)

        async def __aexit__(self, *exc: object) -> None:
            return None

    def wait_in_it() -> None:
        if use == "iterate":
            list(lt.iterate(counting(5, []), timeout=10))
        else:
            with lt.enter(Slow()):
                pass

    entered.set()
    with pytest.raises(LoopNotRunningError):
        wait_in_it()
    stopper.join(10)


def test_enter_and_enter_context_on_the_loop_thread_refuse(lt: LoopThread) -> None:
    async def inner() -> list[str]:
        messages = []
        uses: list[Callable[[], object]] = [
            lambda: lt.enter(Recorder()).__enter__(),
            lambda: lt.enter_context(Recorder()),
        ]
        for use in uses:
            try:
                use()
            except WouldDeadlockError as exc:
                messages.append(str(exc))
        return messages

    messages = lt.run(inner(), timeout=5)
    assert len(messages) == 2
    assert all("async with" in m for m in messages)
    assert lt.run(asyncio.sleep(0, "alive"), timeout=5) == "alive"


def test_an_iterator_finalized_on_the_loop_thread_does_not_stall_the_loop() -> None:
    lt = LoopThread("finalize", metrics_registry=None, cancel_grace=5.0).start()
    try:
        log: list[str] = []
        holder = [lt.iterate(counting(10_000, log))]
        assert next(holder[0]) == 0
        import time

        t0 = time.monotonic()
        lt.run_sync(holder.clear)  # the last reference goes on the loop thread
        assert time.monotonic() - t0 < 2.5  # not cancel_grace=5
        assert lt.run(asyncio.sleep(0, "alive"), timeout=5) == "alive"
    finally:
        lt.stop(timeout=5)


def test_stop_in_the_middle_of_iterate_is_an_error_not_the_end() -> None:
    lt = LoopThread("stop-mid", metrics_registry=None).start()

    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            await asyncio.sleep(0)
            yield i
            i += 1

    items = lt.iterate(endless(), read_ahead=4)
    assert next(items) == 0
    lt.stop(timeout=1)
    with pytest.raises(LoopNotRunningError, match="stopped"):
        for _ in items:
            pass


def test_stop_during_a_slow_aenter_is_loop_not_running() -> None:
    lt = LoopThread("stop-aenter", metrics_registry=None).start()
    entering = threading.Event()

    class Slow:
        async def __aenter__(self) -> None:
            entering.set()
            await asyncio.sleep(30)

        async def __aexit__(self, *exc: object) -> None:
            return None

    stopper = threading.Thread(target=lambda: (entering.wait(10), lt.stop(timeout=1)))
    stopper.start()
    with pytest.raises(LoopNotRunningError), lt.enter(Slow()):
        pass
    stopper.join(10)


def test_run_sync_and_on_stop_refuse_the_wrong_kind_of_function(lt: LoopThread) -> None:
    async def async_fn() -> None:
        return None

    with pytest.raises(TypeError, match=r"plain \(sync\) function.*lt.call"):
        lt.run_sync(async_fn)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="async function of no arguments"):
        lt.on_stop(lambda: None)  # type: ignore[arg-type,return-value]


def test_a_blocking_done_callback_does_not_stall_the_loop(lt: LoopThread) -> None:
    release = threading.Event()
    future = lt.submit(asyncio.sleep(0, "x"))
    future.add_done_callback(lambda _: release.wait(10))
    assert lt.run(asyncio.sleep(0, "alive"), timeout=5) == "alive"  # while the callback waits
    release.set()


# ---------------------------------------------------------------------- Ctrl-C and fork


def _ctrl_c_when(ready: threading.Event) -> threading.Thread:
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signals are delivered to the main thread"

    def send() -> None:
        if ready.wait(10):
            signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_ctrl_c_while_iterating_acloses_the_source_before_it_reaches_the_caller(
    lt: LoopThread,
) -> None:
    log: list[str] = []
    parked = threading.Event()

    async def source() -> AsyncIterator[int]:
        try:
            yield 1
            parked.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            log.append("finally")

    received = threading.Event()
    _ctrl_c_when(received)
    got: list[int] = []

    def read_all() -> None:
        for item in lt.iterate(source(), timeout=20):
            got.append(item)
            received.set()  # Ctrl-C lands while the next item is awaited

    with pytest.raises(KeyboardInterrupt):
        read_all()
    assert got == [1]
    assert log == ["finally"]  # cleanup ran before the interrupt reached us


def test_ctrl_c_inside_an_entered_block_exits_the_context_with_it(lt: LoopThread) -> None:
    cm = Recorder()
    inside = threading.Event()
    _ctrl_c_when(inside)
    with pytest.raises(KeyboardInterrupt), lt.enter(cm):  # noqa: PT012 - the block is the test
        inside.set()
        threading.Event().wait(20)  # interrupted here
    assert cm.events[0] == "enter"
    assert cm.events[1][:2] == ("exit", KeyboardInterrupt)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_iterators_and_contexts_of_the_parent_refuse_clearly_in_a_forked_child(
    lt: LoopThread,
) -> None:
    items = lt.iterate(counting(1000, []), read_ahead=2)
    assert next(items) == 0
    entered = lt.enter(Recorder())
    entered.__enter__()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        answers = []
        for action in (lambda: list(items), lambda: entered.__exit__(None, None, None)):
            try:
                action()
                answers.append("no error")
            except LoopNotRunningError as exc:
                answers.append("forked child" if "forked child" in str(exc) else str(exc))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                answers.append(repr(exc))
        os.write(write, "|".join(answers).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 4096).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer.split("|")[1] == "forked child", answer
    entered.__exit__(None, None, None)  # the parent's are untouched
    assert next(items) == 1
