"""Async iterators and other loops from sync code: ``lt.iterate`` and ``lt.arun``.

* ``lt.iterate`` over N items of an async generator against the two ways sync code does it
  today: ``asyncio.run`` of a coroutine that collects the whole generator (per call), and a
  hand-written ``run_coroutine_threadsafe(agen.__anext__(), loop).result()`` per item on a
  background loop. Time per item, interleaved rounds, medians and ratios.
* ``await lt.arun(coro)`` from another running loop against the floor it is built on,
  ``await asyncio.wrap_future(lt.submit(coro))``. Time per call.

Targets (issue "The whole facade"): iterate ≥ 5x faster per item than the per-item loop;
arun ≤ 1.2x ``wrap_future(submit)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from loopthread import LoopThread
from perf._harness import background_loop, interleave, markdown_table, run_main


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def _iterate_competitors(
    lt: LoopThread, loop: asyncio.AbstractEventLoop, n: int
) -> dict[str, Callable[[], float]]:
    import time

    def with_iterate() -> float:
        t0 = time.perf_counter()
        total = sum(lt.iterate(numbers(n)))
        assert total == n * (n - 1) // 2
        return (time.perf_counter() - t0) / n

    def with_asyncio_run() -> float:
        async def collect() -> list[int]:
            return [i async for i in numbers(n)]

        t0 = time.perf_counter()
        total = sum(asyncio.run(collect()))
        assert total == n * (n - 1) // 2
        return (time.perf_counter() - t0) / n

    def per_item() -> float:
        t0 = time.perf_counter()
        agen = numbers(n)
        total = 0
        while True:
            try:
                step = agen.__anext__()
                total += asyncio.run_coroutine_threadsafe(step, loop).result()  # type: ignore[arg-type]
            except StopAsyncIteration:
                break
        assert total == n * (n - 1) // 2
        return (time.perf_counter() - t0) / n

    return {
        "lt.iterate (read_ahead=64)": with_iterate,
        "asyncio.run collecting the generator": with_asyncio_run,
        "run_coroutine_threadsafe(__anext__()) per item": per_item,
    }


def _arun_competitors(lt: LoopThread, calls: int) -> dict[str, Callable[[], float]]:
    import time

    async def noop() -> int:
        return 1

    def with_arun() -> float:
        async def main() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                await lt.arun(noop())
            return (time.perf_counter() - t0) / calls

        return asyncio.run(main())

    def with_wrap_future() -> float:
        async def main() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                await asyncio.wrap_future(lt.submit(noop()))
            return (time.perf_counter() - t0) / calls

        return asyncio.run(main())

    return {
        "await lt.arun(coro)": with_arun,
        "await wrap_future(lt.submit(coro))": with_wrap_future,
    }


def report(quick: bool = False) -> str:
    items = 2_000 if quick else 10_000
    rounds = 3 if quick else 9
    calls = 300 if quick else 2_000
    with LoopThread("bench-bridge", metrics_registry=None) as lt, background_loop() as loop:
        iterated = interleave(_iterate_competitors(lt, loop, items), rounds)
        arun = interleave(_arun_competitors(lt, calls), rounds)
    per_item = iterated["run_coroutine_threadsafe(__anext__()) per item"].median
    rows = [
        [name, f"{r.median * 1e6:.2f}", f"{per_item / r.median:.1f}x"]
        for name, r in iterated.items()
    ]
    floor = arun["await wrap_future(lt.submit(coro))"].median
    arun_rows = [
        [name, f"{r.median * 1e6:.1f}", f"{r.median / floor:.2f}x"] for name, r in arun.items()
    ]
    speedup = per_item / iterated["lt.iterate (read_ahead=64)"].median
    ratio = arun["await lt.arun(coro)"].median / floor
    lines = [
        f"### lt.iterate: {items:,} items, {rounds} interleaved rounds",
        "",
        markdown_table(
            ["method", "µs per item (median)", "speed vs per-item loop"], rows, key="iterate"
        ),
        "",
        f"### lt.arun from another loop: {calls:,} calls, {rounds} interleaved rounds",
        "",
        markdown_table(
            ["method", "µs per call (median)", "vs wrap_future(submit)"], arun_rows, key="arun"
        ),
        "",
        f"- lt.iterate ≥ 5x the per-item loop: {speedup:.1f}x: "
        f"{'**met**' if speedup >= 5 else '**NOT met**'}",
        f"- lt.arun ≤ 1.2x wrap_future(submit): {ratio:.2f}x: "
        f"{'**met**' if ratio <= 1.2 else '**NOT met**'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main("bench_bridge", report, __doc__ or "")
