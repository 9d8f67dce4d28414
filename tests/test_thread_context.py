"""loopthread's own threads start with an empty contextvars.Context, on every Python.

Up to 3.13 a new thread always starts with an empty context. From 3.14 a thread can inherit
a copy of its creator's (``-X thread_inherit_context=1``, the default on free-threaded builds).
The loop thread, its executor's workers and its monitor are started by whichever caller came
first: that caller's variables (a request id) must not become the loop's own, seen by every
callback the loop runs without a context of its own and by every executor job. Here 3.14's
behaviour is reproduced on any version by a ``threading.Thread`` that runs in a copy of its
creator's context (what CPython 3.14 does with that flag on).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from loopthread import LoopThread

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class InheritingThread(threading.Thread):
    """``threading.Thread`` as 3.14 runs it with ``thread_inherit_context`` on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._creator_context = contextvars.copy_context()

    def run(self) -> None:
        self._creator_context.run(super().run)


@pytest.fixture
def inheriting_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "Thread", InheritingThread)


def seen_in_a_thread() -> str:
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(request_id.get()))
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.usefixtures("inheriting_threads")
def test_the_emulation_inherits() -> None:
    """The stand-in for 3.14 does pass the creator's variables on (else the test below
    would prove nothing)."""
    token = request_id.set("caller-1")
    try:
        assert seen_in_a_thread() == "caller-1"
    finally:
        request_id.reset(token)


@pytest.mark.usefixtures("inheriting_threads")
def test_the_loop_and_its_workers_do_not_inherit_the_first_caller_s_context() -> None:
    """The first caller's request id is seen by nothing the loop runs on its own behalf:
    callbacks, executor jobs, and the close hooks stop() runs from the loop thread's own code
    (that last one saw "caller-1" before the loop thread was given an empty context)."""
    token = request_id.set("caller-1")
    try:
        lt = LoopThread("ctx-inherit", metrics_registry=None).start()
    finally:
        request_id.reset(token)
    try:
        loop_saw: list[str] = []
        ran = threading.Event()

        def bare_callback() -> None:  # scheduled with no context: runs in the loop thread's
            loop_saw.append(request_id.get())
            ran.set()

        lt.loop.call_soon_threadsafe(bare_callback)
        assert ran.wait(5.0)

        async def in_a_worker() -> str:
            # run_in_executor passes no context: the job sees its worker thread's own, and
            # the worker was started from the loop thread.
            return await asyncio.get_running_loop().run_in_executor(None, request_id.get)

        worker_saw = lt.run(in_a_worker(), timeout=5.0)
        token = request_id.set("caller-2")
        try:

            async def read() -> str:
                return request_id.get()

            in_call = lt.run(read(), timeout=5.0)
        finally:
            request_id.reset(token)
        closed_saw: list[str] = []

        async def make() -> str:
            return "pool"

        async def close(value: str) -> None:  # run by stop(), from the loop thread's own code
            closed_saw.append(request_id.get())

        res = lt.resource(make, close=close)

        async def use() -> str:
            return await res.get()

        assert lt.run(use(), timeout=5.0) == "pool"
    finally:
        lt.stop()
    assert closed_saw == ["none"]
    assert loop_saw == ["none"]
    assert worker_saw == "none"
    assert in_call == "caller-2"  # a call still sees its caller's variables


def test_every_task_loopthread_starts_is_named() -> None:
    """Tasks show in ``asyncio.all_tasks()``, stall reports and 3.14's ``python -m asyncio
    ps`` by name: every task loopthread starts for user code is named ``loopthread...``."""
    names: dict[str, str] = {}

    def note(where: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        names[where] = task.get_name()

    class Held:
        async def __aenter__(self) -> Held:
            note("enter")
            return self

        async def __aexit__(self, *exc: object) -> None:
            note("exit")

    class Enricher:
        name = "noting"

        async def startup(self) -> None:
            note("enricher startup")

        async def shutdown(self) -> None:
            note("enricher shutdown")

        async def __call__(self, event: Any) -> dict[str, Any]:
            return {}

    async def make() -> str:
        note("resource create")
        return "value"

    async def close(value: str) -> None:
        note("resource close")

    async def handler(batch: list[int]) -> None:
        note("channel handler")

    async def call() -> None:
        note("call")

    from loopthread import EnricherChain

    lt = LoopThread("named", metrics_registry=None).start()
    try:
        lt.run(call())
        with lt.enter(Held()):
            pass
        res = lt.resource(make, close=close)

        async def use() -> str:
            return await res.get()

        lt.run(use())
        EnricherChain([Enricher()], loop_thread=lt).enrich_sync({"id": 1})
        ch = lt.channel(handler)
        ch.put(1)
        assert ch.flush(timeout=5.0)
    finally:
        lt.stop()
    assert set(names) == {
        "call",
        "enter",
        "exit",
        "resource create",
        "resource close",
        "enricher startup",
        "enricher shutdown",
        "channel handler",
    }
    unnamed = {where: name for where, name in names.items() if not name.startswith("loopthread")}
    assert unnamed == {}
