"""``loopthread.structlog.offload`` resolves what belongs to the caller in the caller: its
exception, stack, callsite, clock and contextvars, and a snapshot of what it logged (issue 12,
items 1 and 3).

structlog is configured as its documentation recommends (``merge_contextvars`` and
``add_log_level`` first), with ``offload()`` last: every processor given to it is one the
documentation would put after those, now run on the loop thread.
"""

from __future__ import annotations

import collections
import contextvars
import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.processors import CallsiteParameter

from loopthread import LoopThread
from loopthread.structlog import OffloadProcessor, offload

Configure = Callable[..., OffloadProcessor]


@pytest.fixture
def loop_thread_options() -> dict[str, Any]:
    """No stall watchdog here: rendering a rich traceback can take longer than slow_callback on
    a loaded machine, and the ``loop_thread.stalled`` warning would be one more line in the
    sink these tests count."""
    return {"name": "test-loop", "slow_callback": None}


@pytest.fixture(name="configure")
def fixture_configure(lt: LoopThread) -> Iterator[Configure]:
    """``configure(*processors, sink=...)``: the documented chain ending with
    ``offload(*processors, sink=sink)`` on the test's loop; returns the offload processor."""

    def configure(*processors: Any, sink: Callable[..., Any]) -> OffloadProcessor:
        to_loop = offload(*processors, sink=sink, loop_thread=lt)
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                to_loop,
            ],
            logger_factory=structlog.PrintLoggerFactory(io.StringIO()),
            cache_logger_on_first_use=False,
        )
        return to_loop

    yield configure
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class Held:
    """A processor that holds the loop on the first event until ``release()``: what the
    caller does meanwhile happens before the processors after it run."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._gate = threading.Event()

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            self._gate.wait(10)
        return event_dict

    def release(self) -> None:
        self._gate.set()


def fail() -> None:
    raise ZeroDivisionError("division by zero in fail()")


@pytest.mark.parametrize(
    "renderers",
    [
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()],
        [structlog.dev.ConsoleRenderer(colors=False)],
    ],
    ids=["format_exc_info", "dict_tracebacks", "ConsoleRenderer"],
)
def test_the_traceback_reaches_the_renderer(configure: Configure, renderers: list[Any]) -> None:
    """``log.exception()`` and ``exc_info=True`` in an ``except`` block: the exception is
    rendered on the loop with its traceback (it vanished: the loop thread has no
    ``sys.exc_info()``); an exception object passed outside the block keeps its traceback too."""
    out: list[str] = []
    to_loop = configure(*renderers, sink=out.append)
    log = structlog.get_logger()
    try:
        fail()
    except ZeroDivisionError as exc:
        log.exception("with exception()")
        log.error("with exc_info=True", exc_info=True)
        caught = exc
    log.warning("with the exception object", exc_info=caught)
    assert to_loop.flush(5)
    assert len(out) == 3
    for text in out:
        assert "ZeroDivisionError" in text, text
        assert "division by zero in fail()" in text, text
        assert "fail" in text.replace("division by zero in fail()", ""), text  # a frame of fail()


def handle_request(log: Any) -> int:
    """Logs from a known function and line; returns that line."""
    line = sys._getframe().f_lineno + 1
    log.info("handled", stack_info=True)
    return line


def test_stack_and_callsite_are_the_caller_s(configure: Configure) -> None:
    """``StackInfoRenderer`` and ``CallsiteParameterAdder`` after ``offload``: the function,
    line, module and thread are the caller's and the stack is the caller's (they pointed into
    loopthread's channel consumer on the loop thread)."""
    out: list[str] = []
    to_loop = configure(
        structlog.processors.StackInfoRenderer(),
        structlog.processors.CallsiteParameterAdder(
            [
                CallsiteParameter.FUNC_NAME,
                CallsiteParameter.LINENO,
                CallsiteParameter.MODULE,
                CallsiteParameter.THREAD_NAME,
            ]
        ),
        structlog.processors.JSONRenderer(),
        sink=out.append,
    )
    lines: list[int] = []
    thread = threading.Thread(
        target=lambda: lines.append(handle_request(structlog.get_logger())), name="request-7"
    )
    thread.start()
    thread.join()
    assert to_loop.flush(5)
    [record] = [json.loads(text) for text in out]
    assert record["func_name"] == "handle_request"
    assert record["lineno"] == lines[0]
    assert record["module"] == "test_structlog_offload_caller"
    assert record["thread_name"] == "request-7"
    assert "in handle_request" in record["stack"]
    assert "loopthread" not in record["stack"].replace("test_structlog_offload_caller", "")


def test_the_timestamp_is_the_call_s_not_the_rendering_s(configure: Configure) -> None:
    """``TimeStamper`` after ``offload``: an event queued behind a slow one is stamped when it
    was logged, not when the loop got to it."""
    held = Held()
    out: list[str] = []
    to_loop = configure(
        held,
        structlog.processors.TimeStamper(fmt=None),
        structlog.processors.JSONRenderer(),
        sink=out.append,
    )
    log = structlog.get_logger()
    log.info("slow")
    assert held.entered.wait(5)
    log.info("queued")
    logged_by = time.time()
    held.release()  # the loop processes "queued" only after this
    assert to_loop.flush(5)
    stamps = {r["event"]: r["timestamp"] for r in map(json.loads, out)}
    assert stamps["queued"] <= logged_by


def test_later_changes_by_the_caller_do_not_change_the_log(configure: Configure) -> None:
    """What was logged is what is rendered: the caller changing the list and the nested dict
    it passed (after the call, before the loop rendered it) changes nothing."""
    held = Held()
    out: list[str] = []
    to_loop = configure(held, structlog.processors.JSONRenderer(sort_keys=True), sink=out.append)
    log = structlog.get_logger()
    log.info("first")
    assert held.entered.wait(5)
    items = ["apple"]
    meta: dict[str, Any] = {"tags": ["new"], "count": 1}
    log.info("order", items=items, meta=meta, pair=(items, 1))
    items.append("pear")
    meta["tags"].append("changed")
    meta["count"] = 2
    held.release()
    assert to_loop.flush(5)
    order = json.loads(out[1])
    assert order["items"] == ["apple"]
    assert order["meta"] == {"count": 1, "tags": ["new"]}
    assert order["pair"] == [["apple"], 1]


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("offload_request_id", default="-")


def test_processors_and_sink_after_offload_see_each_caller_s_context(
    configure: Configure,
) -> None:
    """3 threads x 20 records, each thread with its own request id (bound with structlog's
    ``bind_contextvars``, merged in the caller, and set in a plain ContextVar): a processor
    placed after ``offload`` and the sync sink see the id of the record's own caller (they
    saw the first caller's: 40 of 60 records carried another request's id)."""
    seen: list[tuple[str, str, str]] = []

    def add_request(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict["plain_var"] = request_id.get()
        return event_dict

    def sink(text: str) -> None:
        record = json.loads(text)
        seen.append((record["bound"], record["plain_var"], request_id.get()))

    to_loop = configure(add_request, structlog.processors.JSONRenderer(), sink=sink)
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        structlog.contextvars.bind_contextvars(bound=f"req-{n}")
        request_id.set(f"req-{n}")
        barrier.wait(5)
        log = structlog.get_logger()
        for i in range(20):
            log.info("step", i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert to_loop.flush(5)
    assert collections.Counter(bound for bound, _, _ in seen) == {
        "req-0": 20,
        "req-1": 20,
        "req-2": 20,
    }
    wrong = [entry for entry in seen if len(set(entry)) != 1]
    assert wrong == [], f"{len(wrong)} of 60 records saw another request's context"


def test_a_moved_processor_runs_in_the_caller_and_a_failure_costs_its_event_only(
    configure: Configure,
) -> None:
    """A ``TimeStamper`` given to ``offload`` runs in the caller's thread; one that raises is
    counted and logged and drops its event only: the log call does not raise and the next
    event goes through."""
    out: list[str] = []
    threads: set[int] = set()

    class BrokenStamper(structlog.processors.TimeStamper):
        def __call__(self, logger: Any, name: str, event_dict: Any) -> Any:
            threads.add(threading.get_ident())
            if event_dict["event"] == "bad":
                raise ValueError("clock on fire")
            return super().__call__(logger, name, event_dict)

    to_loop = configure(BrokenStamper(), structlog.processors.JSONRenderer(), sink=out.append)
    log = structlog.get_logger()
    log.info("bad")
    log.info("good")
    assert to_loop.flush(5)
    assert threads == {threading.get_ident()}
    assert [json.loads(t)["event"] for t in out] == ["offload.processor_failed", "good"]
    assert to_loop.stats().failed == 1
