"""Deliberate type errors: tests/test_typing.py runs mypy --strict on this file and checks
that each line marked ``# E: <code>`` is reported with that code, and nothing else is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import loopthread
from loopthread import LoopThread

lt = LoopThread()


async def fetch(url: str) -> bytes:
    return url.encode()


async def numbers(n: int) -> AsyncIterator[int]:
    yield n


ok: bytes = lt.call(fetch, "https://example.org")
lt.call(fetch, 1, 2, 3)  # E: arg-type
lt.call(fetch, 3)  # E: arg-type
wrong: str = lt.call(fetch, "u")  # E: assignment
also_wrong: str = lt.run(fetch("u"))  # E: assignment
lt.run(fetch(3))  # E: arg-type
future_wrong: int = lt.submit(fetch("u")).result()  # E: assignment
for item in lt.iterate(numbers(1)):
    text: str = item  # E: assignment


@loopthread.blocking
async def get(url: str) -> bytes:
    return url.encode()


get(3)  # E: arg-type
sync_wrong: str = get("u")  # E: assignment


@loopthread.blocking
async def gen(n: int) -> AsyncIterator[int]:
    yield n


gen("x")  # E: arg-type


class AsyncClient:
    async def get(self, url: str) -> bytes:
        return url.encode()

    async def items(self, n: int) -> AsyncIterator[int]:
        yield n


class SyncClient(loopthread.SyncFacade[AsyncClient]):
    get = loopthread.sync_method(AsyncClient.get)
    items = loopthread.sync_iterator(AsyncClient.items)


client = SyncClient(AsyncClient())
body: bytes = client.get("u")
client.get(3)  # E: arg-type
not_text: str = client.get("u")  # E: assignment
for number in client.items(2):
    not_str: str = number  # E: assignment
client.items("x")  # E: arg-type
