"""The blocking facade: sync code calling async functions on one shared loop.

Run: python examples/blocking_facade.py
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

import loopthread

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def fetch_price(sku: str) -> float:
    """An async client call; it sees the caller's contextvars."""
    await asyncio.sleep(0.01)
    return {"apple": 1.25, "pear": 0.8}.get(sku, 0.0) + (0.01 if request_id.get() != "-" else 0)


@loopthread.blocking(timeout=1.0)
async def price_of(sku: str) -> float:
    """A sync-callable function backed by an async one."""
    return await fetch_price(sku)


def handle_request(n: int) -> str:
    """What a WSGI view or a worker thread does: plain sync code."""
    request_id.set(f"req-{n}")
    price = loopthread.run(fetch_price("apple"))
    return f"req-{n}: apple costs {price:.2f}"


def main() -> None:
    """Show run, the decorator, gather, submit and a timeout, all on the default loop."""
    with ThreadPoolExecutor(4) as pool:
        for line in pool.map(handle_request, range(4)):
            print(line)
    print("pear via @blocking:", price_of("pear"))
    lt = loopthread.default()
    print("gather:", lt.gather(*(fetch_price(s) for s in ("apple", "pear", "plum"))))
    future = lt.submit(fetch_price("pear"))
    print("submit:", future.result(timeout=1))
    try:
        lt.run(asyncio.sleep(10), timeout=0.05)
    except TimeoutError:
        print("timeout: the coroutine was cancelled on the loop")
    print("loops created:", lt.stats().loops_created)


if __name__ == "__main__":
    main()
