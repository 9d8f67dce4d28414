"""``run_within``: wait for a chain's coroutine from sync code, bounded, without waiting for its
cleanup (``enrich_sync``, structlog's ``enrich`` processor)."""

from __future__ import annotations

import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from loopthread._core._call import SubmitFuture
from loopthread._util import Latch

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

T = TypeVar("T")

__all__ = ["run_within"]


def run_within(lt: LoopThread, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run ``coro`` on ``lt`` and wait at most ``timeout``; on expiry cancel it and raise at once.

    Unlike ``lt.run(timeout=)``, the coroutine's cleanup is not waited for (it runs on the loop):
    an enrichment budget is a bound on the caller's wait, and a busy loop would otherwise turn
    a 50 ms budget into ``cancel_grace``. One that finished just as the time ran out keeps its
    result. An interrupt (Ctrl-C) while waiting cancels it and, as ``lt.run`` does, gives its
    cleanup up to ``cancel_grace`` before it propagates.

    Raises:
        TimeoutError: ``timeout`` expired.
        LoopNotRunningError: the loop is not running.
        BaseException: what the coroutine raised.
    """
    if timeout is None:
        return lt.run(coro)
    future = lt.submit(coro)
    try:
        return future.result(timeout)
    except TimeoutError:
        if future.cancel():  # cancels it on the loop; its cleanup is not awaited
            raise TimeoutError(
                f"the enricher chain took longer than timeout={timeout}s; it was cancelled"
            ) from None
        return future.result(0)  # it finished just now: the fields are not lost
    except BaseException:
        future.cancel()  # Ctrl-C while waiting: nothing is left running for this call
        if isinstance(future, SubmitFuture):
            ended = Latch()
            future.when_ended(ended.set)
            ended.wait(None if math.isinf(lt.cancel_grace) else lt.cancel_grace)
        raise
