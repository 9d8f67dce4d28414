"""Bad input at every public entry point: the exact exception type and a message that says
what to do instead.

``tests/test_validate.py`` covers the LoopThread facade (``run``, ``call``, ``submit``,
``gather``, ``stop`` and the basic constructor options); this table covers everything else:
the remaining LoopThread options and states, channels, the EventBus, enricher chains,
``enricher()``, resources, ``LoopHandler``, the structlog processors, ``@blocking``,
``install_signal_handlers`` and ``metrics.serve``. Each regex matches the part of the message
that tells the user what to do (or what is allowed). Refused coroutines must be closed: an
un-awaited one would surface as a RuntimeWarning, which this suite turns into an error.
"""

# The table passes wrong types on purpose: that is what it tests.
# mypy: disable-error-code="arg-type,list-item,call-overload"

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import queue
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import loopthread
import loopthread.structlog as lt_structlog
from loopthread import (
    ChannelClosedError,
    ChannelFullError,
    EnricherChain,
    EventBus,
    LoopNotRunningError,
    LoopThread,
    LoopThreadError,
    WouldDeadlockError,
    metrics,
)
from loopthread.logging import LoopHandler
from tests.reliability._support import record


async def handle(batch: list[Any]) -> None:
    """A channel handler that does nothing."""


async def lookup(event: Any) -> dict[str, Any]:
    """An enricher that adds nothing."""
    return {}


async def make_pool() -> object:
    """A resource factory."""
    return object()


def on_loop(lt: LoopThread, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` on the loop thread (inside a coroutine) and return or raise what it did."""

    async def call() -> Any:
        return fn()

    return lt.run(call())


def in_handler(lt: LoopThread, use: Callable[[Any], Any]) -> Any:
    """Call ``use(channel)`` inside the channel's own handler; raise what it raised."""
    caught: list[BaseException] = []
    done = threading.Event()

    async def handler(batch: list[Any]) -> None:
        try:
            result = use(ch)
            if asyncio.iscoroutine(result):
                await result
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            caught.append(exc)
        finally:
            done.set()

    ch = lt.channel(handler)
    ch.put(1)
    assert done.wait(10)
    if caught:
        raise caught[0]
    return None


def full_error_channel(lt: LoopThread) -> Any:
    """A channel with policy "error" that is full (its consumer is busy on a held batch)."""
    hold = threading.Event()
    entered = threading.Event()

    async def held(batch: list[Any]) -> None:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, hold.wait, 10)

    ch = lt.channel(held, maxsize=1, overflow="error")
    ch.put(0)
    assert entered.wait(10)
    ch.put(1)
    try:
        return ch.put(2)
    finally:
        hold.set()


def stopped_loop() -> LoopThread:
    """A LoopThread that ran and stopped."""
    lt = LoopThread("stopped", metrics_registry=None).start()
    lt.stop()
    return lt


def drain_after_another_loop(lt: LoopThread) -> Any:
    """A channel on ``lt`` that would drain after a channel of another LoopThread."""
    other = LoopThread("other", metrics_registry=None).start()
    try:
        return loopthread.Channel(lt, handle, drain_after=other.channel(handle))
    finally:
        other.stop()


def used_then_closed_bus(lt: LoopThread) -> Any:
    """report() on a bus that was used and then closed."""
    bus = EventBus(lt)
    bus.reporter().report("x")
    bus.close(5)
    return bus.reporter().report("x")


def install_partly_bad() -> Any:
    """install_signal_handlers with one good and one uncatchable signal: nothing installed."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        return loopthread.install_signal_handlers([signal.SIGTERM, signal.SIGKILL])
    finally:
        assert signal.getsignal(signal.SIGTERM) is before, "a failed install left a handler"


class TimeoutAttr:
    """An enricher object whose ``timeout`` attribute means something else."""

    timeout = "soon"

    async def __call__(self, event: Any) -> None:
        return None


def _closed_channel(lt: LoopThread) -> Any:
    ch = lt.channel(handle)
    ch.close(5)
    return ch


def _closed_bus(lt: LoopThread) -> EventBus:
    bus = EventBus(lt)
    bus.close(5)
    return bus


def _flush_on_loop(lt: LoopThread) -> Any:
    ch = lt.channel(handle)
    return on_loop(lt, ch.flush)


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` in a fresh thread; raise what it raised there."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            caught.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    if caught:
        raise caught[0]


@dataclass(frozen=True)
class Case:
    """One wrong call: what it does, what it must raise, and what the message must say."""

    id: str
    call: Callable[[LoopThread], Any]
    raises: type[BaseException]
    says: str
    known_bug: str = ""  # a case the library does not handle yet: a strict xfail


BAD_INPUT: list[Case] = [
    # -------------------------------------------------------- LoopThread: options and states
    Case(
        "LoopThread(metrics_registry=3)",
        lambda lt: LoopThread(metrics_registry=3),
        TypeError,
        "or None to turn metrics off",
    ),
    Case(
        "LoopThread(lag_interval=-1)",
        lambda lt: LoopThread(lag_interval=-1),
        ValueError,
        "Pass lag_interval=None to turn it off",
    ),
    Case(
        "LoopThread(lag_interval='1')",
        lambda lt: LoopThread(lag_interval="1"),
        TypeError,
        "number of seconds or None",
    ),
    Case(
        "LoopThread(slow_callback=0)",
        lambda lt: LoopThread(slow_callback=0),
        ValueError,
        "slow_callback=None",
    ),
    Case(
        "run before start",
        lambda lt: LoopThread("new").run(asyncio.sleep(0)),
        LoopNotRunningError,
        r"call lt\.start\(\) first",
    ),
    Case(
        "lt.loop before start",
        lambda lt: LoopThread("new").loop,
        LoopNotRunningError,
        r"call lt\.start\(\) first",
    ),
    Case(
        "lt.executor before start",
        lambda lt: LoopThread("new").executor,
        LoopNotRunningError,
        r"call lt\.start\(\) first",
    ),
    Case(
        "start after stop",
        lambda lt: stopped_loop().start(),
        LoopThreadError,
        r"Create a new LoopThread\(\)",
    ),
    Case(
        "run after stop",
        lambda lt: stopped_loop().run(asyncio.sleep(0)),
        LoopNotRunningError,
        "Create a new LoopThread, or use loopthread.default()",
    ),
    Case(
        "stop(timeout='1')",
        lambda lt: lt.stop(timeout="1"),
        TypeError,
        "number of seconds or None",
    ),
    # -------------------------------------------------------- channel_from
    Case(
        "channel_from(3.5)",
        lambda lt: lt.channel_from(3.5, handle),
        TypeError,
        r"reads a multiprocessing\.Queue or SimpleQueue",
    ),
    Case(
        "channel_from(JoinableQueue)",
        lambda lt: lt.channel_from(multiprocessing.get_context("spawn").JoinableQueue(), handle),
        TypeError,
        r"Use a multiprocessing\.Queue \(and flush\(\) the channel instead of join\(\)\)",
    ),
    Case(
        "channel_from(mp.Queue, framing='lines')",
        lambda lt: lt.channel_from(
            multiprocessing.get_context("spawn").Queue(), handle, framing="lines"
        ),
        TypeError,
        r"Leave it out \(decode= replaces pickle\.loads\)",
    ),
    Case(
        "channel_from(queue.Queue, decode=int)",
        lambda lt: lt.channel_from(queue.Queue(), handle, decode=int),
        TypeError,
        "are objects already. Leave them out",
    ),
    Case(
        "channel_from(a Pipe's write end)",
        lambda lt: lt.channel_from(multiprocessing.Pipe(duplex=False)[1], handle),
        ValueError,
        r"pass the reader \(Pipe\(duplex=False\) returns \(reader, writer\)\)",
    ),
    # -------------------------------------------------------- channels
    Case(
        "channel(handle(...))",
        lambda lt: lt.channel(handle([])),
        TypeError,
        r"Pass lt\.channel\(handle\), not lt\.channel\(handle\(\.\.\.\)\)",
    ),
    Case(
        "channel(3)",
        lambda lt: lt.channel(3),
        TypeError,
        r"a callable taking a list of items, such as `async def handle\(batch\)",
    ),
    Case(
        "channel(maxsize=0)",
        lambda lt: lt.channel(handle, maxsize=0),
        ValueError,
        "maxsize must be an int >= 1",
    ),
    Case(
        "channel(maxsize='10')",
        lambda lt: lt.channel(handle, maxsize="10"),
        TypeError,
        "maxsize must be an int >= 1",
    ),
    Case(
        "channel(batch_size=0)",
        lambda lt: lt.channel(handle, batch_size=0),
        ValueError,
        "batch_size must be an int >= 1",
    ),
    Case(
        "channel(overflow='spill')",
        lambda lt: lt.channel(handle, overflow="spill"),
        ValueError,
        "overflow must be one of 'block', 'drop_newest', 'drop_oldest', 'error'",
    ),
    Case(
        "channel(name='')",
        lambda lt: lt.channel(handle, name=""),
        TypeError,
        "non-empty str or None",
    ),
    Case(
        "channel(context='caller')",
        lambda lt: lt.channel(handle, context="caller"),
        ValueError,
        "context must be one of 'empty', 'producer'",
    ),
    Case(
        "channel(run_in='thread')",
        lambda lt: lt.channel(handle, run_in="thread"),
        ValueError,
        "run_in must be one of 'loop', 'executor'",
    ),
    Case(
        "channel(async, run_in='executor')",
        lambda lt: lt.channel(handle, run_in="executor"),
        TypeError,
        r"Run it on the loop \(run_in='loop', the default\), or pass a plain function",
    ),
    Case(
        "Channel(lt, handle, drain_after=3)",
        lambda lt: loopthread.Channel(lt, handle, drain_after=3),
        TypeError,
        "drain_after must be a Channel or None",
    ),
    Case(
        "Channel(lt, handle, drain_after=<another loop's channel>)",
        drain_after_another_loop,
        ValueError,
        "drain_after must be a channel of this LoopThread .* Create the upstream channel on "
        "the same LoopThread",
    ),
    Case(
        "channel on a stopped loop",
        lambda lt: stopped_loop().channel(handle),
        LoopNotRunningError,
        "Create a new LoopThread",
    ),
    Case(
        "channel on a loop not started",
        lambda lt: LoopThread("new").channel(handle),
        LoopNotRunningError,
        r"call lt\.start\(\) first",
    ),
    Case(
        "put(timeout=-1)",
        lambda lt: lt.channel(handle).put(1, timeout=-1),
        ValueError,
        "Pass timeout=None to wait without a limit",
    ),
    Case(
        "put(timeout='1')",
        lambda lt: lt.channel(handle).put(1, timeout="1"),
        TypeError,
        "Pass e.g. timeout=2.5",
    ),
    Case(
        "put after close",
        lambda lt: _closed_channel(lt).put(1),
        ChannelClosedError,
        "Stop the producers before closing, or create a new channel",
    ),
    Case(
        "put on a full 'error' channel",
        full_error_channel,
        ChannelFullError,
        'raise maxsize, or choose overflow="block"',
    ),
    Case(
        "flush(timeout=-1)",
        lambda lt: lt.channel(handle).flush(-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "flush on the loop thread",
        _flush_on_loop,
        WouldDeadlockError,
        r"use `await ch\.aflush\(\)`",
    ),
    Case(
        "aflush inside its own handler",
        lambda lt: in_handler(lt, lambda ch: ch.aflush()),
        WouldDeadlockError,
        "Flush from outside the handler",
    ),
    Case(
        "close(timeout='x')",
        lambda lt: lt.channel(handle).close("x"),
        TypeError,
        "number of seconds or None",
    ),
    # -------------------------------------------------------- EventBus
    Case(
        "EventBus(loop_thread=3)",
        lambda lt: EventBus(3),
        TypeError,
        r"LoopThread or None \(the default loop\)",
    ),
    Case("EventBus(maxsize=0)", lambda lt: EventBus(lt, maxsize=0), ValueError, ">= 1"),
    Case(
        "EventBus(overflow='x')",
        lambda lt: EventBus(lt, overflow="x"),
        ValueError,
        "overflow must be one of",
    ),
    Case(
        "bus.on(3, ...)",
        lambda lt: EventBus(lt).on(3, print),
        TypeError,
        "event_type must be a str",
    ),
    Case(
        "bus.on(type, handle(...))",
        lambda lt: EventBus(lt).on("x", lookup({})),
        TypeError,
        r"not bus\.on\('x', handle\(\.\.\.\)\)",
    ),
    Case(
        "bus.on(type, async, run_in='executor')",
        lambda lt: EventBus(lt).on("x", lookup, run_in="executor"),
        TypeError,
        r"Register it to run on the loop \(bus\.on\('x', handler\)\), or pass a plain function",
    ),
    Case(
        "bus.on(type, run_in='thread')",
        lambda lt: EventBus(lt).on("x", print, run_in="thread"),
        ValueError,
        "run_in must be one of 'loop', 'executor'",
    ),
    Case(
        "bus.on_any(handle(...))",
        lambda lt: EventBus(lt).on_any(lookup({})),
        TypeError,
        r"not bus\.on_any\(handle\(\.\.\.\)\)",
    ),
    Case(
        "bus.publish([...])",
        lambda lt: EventBus(lt).publish([("type", "x")]),
        TypeError,
        r"a mapping with a 'type' key.*use reporter\.report\('progress', data\)",
    ),
    Case(
        "bus.publish({no type})",
        lambda lt: EventBus(lt).publish({"done": 3}),
        ValueError,
        r"add one, such as \{'type': 'progress', \.\.\.\}",
    ),
    Case(
        "reporter.publish({'type': 3})",
        lambda lt: EventBus(lt).reporter().publish({"type": 3}),
        TypeError,
        r"event\['type'\] must be a str such as 'progress'",
    ),
    Case(
        "bus.on(type, 3)",
        lambda lt: EventBus(lt).on("x", 3),
        TypeError,
        "handler must be callable, taking the event dict",
    ),
    Case(
        "report(3)",
        lambda lt: EventBus(lt).reporter().report(3),
        TypeError,
        "event_type must be a str such as 'progress'",
    ),
    Case(
        "report(type, [1])",
        lambda lt: EventBus(lt).reporter().report("x", [1]),
        TypeError,
        r"data must be a mapping such as \{'done': 3\}",
    ),
    Case(
        "report(type, {'type': ...})",
        lambda lt: EventBus(lt).reporter().report("x", {"type": 1}),
        ValueError,
        r"the event type is the first argument, report\('x', data\)",
    ),
    Case(
        "report after close (never used)",
        lambda lt: _closed_bus(lt).reporter().report("x"),
        ChannelClosedError,
        "Stop the workers before closing the bus, or create a new EventBus",
    ),
    Case(
        "report after close (used)",
        used_then_closed_bus,
        ChannelClosedError,
        r"reporter\.report\(\) after bus\.close\(\) is refused\. Stop the workers",
    ),
    Case(
        "bus.flush(timeout=-1)", lambda lt: EventBus(lt).flush(-1), ValueError, "Pass timeout=None"
    ),
    # -------------------------------------------------------- EnricherChain
    Case(
        "EnricherChain('abc')",
        lambda lt: EnricherChain("abc"),
        TypeError,
        r"Pass EnricherChain\(\[lookup_user\]\)",
    ),
    Case(
        "EnricherChain([3])",
        lambda lt: EnricherChain([3]),
        TypeError,
        r"enrichers\[0\] is not callable.*An enricher is an async callable",
    ),
    Case(
        "EnricherChain([lookup(...)])",
        lambda lt: EnricherChain([lookup({})]),
        TypeError,
        "pass the async function itself, not a call of it",
    ),
    Case(
        "EnricherChain(mode='x')",
        lambda lt: EnricherChain([], mode="x"),
        ValueError,
        "mode must be one of 'parallel', 'sequential'",
    ),
    Case(
        "EnricherChain(timeout=-1)",
        lambda lt: EnricherChain([], timeout=-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "EnricherChain(on_unavailable='x')",
        lambda lt: EnricherChain([], on_unavailable="x"),
        ValueError,
        "one of 'passthrough', 'raise'",
    ),
    Case(
        "EnricherChain(failure_threshold=0)",
        lambda lt: EnricherChain([], failure_threshold=0),
        ValueError,
        ">= 1",
    ),
    Case(
        "EnricherChain(cooldown=inf)",
        lambda lt: EnricherChain([], cooldown=float("inf")),
        ValueError,
        "pass failure_threshold=None instead",
    ),
    Case(
        "EnricherChain(clock=3)",
        lambda lt: EnricherChain([], clock=3),
        TypeError,
        "a callable returning seconds",
    ),
    Case(
        "EnricherChain(name='')",
        lambda lt: EnricherChain([], name=""),
        TypeError,
        "non-empty str or None",
    ),
    Case(
        "EnricherChain(loop_thread=3)",
        lambda lt: EnricherChain([], loop_thread=3),
        TypeError,
        "LoopThread or None",
    ),
    Case(
        "EnricherChain(hook_timeout=-1)",
        lambda lt: EnricherChain([], hook_timeout=-1),
        ValueError,
        "Pass hook_timeout=None",
    ),
    Case(
        "enricher object with a junk timeout",
        lambda lt: EnricherChain([TimeoutAttr()]),
        TypeError,
        "rename the attribute if it means something else",
    ),
    Case(
        "enrich_sync(3)",
        lambda lt: EnricherChain([], loop_thread=lt).enrich_sync(3),
        TypeError,
        r"Pass the event's fields as a dict: chain\.enrich_sync",
    ),
    Case(
        "enrich_sync(timeout=-1)",
        lambda lt: EnricherChain([], loop_thread=lt).enrich_sync({}, timeout=-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "enrich(3)",
        lambda lt: lt.run(EnricherChain([], loop_thread=lt).enrich(3)),
        TypeError,
        r"chain\.enrich\(\{'user_id': 42\}\)",
    ),
    Case(
        "enrich on another loop",
        lambda lt: asyncio.run(EnricherChain([], loop_thread=lt).enrich({})),
        LoopThreadError,
        r"From sync code call chain\.enrich_sync\(event\)",
    ),
    Case(
        "enrich_sync on the loop thread (raise)",
        lambda lt: on_loop(
            lt, lambda: EnricherChain([], loop_thread=lt, on_unavailable="raise").enrich_sync({})
        ),
        WouldDeadlockError,
        r"use `await chain\.enrich\(event\)`",
    ),
    # -------------------------------------------------------- enricher()
    Case(
        "enricher(3)",
        lambda lt: loopthread.enricher(3),
        TypeError,
        r"not loopthread\.enricher\(lookup_user\(event\)\)",
    ),
    Case(
        "enricher(lookup(...))",
        lambda lt: loopthread.enricher(lookup({})),
        TypeError,
        r"Pass loopthread\.enricher\(lookup_user\)",
    ),
    Case(
        "enricher(name='')",
        lambda lt: loopthread.enricher(lookup, name=""),
        TypeError,
        "non-empty str or None",
    ),
    Case(
        "enricher(timeout=-1)",
        lambda lt: loopthread.enricher(lookup, timeout=-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "enricher(timeout='x')",
        lambda lt: loopthread.enricher(lookup, timeout="x"),
        TypeError,
        "Pass e.g. timeout=2.5",
    ),
    # -------------------------------------------------------- resources
    Case(
        "resource(3)",
        lambda lt: lt.resource(3),
        TypeError,
        "takes an async function that creates the value",
    ),
    Case(
        "resource(make_pool())",
        lambda lt: lt.resource(make_pool()),
        TypeError,
        r"pass the async function itself, lt\.resource\(make_pool\)",
    ),
    Case(
        "resource(close=3)",
        lambda lt: lt.resource(make_pool, close=3),
        TypeError,
        r"or None to use the value's aclose\(\)/close\(\)",
    ),
    Case(
        "resource(name='')",
        lambda lt: lt.resource(make_pool, name=""),
        TypeError,
        "non-empty str or None",
    ),
    Case(
        "resource factory not async",
        lambda lt: lt.run(lt.resource(object).get()),
        TypeError,
        "pass an async function",
    ),
    Case(
        "res.get() on another loop",
        lambda lt: asyncio.run(lt.resource(make_pool).get()),
        LoopThreadError,
        r"Await it in a coroutine that runs on that LoopThread",
    ),
    # -------------------------------------------------------- LoopHandler
    Case(
        "LoopHandler(3)",
        lambda lt: LoopHandler(3),
        TypeError,
        "wraps logging.Handler objects or async sinks",
    ),
    Case(
        "LoopHandler(handler_names='file')",
        lambda lt: LoopHandler(handler_names="file"),
        TypeError,
        r"takes a list of names, e\.g\. \['file'\]",
    ),
    Case("LoopHandler(maxsize=0)", lambda lt: LoopHandler(maxsize=0), ValueError, ">= 1"),
    Case(
        "LoopHandler(overflow='spill')",
        lambda lt: LoopHandler(overflow="spill"),
        ValueError,
        "overflow must be one of",
    ),
    Case("LoopHandler(batch_size=0)", lambda lt: LoopHandler(batch_size=0), ValueError, ">= 1"),
    Case(
        "LoopHandler(loop_thread=3)",
        lambda lt: LoopHandler(loop_thread=3),
        TypeError,
        "LoopThread or None",
    ),
    Case(
        "LoopHandler(enrichers=3)",
        lambda lt: LoopHandler(enrichers=3),
        TypeError,
        "EnricherChain",
    ),
    Case(
        "LoopHandler(enrich_timeout=-1)",
        lambda lt: LoopHandler(enrich_timeout=-1),
        ValueError,
        ">= 0",
    ),
    # -------------------------------------------------------- structlog processors
    Case(
        "structlog.enrich(3)",
        lambda lt: lt_structlog.enrich(3),
        TypeError,
        r"takes an EnricherChain: enrich\(loopthread\.EnricherChain\(\[\.\.\.\]\)\)",
    ),
    Case(
        "structlog.enrich(timeout=-1)",
        lambda lt: lt_structlog.enrich(EnricherChain([]), timeout=-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "structlog.enrich(timeout='1')",
        lambda lt: lt_structlog.enrich(EnricherChain([]), timeout="1"),
        TypeError,
        "Pass e.g. timeout=2.5",
    ),
    Case(
        "offload(sink=3)",
        lambda lt: lt_structlog.offload(sink=3),
        TypeError,
        r"needs a callable: an `async def sink\(batch\)`",
    ),
    Case(
        "offload(3, sink=print)",
        lambda lt: lt_structlog.offload(3, sink=print),
        TypeError,
        r"Pass the sink as sink=\.\.\.",
    ),
    Case(
        "offload(loop_thread=3)",
        lambda lt: lt_structlog.offload(sink=print, loop_thread=3),
        TypeError,
        "LoopThread or None",
    ),
    Case(
        "offload(maxsize=0)",
        lambda lt: lt_structlog.offload(sink=print, maxsize=0),
        ValueError,
        ">= 1",
    ),
    Case(
        "offload(overflow='x')",
        lambda lt: lt_structlog.offload(sink=print, overflow="x"),
        ValueError,
        "overflow must be one of",
    ),
    # -------------------------------------------------------- blocking and run
    Case(
        "@blocking on a plain function",
        lambda lt: loopthread.blocking(print),
        TypeError,
        "if it is synchronous, call it directly: it needs no wrapper",
    ),
    Case(
        "@blocking(timeout=-1)",
        lambda lt: loopthread.blocking(timeout=-1),
        ValueError,
        "Pass timeout=None",
    ),
    Case(
        "@blocking(loop_thread=3)",
        lambda lt: loopthread.blocking(loop_thread=3),
        TypeError,
        "LoopThread or None",
    ),
    Case(
        "@blocking function called on the loop thread",
        lambda lt: on_loop(lt, lambda: loopthread.blocking(loop_thread=lt)(lookup)({})),
        WouldDeadlockError,
        r"await lookup\.__wrapped__\(\.\.\.\)",
    ),
    Case(
        "loopthread.run(3)",
        lambda lt: loopthread.run(3),
        TypeError,
        r"takes an awaitable such as fetch\(\)",
    ),
    # -------------------------------------------------------- signals
    Case(
        "install_signal_handlers(SIGTERM)",
        lambda lt: loopthread.install_signal_handlers(signal.SIGTERM),
        TypeError,
        r"e\.g\. install_signal_handlers\(\[signal\.SIGTERM, signal\.SIGHUP\]\)",
    ),
    Case(
        "install_signal_handlers(['SIGTERM'])",
        lambda lt: loopthread.install_signal_handlers(["SIGTERM"]),
        TypeError,
        r"a signal\.Signals such as signal\.SIGTERM",
    ),
    Case(
        "install_signal_handlers([9999])",
        lambda lt: loopthread.install_signal_handlers([9999]),
        ValueError,
        r"not a signal on this platform; pass e\.g\. signal\.SIGTERM",
    ),
    Case(
        "install_signal_handlers([SIGTERM, SIGKILL])",
        lambda lt: install_partly_bad(),
        ValueError,
        "SIGKILL cannot be caught by any program",
    ),
    Case(
        "install_signal_handlers from a worker thread",
        lambda lt: _in_thread(loopthread.install_signal_handlers),
        ValueError,
        "must be called from the main thread",
    ),
    # -------------------------------------------------------- metrics.serve
    Case(
        "serve('80')",
        lambda lt: metrics.serve("80"),
        TypeError,
        r"port must be an int \(0 picks a free port\)",
    ),
    Case("serve(True)", lambda lt: metrics.serve(True), TypeError, "port must be an int"),
    Case("serve(-1)", lambda lt: metrics.serve(-1), ValueError, r"port must be in 0\.\.65535"),
    Case("serve(70000)", lambda lt: metrics.serve(70_000), ValueError, r"0\.\.65535"),
    Case(
        "serve(registry=3)",
        lambda lt: metrics.serve(0, registry=3),
        TypeError,
        "must be a prometheus_client.CollectorRegistry, or None",
    ),
    Case(
        "serve(addr=3)",
        lambda lt: metrics.serve(0, addr=3),
        TypeError,
        "addr must be",
    ),
]


@pytest.fixture(name="no_stray_handlers")
def fixture_no_stray_handlers() -> Iterator[None]:
    """Put SIGTERM's handler back, whatever a case did to it."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.usefixtures("no_stray_handlers")
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_INPUT])
def test_bad_input(lt: LoopThread, case: Case, request: pytest.FixtureRequest) -> None:
    """Each wrong call raises its exact exception type, with a message saying what to do; the
    loop keeps running and no refused coroutine is left un-awaited."""
    if case.known_bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"known gap: {case.known_bug}"))
    logging.getLogger("loopthread.reliability").debug("case %s", case.id)
    with pytest.raises(BaseException) as info:  # noqa: PT011 - the exact type is asserted below
        case.call(lt)
    assert type(info.value) is case.raises, f"{type(info.value).__name__}: {info.value}"
    assert re.search(case.says, str(info.value)), str(info.value)
    gc.collect()  # an un-awaited refused coroutine would warn now (an error in this suite)
    assert lt.running
    record("bad input", entry_points_fed=1)
