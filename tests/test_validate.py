"""Bad input at the API boundary: the exact exception type and a message with the fix."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable
from typing import Any

import pytest

from loopthread import LoopThread


async def fetch() -> int:
    return 1


BAD_CALLS: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = [
    ("run(async fn)", lambda lt: lt.run(fetch), TypeError, r"did you mean lt\.run\(fetch\(\)\)"),
    ("run(value)", lambda lt: lt.run(3), TypeError, r"takes an awaitable such as fetch\(\)"),
    ("run(None)", lambda lt: lt.run(None), TypeError, "got NoneType"),
    (
        "run(concurrent future)",
        lambda lt: lt.run(concurrent.futures.Future()),
        TypeError,
        r"call its \.result\(\)",
    ),
    ("run(lambda)", lambda lt: lt.run(lambda: 1), TypeError, "Call it to get the coroutine"),
    ("run(timeout=-1)", lambda lt: lt.run(fetch(), timeout=-1), ValueError, ">= 0 seconds"),
    ("run(timeout=nan)", lambda lt: lt.run(fetch(), timeout=float("nan")), ValueError, ">= 0"),
    ("run(timeout='1')", lambda lt: lt.run(fetch(), timeout="1"), TypeError, "number of seconds"),
    ("run(timeout=True)", lambda lt: lt.run(fetch(), timeout=True), TypeError, "number"),
    ("call(coroutine)", lambda lt: lt.call(fetch()), TypeError, r"use lt\.run\(fetch\(x\)\)"),
    ("call(value)", lambda lt: lt.call(5), TypeError, "takes an async function"),
    ("call(timeout=-2)", lambda lt: lt.call(fetch, timeout=-2), ValueError, ">= 0"),
    ("submit(async fn)", lambda lt: lt.submit(fetch), TypeError, r"lt\.submit\(fetch\(\)\)"),
    ("gather(fn)", lambda lt: lt.gather(fetch(), fetch), TypeError, "argument 1"),
    ("gather(timeout=-1)", lambda lt: lt.gather(fetch(), timeout=-1), ValueError, ">= 0"),
    ("stop(timeout=-1)", lambda lt: lt.stop(timeout=-1), ValueError, ">= 0"),
]


@pytest.mark.parametrize(
    ("call", "expected", "message"),
    [pytest.param(c, e, m, id=i) for i, c, e, m in BAD_CALLS],
)
def test_bad_input_table(
    lt: LoopThread, call: Callable[[Any], Any], expected: type[Exception], message: str
) -> None:
    """Each wrong call raises its exact type, says what to do, and leaves no coroutine open.

    Unawaited coroutines would surface as RuntimeWarnings, which this suite turns into errors.
    """
    with pytest.raises(expected) as info:
        call(lt)
    assert type(info.value) is expected
    assert re.search(message, str(info.value)), str(info.value)
    assert lt.running
    assert lt.run(fetch()) == 1


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"name": ""}, TypeError, "non-empty str"),
    ({"name": 3}, TypeError, "non-empty str"),
    ({"loop_factory": 3}, TypeError, "callable that returns a new event loop"),
    ({"uvloop": True, "loop_factory": asyncio.new_event_loop}, ValueError, "not both"),
    ({"executor_workers": 0}, ValueError, ">= 1"),
    ({"executor_workers": 2.5}, TypeError, "int"),
    ({"cancel_grace": -1}, ValueError, ">= 0"),
]


@pytest.mark.parametrize(("kwargs", "expected", "message"), BAD_OPTIONS)
def test_bad_constructor_options(
    kwargs: dict[str, Any], expected: type[Exception], message: str
) -> None:
    """LoopThread(...) rejects wrong options at construction, before any thread starts."""
    with pytest.raises(expected, match=message):
        LoopThread(**kwargs)
