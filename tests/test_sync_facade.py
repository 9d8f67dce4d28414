"""Typed sync facades of async classes (issue "The whole facade"): methods, iterators and the
async context of the wrapped object, on the facade's LoopThread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import loopthread
from loopthread import LoopThread, SyncFacade, sync_iterator, sync_method


class AsyncClient:
    """Stands in for an async SDK client."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.tasks: list[asyncio.Task[object] | None] = []

    async def get(self, url: str, *, retries: int = 0) -> bytes:
        """Fetch ``url``."""
        await asyncio.sleep(0)
        if url == "bad":
            raise ConnectionError("refused")
        return f"{url}:{retries}".encode()

    async def stream(self, count: int) -> AsyncIterator[int]:
        try:
            for i in range(count):
                await asyncio.sleep(0)
                yield i
        finally:
            self.events.append("stream closed")

    async def __aenter__(self) -> AsyncClient:
        self.tasks.append(asyncio.current_task())
        self.events.append("opened")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.tasks.append(asyncio.current_task())
        self.events.append("closed")


class SyncClient(SyncFacade[AsyncClient]):
    get = sync_method(AsyncClient.get)
    stream = sync_iterator(AsyncClient.stream)


def test_methods_block_and_return_the_async_results(lt: LoopThread) -> None:
    client = SyncClient(AsyncClient(), loop_thread=lt)
    assert client.get("a") == b"a:0"
    assert client.get("b", retries=2) == b"b:2"
    with pytest.raises(ConnectionError, match="refused"):
        client.get("bad")
    assert SyncClient.get.__doc__ == "Fetch ``url``."


def test_iterators_are_plain_iterators_closed_on_the_loop(lt: LoopThread) -> None:
    async_client = AsyncClient()
    client = SyncClient(async_client, loop_thread=lt)
    assert list(client.stream(5)) == [0, 1, 2, 3, 4]
    for item in client.stream(1000):
        if item == 3:
            break
    assert async_client.events == ["stream closed", "stream closed"]


def test_the_facade_enters_the_async_context_in_one_task(lt: LoopThread) -> None:
    async_client = AsyncClient()
    with SyncClient(async_client, loop_thread=lt) as client:
        assert client.get("x") == b"x:0"
        assert async_client.events == ["opened"]
    assert async_client.events == ["opened", "closed"]
    assert async_client.tasks[0] is async_client.tasks[1] is not None


def test_open_makes_the_async_object_on_the_loop(lt: LoopThread) -> None:
    async def make() -> AsyncClient:
        asyncio.get_running_loop()  # needs a running loop, as aiohttp's ClientSession does
        return AsyncClient()

    client = SyncClient.open(make, loop_thread=lt)
    assert client.get("y") == b"y:0"


def test_the_default_loop_is_used_when_none_is_given() -> None:
    client = SyncClient(AsyncClient())
    assert client.loop_thread is loopthread.default()
    assert client.get("z") == b"z:0"


def test_sync_method_refuses_what_is_not_an_async_method() -> None:
    def plain(self: object) -> None:
        return None

    with pytest.raises(TypeError, match="async def"):
        sync_method(plain)  # type: ignore[arg-type]


def test_entering_a_facade_twice_is_refused(lt: LoopThread) -> None:
    from loopthread import LoopThreadError

    client = SyncClient(AsyncClient(), loop_thread=lt)
    with client, pytest.raises(LoopThreadError, match="entered already"), client:
        pass
