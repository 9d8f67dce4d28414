"""The program test_signal_storm.py runs: the main thread calls a LoopThread under a storm of
signals whose handler raises, at random instants.

Usage: ``python _storm_child.py INTERRUPTS SECONDS SEED``. The main thread cycles through the
blocking facade (``run``, ``call``, ``gather``, ``submit().result()``, and the stdlib's
``concurrent.futures.wait`` over submitted futures) while ``SIGALRM`` fires after a random
20-400 µs; its handler raises :class:`Storm` wherever the main thread is, which may be inside
a lock's ``__enter__``. It stops after INTERRUPTS signals or SECONDS, then checks that the
loop still answers, and prints ``RESULT <json>``:

* ``interrupts``: signals whose exception the main thread caught;
* ``calls``: facade calls that returned;
* ``own_lock_errors``: ``RuntimeError`` about a lock that reached the caller from loopthread's
  own API instead of the signal's exception (must be 0);
* ``stdlib_lock_errors``: the same from the stdlib's ``concurrent.futures.wait`` (its
  ``Event.wait`` has the gap; not ours to fix, reported);
* ``healthy``: after the storm, ``run``, ``submit`` and ``concurrent.futures.wait`` answered
  within 5 s each; ``stopped``: ``lt.stop(timeout=5)`` finished.

A wedged loop makes the health checks time out (or the child hang, which the parent kills).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import loopthread


class Storm(Exception):
    """What the SIGALRM handler raises."""


def _raise(signum: int, frame: object) -> None:
    raise Storm


async def suspend(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def instant(x: int) -> int:
    return x


def main() -> None:
    limit, seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    lt = loopthread.LoopThread(name="storm", cancel_grace=1.0)
    lt.start()
    own: list[Callable[[int], Any]] = [
        lambda i: lt.run(suspend(i)),
        lambda i: lt.run(instant(i), timeout=5),
        lambda i: lt.call(suspend, i),
        lambda i: lt.gather(suspend(i), instant(i)),
        lambda i: lt.submit(suspend(i)).result(timeout=5),
        lambda i: lt.submit(instant(i)).exception(timeout=5),
    ]
    stdlib: list[Callable[[int], Any]] = [
        lambda i: concurrent.futures.wait(
            [lt.submit(suspend(i)), lt.submit(instant(i))], timeout=5
        ),
    ]
    ops = [(op, True) for op in own] + [(op, False) for op in stdlib]
    interrupts = calls = own_errors = stdlib_errors = 0
    examples: list[str] = []
    signal.signal(signal.SIGALRM, _raise)
    deadline = time.monotonic() + seconds
    i = 0
    while interrupts < limit and time.monotonic() < deadline:
        op, ours = ops[i % len(ops)]
        i += 1
        try:
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(20e-6, 400e-6))
            # A signal whose exception lands in a GC callback is "ignored" by the interpreter:
            # bounded, so that the next round arms the timer again.
            for _ in range(100):
                op(i)
                calls += 1
        except Storm:
            interrupts += 1
        except RuntimeError as exc:
            if "lock" not in str(exc):
                raise
            if ours:
                own_errors += 1
                examples.append(repr(exc))
            else:
                stdlib_errors += 1
        except (TimeoutError, concurrent.futures.CancelledError) as exc:
            examples.append(f"unexpected {exc!r}")
            break
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    healthy = True
    try:
        assert lt.run(instant(7), timeout=5) == 7
        assert lt.submit(suspend(8)).result(timeout=5) == 8
        done, _ = concurrent.futures.wait([lt.submit(suspend(n)) for n in range(10)], timeout=5)
        assert len(done) == 10
    except BaseException as exc:  # noqa: BLE001 - reported, judged by the parent
        healthy = False
        examples.append(f"health check: {exc!r}")
        frame = sys._current_frames().get(lt.thread.ident or 0)
        examples.append("loop thread: " + "".join(traceback.format_stack(frame)[-6:]))
    stopped = lt.stop(timeout=5).finished
    print(
        "RESULT "
        + json.dumps(
            {
                "interrupts": interrupts,
                "calls": calls,
                "own_lock_errors": own_errors,
                "stdlib_lock_errors": stdlib_errors,
                "healthy": healthy,
                "stopped": stopped,
                "examples": examples[:5],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
