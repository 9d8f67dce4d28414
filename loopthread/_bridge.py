"""What sync code reaches for beyond calls: plain callables on the loop thread, callers on
other event loops, async context managers and async iterators.

Everything here is built on ``lt.submit`` (the core's one hand-off); nothing touches the
core's internals. The pieces that hold something open on the loop between two sync calls (an
entered context manager, an async iterator being read) keep it inside *one* task, so that
``__aexit__`` and ``aclose()`` run in the task that entered or started it (anyio's cancel
scopes and task groups insist on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from loopthread._core._call import SubmitFuture
from loopthread._core._component import ComponentBase, StopPhase
from loopthread._exceptions import LoopNotRunningError, LoopThreadError, WouldDeadlockError
from loopthread._util import Latch, remaining
from loopthread._validate import check_timeout, close_awaitables

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from loopthread._loopthread import LoopThread

__all__ = ["EnteredContext", "OnStop", "arun", "call_soon", "iterate", "run_sync"]

T = TypeVar("T")


async def _invoke_sync(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(*args)


def run_sync(
    lt: LoopThread, fn: Callable[..., T], args: tuple[Any, ...], timeout: float | None
) -> T:
    """``fn(*args)`` on the loop thread; its result. On the loop thread itself: called at once."""
    if not callable(fn):
        raise TypeError(f"lt.run_sync() takes a plain callable; got {type(fn).__name__} {fn!r}.")
    if lt.in_loop_thread():
        return fn(*args)
    return lt.run(_invoke_sync(fn, args), timeout=timeout)


def call_soon(lt: LoopThread, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
    """Schedule ``fn(*args)`` on the loop thread; a ``concurrent.futures.Future`` of its result."""
    if not callable(fn):
        raise TypeError(f"lt.call_soon() takes a plain callable; got {type(fn).__name__} {fn!r}.")
    return lt.submit(_invoke_sync(fn, args))


async def arun(lt: LoopThread, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on ``lt``'s loop from a coroutine running on another loop.

    Cancelling the caller cancels the work on ``lt`` and waits for its cleanup (at most
    ``lt.cancel_grace``) before the cancellation goes on.
    """
    loop = asyncio.get_running_loop()
    if lt.loop_started and loop is lt.loop:
        close_awaitables([awaitable])
        raise LoopThreadError(
            f"lt.arun() was awaited on the loop of LoopThread {lt.name!r} itself; there, await "
            "the coroutine directly (result = await fetch())."
        )
    future = lt.submit(awaitable)
    over = loop.create_future()

    def tell() -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop closed meanwhile
            loop.call_soon_threadsafe(_set_none, over)

    if isinstance(future, SubmitFuture):
        future.when_ended(tell)
    else:  # pragma: no cover - lt.submit always returns one
        future.add_done_callback(lambda _: tell())
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or not task.cancelling():
            raise  # the work itself was cancelled on lt (it stopped): not our caller
        future.cancel()
        grace = lt.cancel_grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(over), None if grace == float("inf") else grace)
        raise


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failure is raised to whoever waits, not logged


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EnteredContext(Generic[T]):
    """``with lt.enter(async_cm) as value:`` — an async context manager used from sync code.

    ``__aenter__`` and ``__aexit__`` run on the loop in one task, which waits between them;
    the exception that leaves the ``with`` block is passed to ``__aexit__`` as it is, and what
    ``__aexit__`` returns decides whether it is suppressed, as with ``async with``.
    """

    __slots__ = ("_cm", "_entered", "_exc", "_exit", "_held", "_lt", "_task")

    def __init__(self, lt: LoopThread, cm: AbstractAsyncContextManager[T]) -> None:
        if not (hasattr(type(cm), "__aenter__") and hasattr(type(cm), "__aexit__")):
            close_awaitables([cm])
            hint = (
                " It is a coroutine: await-able, not an async context manager; use lt.run()."
                if asyncio.iscoroutine(cm)
                else ""
            )
            raise TypeError(
                f"lt.enter() takes an async context manager (an object with __aenter__ and "
                f"__aexit__, e.g. httpx.AsyncClient()); got {type(cm).__name__}.{hint}"
            )
        self._lt = lt
        self._cm = cm
        self._entered: Future[T] = Future()
        self._exit: asyncio.Event | None = None
        self._exc: tuple[Any, Any, Any] = (None, None, None)
        self._held: Future[bool] | None = None
        self._task: asyncio.Task[bool] | None = None

    async def _hold(self) -> bool:
        cm = self._cm
        kind = type(cm)
        exit_ = asyncio.Event()
        self._exit = exit_
        try:
            value = await kind.__aenter__(cm)
        except BaseException as exc:
            self._entered.set_exception(exc)
            raise
        self._entered.set_result(value)
        try:
            await exit_.wait()
        except BaseException as exc:  # cancelled while entered (stop(), Ctrl-C): as async with
            if not await kind.__aexit__(cm, type(exc), exc, exc.__traceback__):
                raise
            return False
        return bool(await kind.__aexit__(cm, *self._exc))

    def __enter__(self) -> T:
        if self._held is not None:
            raise LoopThreadError("this lt.enter(...) context was entered already; make another.")
        held = self._held = self._lt.submit(self._hold())
        try:
            return self._entered.result()
        except BaseException:
            # __aenter__ failed (its error is raised here), or the caller was interrupted
            # (Ctrl-C): then the task is cancelled on the loop, and __aexit__ never runs, as
            # with `async with` when __aenter__ does not finish.
            if not self._entered.done():
                held.cancel()
                self._wait_over(held)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        held = self._held
        assert held is not None
        self._exc = (exc_type, exc, tb)
        exit_ = self._exit
        assert exit_ is not None
        try:
            if held.done():
                raise RuntimeError("exited already")
            self._lt.loop.call_soon_threadsafe(exit_.set)
        except RuntimeError:  # the loop closed, or stop() exited the context meanwhile
            if exc is not None:
                return False  # the block's own exception goes on
            raise LoopNotRunningError(
                f"the async context entered by lt.enter() was exited when LoopThread "
                f"{self._lt.name!r} stopped (its __aexit__ ran with CancelledError)."
            ) from None
        try:
            return held.result()
        except BaseException as raised:
            if raised is exc:
                return False  # __aexit__ re-raised the block's own exception
            if not held.done():  # interrupted while __aexit__ ran
                held.cancel()
                self._wait_over(held)
            raise

    def enter_for_lifetime(self) -> T:
        """Enter in a plain task of the loop (not a call: stop() cancels calls before its
        hooks run), to be exited by :meth:`aexit` from a stop hook."""
        self._task = self._lt.run_sync(self._spawn)
        return self._entered.result()

    def _spawn(self) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(self._hold())
        task.add_done_callback(_retrieve)
        return task

    async def aexit(self) -> None:
        """On the loop (a stop hook): exit the lifetime context, no exception, and wait."""
        task, exit_ = self._task, self._exit
        if task is None or exit_ is None or task.done():
            return
        exit_.set()
        await task

    def _wait_over(self, held: Future[bool]) -> None:
        over = Latch()
        if isinstance(held, SubmitFuture):
            held.when_ended(over.set)
            over.wait(self._lt.cancel_grace)


class _Pump(Generic[T]):
    """Reads an async iterable on the loop into a bounded buffer that a sync thread empties.

    Lost wake-ups, both ways (each side writes, then reads the other's flag):
    - the reader registers its Latch in ``_reader``, then looks at the buffer and ``_over``;
      the pump appends (or sets ``_over``), then takes ``_reader`` and sets it;
    - the pump raises ``_full`` and clears ``_room``, then looks at the buffer's length; the
      reader empties the buffer, then looks at ``_full`` and sets ``_room`` through the loop.
    """

    def __init__(self, source: AsyncIterable[T], read_ahead: int) -> None:
        self.source = source
        self.read_ahead = read_ahead
        self.buffer: deque[T] = deque()
        self.error: BaseException | None = None
        self._over = False
        self._reader: Latch | None = None
        self._full = False
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        room = self._room = asyncio.Event()
        iterator: AsyncIterator[T] = aiter(self.source)
        try:
            while True:
                while len(self.buffer) >= self.read_ahead:
                    room.clear()
                    self._full = True
                    if len(self.buffer) >= self.read_ahead:
                        await room.wait()
                    self._full = False
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                self.buffer.append(item)
                self._wake_reader()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._over = True
            self._wake_reader()
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def _wake_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.set()

    def take(self, timeout: float | None) -> list[T] | None:
        """Everything buffered (at least one item), or None once the source is exhausted.

        Raises:
            TimeoutError: no item within ``timeout``.
            BaseException: what the source raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            items = self._drain()
            if items:
                return items
            if self._over:
                items = self._drain()  # appended just before it ended
                if items:
                    return items
                if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
                    raise self.error
                return None
            latch = Latch()
            self._reader = latch
            if self.buffer or self._over:
                continue
            left = None if deadline is None else remaining(deadline)
            if (left is not None and left <= 0) or not latch.wait(left):
                raise TimeoutError(f"lt.iterate(): no item within timeout={timeout}s.")

    def _drain(self) -> list[T]:
        buffer = self.buffer
        items: list[T] = []
        while True:
            try:
                items.append(buffer.popleft())
            except IndexError:
                break
        if items and self._full and self._room is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed
                self._loop.call_soon_threadsafe(self._room.set)
        return items


def iterate(
    lt: LoopThread, source: AsyncIterable[T], timeout: float | None, read_ahead: int
) -> Iterator[T]:
    """A plain iterator over an async iterable read on ``lt``'s loop (see LoopThread.iterate)."""
    if not hasattr(type(source), "__aiter__"):
        close_awaitables([source])
        raise TypeError(
            "lt.iterate() takes an async iterable (an async generator, an object with "
            f"__aiter__); got {type(source).__name__}. For a coroutine use lt.run()."
        )
    timeout = check_timeout(timeout)
    if lt.in_loop_thread():
        raise WouldDeadlockError(
            "lt.iterate() was called on the loop thread, which is the one that reads the "
            "source: it would wait for itself. In a coroutine, use `async for` directly."
        )
    if type(read_ahead) is not int or read_ahead < 1:
        raise ValueError(f"read_ahead must be an int >= 1; got {read_ahead!r}.")
    return _iterate(lt, _Pump(source, read_ahead), timeout)


def _iterate(lt: LoopThread, pump: _Pump[T], timeout: float | None) -> Iterator[T]:
    task = lt.submit(pump.run())
    try:
        while True:
            items = pump.take(timeout)
            if items is None:
                return
            yield from items
    finally:
        # Exhausted, a break, close(), garbage collection, a timeout, Ctrl-C, an error: the
        # pump's task ends (cancelled if still reading) and the source is aclose()d on the
        # loop, its `finally` blocks included, before this returns (at most cancel_grace).
        if not task.done():
            task.cancel()
        over = Latch()
        if isinstance(task, SubmitFuture):
            task.when_ended(over.set)
            over.wait(lt.cancel_grace)


class OnStop(ComponentBase):
    """``lt.on_stop(async_fn)``: ``await async_fn()`` on the loop when ``lt`` stops, in the
    ``"close"`` phase (after channels drained and calls finished or were cancelled, while the
    loop's other tasks still run, before resources close), bounded by the stop deadline."""

    stop_phase: StopPhase = "close"

    def __init__(self, fn: Callable[[], Awaitable[object]]) -> None:
        if not callable(fn):
            close_awaitables([fn])
            raise TypeError(
                "lt.on_stop() takes an async function of no arguments (it is called at stop); "
                f"got {type(fn).__name__} {fn!r}."
            )
        self._fn = fn

    @property
    def name(self) -> str:
        return f"on-stop:{getattr(self._fn, '__qualname__', type(self._fn).__qualname__)}"

    async def on_stop(self, deadline: float) -> None:
        await self._fn()

    def stats(self) -> None:
        return None
