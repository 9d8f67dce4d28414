"""Shared async resources: one creation under races, retry after failure, ordered closing."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import structlog

import loopthread
from loopthread import (
    EnricherChain,
    LoopNotRunningError,
    LoopThread,
    LoopThreadError,
    Resource,
    testing,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class Pool:
    """A stand-in for a connection pool; records when it is closed."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self._closed = closed

    async def aclose(self) -> None:
        self._closed.append(self.name)


class Factory:
    """Counts calls; can be held at a gate until the test releases it, or made to fail."""

    def __init__(self, name: str, closed: list[str] | None = None) -> None:
        self.name = name
        self.calls = 0
        self.fail = False
        self.started = threading.Event()
        self.gate: asyncio.Event | None = None
        self.closed = closed if closed is not None else []
        self.context: str | None = None

    async def __call__(self) -> Pool:
        self.calls += 1
        self.context = request_id.get()
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("database down")
        return Pool(self.name, self.closed)


async def get_all(res: Resource[Any], n: int, *, return_exceptions: bool = False) -> list[Any]:
    gets = [res.get() for _ in range(n)]
    return list(await asyncio.gather(*gets, return_exceptions=return_exceptions))


def test_concurrent_first_gets_share_one_creation(lt: LoopThread) -> None:
    """Many callers racing for the first get() trigger exactly one factory call."""
    factory = Factory("db")
    res = lt.resource(factory)

    async def install_gate() -> None:
        factory.gate = asyncio.Event()

    lt.run(install_gate())
    futures = [lt.submit(get_all(res, 50)) for _ in range(4)]
    assert factory.started.wait(5)
    assert factory.gate is not None
    lt.loop.call_soon_threadsafe(factory.gate.set)
    values = [v for f in futures for v in f.result(5)]
    assert len(values) == 200
    assert all(v is values[0] for v in values)
    assert factory.calls == 1
    assert lt.run(res.get()) is values[0]
    assert factory.calls == 1
    assert res.created


def test_failed_creation_is_shared_then_retried(lt: LoopThread) -> None:
    """Waiters of a failed creation all see its error; the next get() tries again."""
    factory = Factory("db")
    factory.fail = True
    res = lt.resource(factory, name="db")
    with structlog.testing.capture_logs() as logs:
        results = lt.run(get_all(res, 5, return_exceptions=True))
    assert all(isinstance(r, ConnectionError) for r in results)
    assert factory.calls == 1
    assert [e["resource"] for e in logs if e["event"] == "resource.create_failed"] == ["db"]
    assert not res.created
    factory.fail = False
    assert isinstance(lt.run(res.get()), Pool)
    assert factory.calls == 2


def test_a_caller_giving_up_does_not_cancel_the_creation(lt: LoopThread) -> None:
    """The first caller's timeout cancels its wait, not the creation others depend on."""
    factory = Factory("db")
    res = lt.resource(factory)

    async def install_gate() -> None:
        factory.gate = asyncio.Event()

    lt.run(install_gate())
    with pytest.raises(TimeoutError):
        lt.run(res.get(), timeout=0.05)
    waiter = lt.submit(res.get())
    assert factory.gate is not None
    lt.loop.call_soon_threadsafe(factory.gate.set)
    assert isinstance(waiter.result(5), Pool)
    assert factory.calls == 1


def test_creation_runs_in_a_clean_context(lt: LoopThread) -> None:
    """A shared value does not capture the first caller's contextvars."""
    factory = Factory("db")
    res = lt.resource(factory)
    token = request_id.set("first-request")
    try:
        lt.run(res.get())
    finally:
        request_id.reset(token)
    assert factory.context == "none"


def test_get_from_another_loop_is_refused(lt: LoopThread) -> None:
    """A value bound to the LoopThread's loop is never handed to another loop."""
    res = lt.resource(Factory("db"))
    with pytest.raises(LoopThreadError, match="another event loop"):
        asyncio.run(res.get())


def test_closed_in_reverse_order_of_creation(lt: LoopThread) -> None:
    """stop() closes created values newest first, whatever the order they were declared in."""
    closed: list[str] = []
    first_declared = lt.resource(Factory("a", closed))
    second_declared = lt.resource(Factory("b", closed))
    never_used = lt.resource(Factory("unused", closed))
    third_declared = lt.resource(Factory("c", closed))
    lt.run(second_declared.get())
    lt.run(third_declared.get())
    lt.run(first_declared.get())
    lt.stop()
    assert closed == ["a", "c", "b"]
    assert not never_used.created
    assert "closed" in repr(first_declared)


def test_close_variants(lt: LoopThread) -> None:
    """``close=`` wins; else aclose(); else close() (sync or async); else nothing."""
    events: list[str] = []

    class SyncClose:
        def close(self) -> None:
            events.append("sync close")

    class AsyncClose:
        async def close(self) -> None:
            events.append("async close")

    class Both:
        async def aclose(self) -> None:
            events.append("aclose")

        def close(self) -> None:
            events.append("wrong: close")

    async def make_sync() -> SyncClose:
        return SyncClose()

    async def make_async() -> AsyncClose:
        return AsyncClose()

    async def make_both() -> Both:
        return Both()

    async def make_plain() -> int:
        return 42

    async def custom(value: Both) -> None:
        events.append("custom")

    resources: list[Resource[Any]] = [
        lt.resource(make_sync),
        lt.resource(make_async),
        lt.resource(make_both),
        lt.resource(make_both, close=custom),
        lt.resource(make_plain),
    ]
    for res in resources:
        lt.run(res.get())
    lt.stop()
    assert events == ["custom", "aclose", "async close", "sync close"]


def test_failing_and_hanging_closes_skip_none(lt: LoopThread) -> None:
    """A close that raises is logged; one that hangs is cut off; the others still close."""
    closed: list[str] = []

    async def make() -> str:
        return "value"

    async def fails(value: str) -> None:
        raise OSError("close failed")

    async def hangs(value: str) -> None:
        await asyncio.Event().wait()

    async def records(value: str) -> None:
        closed.append("last-created-first")

    async def records_oldest(value: str) -> None:
        closed.append("oldest")

    order = [
        lt.resource(make, close=records_oldest, name="oldest"),
        lt.resource(make, close=hangs, name="hangs"),
        lt.resource(make, close=fails, name="fails"),
        lt.resource(make, close=records, name="newest"),
    ]
    for res in order:
        lt.run(res.get())
    with structlog.testing.capture_logs() as logs:
        report = lt.stop(timeout=1.0)
    assert report.finished
    assert closed == ["last-created-first", "oldest"]
    events = {e["event"]: e for e in logs if e["event"].startswith("resource.")}
    assert events["resource.close_failed"]["resource"] == "fails"
    assert events["resource.close_timed_out"]["resource"] == "hangs"


def test_resources_close_after_enricher_shutdown(lt: LoopThread) -> None:
    """Enrichers' shutdown() may still use a shared resource: resources close last."""
    log: list[str] = []

    async def make() -> Pool:
        return Pool("pool", log)

    pool = lt.resource(make)

    class UsesPool:
        name = "uses_pool"

        async def startup(self) -> None:
            await pool.get()

        async def shutdown(self) -> None:
            log.append("enricher shutdown")

        async def __call__(self, event: Any) -> None:
            return None

    chain = EnricherChain([UsesPool()], loop_thread=lt)
    chain.enrich_sync({})
    late = lt.resource(make, name="declared after the chain started")
    lt.run(late.get())
    lt.stop()
    assert log == ["enricher shutdown", "pool", "pool"]


def test_get_after_stop_is_refused() -> None:
    """Once its LoopThread stopped and closed its resources, a resource no longer hands out
    values: get() raises LoopNotRunningError (and creates nothing new)."""
    lt = LoopThread("resource-stopped", metrics_registry=None).start()
    gets: list[Any] = []

    async def late_hook(deadline: float) -> None:
        try:
            gets.append(await res.get())
        except LoopNotRunningError as exc:
            gets.append(exc)

    # Components of one stop phase stop newest first: this hook, added before the resource
    # closer exists (it is created by the first lt.resource()), runs after it closed.
    testing.add_stop_hook(lt, late_hook, phase="close_last")
    factory = Factory("db")
    res = lt.resource(factory)
    pool = lt.run(res.get())
    lt.stop()
    assert len(gets) == 1
    assert isinstance(gets[0], LoopNotRunningError)
    assert "stopped" in str(gets[0])
    assert factory.calls == 1  # no second value was created for the late get()
    assert factory.closed == [pool.name]
    assert not res.created


def test_declaring_needs_no_running_loop_and_checks_arguments() -> None:
    """lt.resource() works before start(); bad arguments say what to pass."""
    lt = LoopThread("resource-new")
    res = lt.resource(Factory("db"), name="db")
    assert res.name == "db"
    assert not res.created

    async def make() -> int:
        return 1

    coro = make()
    with pytest.raises(TypeError, match="coroutine"):
        lt.resource(coro)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="close"):
        lt.resource(make, close=42)  # type: ignore[arg-type]
    with lt:
        assert lt.run(res.get()).name == "db"


def test_factory_must_be_async(lt: LoopThread) -> None:
    """A plain factory is refused at first get() with the async wrapper to write instead."""
    res: Resource[int] = lt.resource(lambda: 42)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="not an awaitable"):
        lt.run(res.get())


def test_resource_is_exported() -> None:
    """Resource is part of the public API."""
    assert loopthread.Resource is Resource


def test_resource_closed_even_when_stop_deadline_is_spent() -> None:
    """stop(timeout=0) and a hung enricher shutdown still leave each resource a close attempt:
    the resource is closed, the hung shutdown is cut off (and logged), nothing is cancelled
    or abandoned, and only the hung shutdown makes the report say the deadline was hit."""

    closed: list[str] = []

    class Pool:
        async def aclose(self) -> None:
            await asyncio.sleep(0.01)  # one round trip to say goodbye
            closed.append("pool")

    class StuckShutdown:
        name = "stuck"

        async def __call__(self, event: Mapping[str, Any]) -> None:
            return None

        async def shutdown(self) -> None:
            await asyncio.Event().wait()

    async def make() -> Pool:
        return Pool()

    for timeout, enrichers in ((0.0, []), (0.3, [StuckShutdown()])):
        closed.clear()
        lt = loopthread.LoopThread("spent", metrics_registry=None).start()
        res = lt.resource(make)
        lt.run(res.get())
        if enrichers:
            loopthread.EnricherChain(enrichers, loop_thread=lt).enrich_sync({})
        with structlog.testing.capture_logs() as logs:
            report = lt.stop(timeout=timeout)
        assert report.finished
        assert closed == ["pool"]
        assert (report.cancelled, report.abandoned, report.items_unhandled) == (0, 0, 0)
        assert not res.created
        cut_off = [e["enricher"] for e in logs if e["event"] == "enricher.shutdown_failed"]
        assert cut_off == (["stuck"] if enrichers else [])
        if not enrichers:
            assert not report.deadline_hit  # nothing was running: nothing had to be cut
