"""Prometheus metrics: the HTTP endpoint, every family, shared registries, metrics off."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import prometheus_client
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loopthread import EnricherChain, LoopThread, metrics, testing
from loopthread._core._component import ComponentBase

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(name="registry")
def fixture_registry() -> CollectorRegistry:
    """A fresh registry, so tests do not see each other's loops."""
    return CollectorRegistry()


@pytest.fixture(name="server")
def fixture_server(registry: CollectorRegistry) -> Iterator[metrics.MetricsServer]:
    """The real HTTP endpoint on loopback, on a free port."""
    with metrics.serve(0, registry=registry) as server:
        yield server


@pytest.fixture(name="mlt")
def fixture_mlt(registry: CollectorRegistry) -> Iterator[LoopThread]:
    """A started LoopThread named "m" whose metrics go to ``registry``."""
    lt = LoopThread("m", metrics_registry=registry, lag_interval=None).start()
    try:
        yield lt
    finally:
        lt.stop()


def scrape(server: metrics.MetricsServer) -> Samples:
    with urllib.request.urlopen(server.url, timeout=5) as response:
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def local(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # deliberately blocking, called from a coroutine


async def ok() -> int:
    return 1


async def fail() -> None:
    raise ValueError("boom")


def test_counters_move_as_calls_succeed_fail_time_out_and_are_cancelled(
    mlt: LoopThread, server: metrics.MetricsServer
) -> None:
    """Each outcome has its series, scraped over HTTP and parsed by prometheus_client."""
    before = scrape(server)
    assert value(before, "loopthread_calls_total", loop="m", outcome="ok") == 0
    for _ in range(3):
        mlt.run(ok())
    with pytest.raises(ValueError, match="boom"):
        mlt.run(fail())
    with pytest.raises(TimeoutError):
        mlt.run(asyncio.sleep(10), timeout=0.01)
    cleaned_up = threading.Event()

    async def sleeper() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned_up.set()

    future = mlt.submit(sleeper())
    mlt.run(ok())  # the sleeper started
    future.cancel()
    assert cleaned_up.wait(5)
    mlt.run(ok())  # after the cancelled task's step: it was counted
    after = scrape(server)
    assert value(after, "loopthread_calls_total", loop="m", outcome="ok") == 5
    assert value(after, "loopthread_calls_total", loop="m", outcome="error") == 1
    assert value(after, "loopthread_calls_total", loop="m", outcome="timeout") == 1
    assert value(after, "loopthread_calls_total", loop="m", outcome="cancelled") == 1
    assert value(after, "loopthread_call_duration_seconds_count", loop="m") == 8
    assert value(after, "loopthread_call_duration_seconds_bucket", loop="m", le="+Inf") == 8
    assert value(after, "loopthread_loops_created_total", loop="m") == 1
    assert value(after, "loopthread_calls_in_flight", loop="m") == 0


def test_in_flight_and_executor_gauges(mlt: LoopThread, registry: CollectorRegistry) -> None:
    """A call parked in the executor shows as in flight, one busy worker, and a queued job."""
    release = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        release.wait(10)

    async def in_executor() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.run_in_executor(None, job), loop.run_in_executor(None, job))

    lt = LoopThread("e", metrics_registry=registry, executor_workers=1, lag_interval=None)
    lt.start()
    try:
        future = lt.submit(in_executor())
        assert started.wait(5)
        lt.run(ok())  # the second job was queued in the same step as the first
        samples = local(registry)
        assert value(samples, "loopthread_calls_in_flight", loop="e") == 1
        assert value(samples, "loopthread_executor_busy_workers", loop="e") == 1
        assert value(samples, "loopthread_executor_queue_depth", loop="e") == 1
        assert value(samples, "loopthread_executor_max_workers", loop="e") == 1
        release.set()
        future.result(5)
    finally:
        release.set()
        lt.stop()


def test_lag_and_stall_families(registry: CollectorRegistry) -> None:
    """The lag histogram and the stall counter come from the loop's monitor."""

    async def blocker() -> None:
        # Much longer than lag_interval: the probe sent while it blocks waits most of it,
        # however late a loaded machine schedules the monitor thread (0.15 s once measured
        # 0.048 s of lag here).
        block_the_loop(0.5)

    lt = LoopThread("lag", metrics_registry=registry, lag_interval=0.05, slow_callback=0.1)
    lt.start()
    try:
        with structlog.testing.capture_logs():
            lt.run(blocker())
            lt.run(ok())
            lt.run(ok())
            monitor = testing.monitor(lt)
            assert monitor is not None
            stalls = monitor.stats().stalls
        samples = local(registry)
    finally:
        lt.stop()
    count = value(samples, "loopthread_loop_lag_seconds_count", loop="lag")
    assert count is not None
    assert count >= 1
    lag_sum = value(samples, "loopthread_loop_lag_seconds_sum", loop="lag")
    assert lag_sum is not None
    assert lag_sum >= 0.2
    assert value(samples, "loopthread_loop_stalls_total", loop="lag") == stalls


def test_two_loop_threads_share_a_registry(registry: CollectorRegistry) -> None:
    """Different names on one registry: one collector, a series per loop."""
    a = LoopThread("a", metrics_registry=registry, lag_interval=None).start()
    b = LoopThread("b", metrics_registry=registry, lag_interval=None).start()
    try:
        a.run(ok())
        b.run(ok())
        b.run(ok())
        samples = local(registry)
    finally:
        a.stop()
        b.stop()
    assert value(samples, "loopthread_calls_total", loop="a", outcome="ok") == 1
    assert value(samples, "loopthread_calls_total", loop="b", outcome="ok") == 2


def test_the_same_name_twice_gets_a_distinct_label(registry: CollectorRegistry) -> None:
    """A second running LoopThread with a taken name is exported as name#2, with a warning."""
    first = LoopThread("dup", metrics_registry=registry, lag_interval=None).start()
    try:
        with structlog.testing.capture_logs() as logs:
            second = LoopThread("dup", metrics_registry=registry, lag_interval=None).start()
        try:
            second.run(ok())
            samples = local(registry)
        finally:
            second.stop()
    finally:
        first.stop()
    assert value(samples, "loopthread_calls_total", loop="dup", outcome="ok") == 0
    assert value(samples, "loopthread_calls_total", loop="dup#2", outcome="ok") == 1
    [clash] = [e for e in logs if e["event"] == "loop_thread.metrics_name_clash"]
    assert clash["metrics_label"] == "dup#2"


def test_counters_continue_across_loop_threads_of_one_name(registry: CollectorRegistry) -> None:
    """A stopped LoopThread's counts are kept; the next one with its name adds to them."""
    for _ in range(2):
        lt = LoopThread("w", metrics_registry=registry, lag_interval=None).start()
        lt.run(ok())
        lt.stop()
        stopped = local(registry)
        # A stopped loop's gauges go away with it; its counters stay.
        assert value(stopped, "loopthread_calls_in_flight", loop="w") is None
    assert value(stopped, "loopthread_calls_total", loop="w", outcome="ok") == 2
    assert value(stopped, "loopthread_loops_created_total", loop="w") == 2
    assert value(stopped, "loopthread_call_duration_seconds_count", loop="w") == 2


def test_metrics_off_registers_nothing() -> None:
    """metrics_registry=None: no collector, no histogram, nothing in the global registry."""
    lt = LoopThread("metrics-off-probe", metrics_registry=None).start()
    try:
        lt.run(ok())
        assert not any(isinstance(c, metrics.MetricsComponent) for c in testing.components(lt))
        assert lt.stats().call_durations is None
        exported = generate_latest(prometheus_client.REGISTRY).decode()
    finally:
        lt.stop()
    assert "metrics-off-probe" not in exported


def test_default_is_the_global_registry() -> None:
    """Without metrics_registry=..., a LoopThread is served by prometheus_client.REGISTRY."""
    lt = LoopThread("global-registry-probe", lag_interval=None).start()
    try:
        lt.run(ok())
        samples = parse(generate_latest(prometheus_client.REGISTRY).decode())
    finally:
        lt.stop()
    assert value(samples, "loopthread_calls_total", loop="global-registry-probe", outcome="ok")


def test_a_wrong_registry_is_refused() -> None:
    """Anything but a CollectorRegistry (or None) fails at construction, saying what to pass."""
    with pytest.raises(TypeError, match="CollectorRegistry, or None"):
        LoopThread(metrics_registry="default")  # type: ignore[arg-type]


def test_a_registry_with_clashing_names_is_refused(registry: CollectorRegistry) -> None:
    """User metrics already named loopthread_* make the registry unusable: a clear error."""
    prometheus_client.Counter("loopthread_calls", "not ours", registry=registry)
    with pytest.raises(ValueError, match="loopthread_\\* names"):
        LoopThread(metrics_registry=registry)


# ---------------------------------------------------------------------- channels and chains
# Real channels and enricher chains on the loop: the collector reads their stats() at scrape time.


class Gate:
    """A channel handler that can hold the consumer inside a call, and fails on "bad" items."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.items: list[Any] = []

    def release(self) -> None:
        if not self.gate.done():
            self.gate.set_result(None)

    async def __call__(self, batch: list[Any]) -> None:
        self.entered.set()
        await asyncio.wrap_future(self.gate)
        self.items.extend(batch)
        if "bad" in batch:
            raise ValueError("bad item")


def test_channel_families(mlt: LoopThread, server: metrics.MetricsServer) -> None:
    """Depth, high water and the item counters, per channel, read at scrape time from a real
    channel: puts, drops by the overflow policy, and a handler that fails on one item."""
    handler = Gate()
    channel = mlt.channel(handler, maxsize=2, overflow="drop_newest", batch_size=1, name="events")
    try:
        assert channel.put("first")
        assert handler.entered.wait(5)  # the consumer holds "first" in the handler
        assert channel.put("bad")
        assert channel.put("third")  # the channel is full now
        assert channel.put("dropped") is False
        assert channel.put("dropped too") is False
        key = {"loop": "m", "channel": "events"}
        held = scrape(server)
        assert value(held, "loopthread_channel_put_total", **key) == 5
        assert value(held, "loopthread_channel_handled_total", **key) == 0
        assert value(held, "loopthread_channel_dropped_total", **key) == 2
        assert value(held, "loopthread_channel_failed_total", **key) == 0
        assert value(held, "loopthread_channel_depth", **key) == 2
        assert value(held, "loopthread_channel_high_water", **key) == 2
        handler.release()
        with structlog.testing.capture_logs():  # channel.handler_failed
            assert channel.flush(timeout=5)
        assert handler.items == ["first", "bad", "third"]
        done = scrape(server)
        assert value(done, "loopthread_channel_put_total", **key) == 5
        assert value(done, "loopthread_channel_handled_total", **key) == 2
        assert value(done, "loopthread_channel_dropped_total", **key) == 2
        assert value(done, "loopthread_channel_failed_total", **key) == 1
        assert value(done, "loopthread_channel_depth", **key) == 0
        assert value(done, "loopthread_channel_high_water", **key) == 2
    finally:
        handler.release()


class Geo:
    """An enricher that fails, times out or answers, as each event asks."""

    name = "geo"

    async def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if event["geo"] == "error":
            raise ConnectionError("geo service down")
        if event["geo"] == "timeout":
            await asyncio.Event().wait()  # cut off by the chain's timeout
        return {"country": "NL"}


async def user(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"user": "alice"}


def enricher_stats(chain: EnricherChain, name: str) -> Any:
    [found] = [e for e in chain.stats().enrichers if e.name == name]
    return found


def test_enricher_families(mlt: LoopThread, server: metrics.MetricsServer) -> None:
    """Durations as a summary, failures by reason, skips, circuit state, degraded events, read
    at scrape time from a real chain whose enricher fails, times out and has its circuit
    opened (and half-opened once the cool-down passed)."""
    now = [0.0]
    chain = EnricherChain(
        [Geo(), user],
        timeout=0.05,
        loop_thread=mlt,
        failure_threshold=3,
        cooldown=30.0,
        clock=lambda: now[0],
        name="audit",
    )

    async def enrich_on_the_loop_thread() -> dict[str, Any]:
        # enrich_sync on the loop thread would wait for itself: passed through, degraded.
        return chain.enrich_sync({"geo": "ok"})

    with structlog.testing.capture_logs() as logs:
        # Three consecutive faults (error, timeout, error) open geo's circuit ...
        for mode in ("error", "timeout", "error"):
            assert chain.enrich_sync({"geo": mode}) == {"geo": mode, "user": "alice"}
        # ... so it is skipped for the next two events.
        for _ in range(2):
            assert chain.enrich_sync({"geo": "ok"}) == {"geo": "ok", "user": "alice"}
        assert mlt.run(enrich_on_the_loop_thread()) == {"geo": "ok"}
    assert any(e["event"] == "enricher.circuit_opened" for e in logs)
    samples = scrape(server)
    geo_stats = enricher_stats(chain, "geo")
    user_stats = enricher_stats(chain, "user")

    geo = {"loop": "m", "chain": "audit", "enricher": "geo"}
    assert value(samples, "loopthread_enricher_duration_seconds_count", **geo) == 3
    geo_seconds = value(samples, "loopthread_enricher_duration_seconds_sum", **geo)
    assert geo_seconds == pytest.approx(geo_stats.time, rel=1e-9)
    assert geo_seconds is not None
    assert geo_seconds >= 0.05  # the timed-out call alone took its timeout
    assert value(samples, "loopthread_enricher_failures_total", **geo, reason="error") == 2
    assert value(samples, "loopthread_enricher_failures_total", **geo, reason="timeout") == 1
    assert value(samples, "loopthread_enricher_skipped_total", **geo) == 2
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="open") == 1
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="closed") == 0
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="half_open") == 0

    usr = {"loop": "m", "chain": "audit", "enricher": "user"}
    assert value(samples, "loopthread_enricher_duration_seconds_count", **usr) == 5
    user_seconds = value(samples, "loopthread_enricher_duration_seconds_sum", **usr)
    assert user_seconds == pytest.approx(user_stats.time, rel=1e-9)
    assert value(samples, "loopthread_enricher_failures_total", **usr, reason="error") == 0
    assert value(samples, "loopthread_enricher_failures_total", **usr, reason="timeout") == 0
    assert value(samples, "loopthread_enricher_skipped_total", **usr) == 0
    assert value(samples, "loopthread_enricher_circuit_state", **usr, state="closed") == 1
    assert value(samples, "loopthread_enricher_circuit_state", **usr, state="open") == 0
    assert value(samples, "loopthread_enricher_circuit_state", **usr, state="half_open") == 0
    assert value(samples, "loopthread_chain_degraded_events_total", loop="m", chain="audit") == 1

    now[0] = 30.0  # the cool-down passed: the next call would be a trial
    later = scrape(server)
    assert value(later, "loopthread_enricher_circuit_state", **geo, state="half_open") == 1
    assert value(later, "loopthread_enricher_circuit_state", **geo, state="open") == 0


def test_channel_counters_survive_their_loop(registry: CollectorRegistry) -> None:
    """A stopped loop's channel counters are folded in, like its own: for a channel closed
    while the loop ran and for one drained by stop(); their gauges go away."""
    lt = LoopThread("c", metrics_registry=registry, lag_interval=None).start()
    handled: list[int] = []
    closed_early = lt.channel(handled.extend, name="q")
    drained_by_stop = lt.channel(handled.extend, name="r")
    for i in range(4):
        assert closed_early.put(i)
    closed_early.close(timeout=5)
    for i in range(3):
        assert drained_by_stop.put(i)
    running = local(registry)
    assert value(running, "loopthread_channel_handled_total", loop="c", channel="q") == 4
    assert value(running, "loopthread_channel_depth", loop="c", channel="q") is None
    report = lt.stop()
    assert report.items_unhandled == 0
    samples = local(registry)
    for name, count in (("q", 4), ("r", 3)):
        assert value(samples, "loopthread_channel_put_total", loop="c", channel=name) == count
        assert value(samples, "loopthread_channel_handled_total", loop="c", channel=name) == count
        assert value(samples, "loopthread_channel_failed_total", loop="c", channel=name) == 0
        assert value(samples, "loopthread_channel_depth", loop="c", channel=name) is None
        assert value(samples, "loopthread_channel_high_water", loop="c", channel=name) is None
    assert len(handled) == 7


class BrokenStats(ComponentBase):
    """A component whose stats() raises."""

    name = "broken"

    def stats(self) -> object:
        raise RuntimeError("stats exploded")


def test_a_broken_stats_does_not_break_the_scrape(
    mlt: LoopThread, server: metrics.MetricsServer
) -> None:
    """A stats() that raises (a component attached with lt.components.attach) is logged; the
    scrape still answers with the loop's own families."""
    broken = mlt.components.attach(BrokenStats())
    try:
        mlt.run(ok())
        with structlog.testing.capture_logs() as logs:
            samples = scrape(server)
    finally:
        mlt.components.detach(broken)
    assert value(samples, "loopthread_calls_total", loop="m", outcome="ok") == 1
    assert value(samples, "loopthread_loops_created_total", loop="m") == 1
    [failure] = [e for e in logs if e["event"] == "loop_thread.metrics_failed"]
    assert failure["loop_thread"] == "m"
    assert "stats exploded" in failure["error"]


@dataclass(frozen=True)
class Bare:
    name: str


class OtherStats(ComponentBase):
    """A component whose stats() is neither ChannelStats nor ChainStats."""

    def __init__(self, name: str, stats: object) -> None:
        self.name = name
        self.snapshot = stats

    def stats(self) -> object:
        return self.snapshot


def test_objects_without_stats_fields_are_skipped(
    mlt: LoopThread, registry: CollectorRegistry
) -> None:
    """Components whose stats() is of another shape (a dataclass with a name only, a number,
    None) yield no family, and no error."""
    others = [
        mlt.components.attach(OtherStats("bare", Bare("bare"))),
        mlt.components.attach(OtherStats("bare-chain", Bare("bare-chain"))),
        mlt.components.attach(OtherStats("count", 3)),
        mlt.components.attach(OtherStats("nothing", None)),
    ]
    try:
        with structlog.testing.capture_logs() as logs:
            samples = local(registry)
    finally:
        for other in others:
            mlt.components.detach(other)
    assert not any(dict(labels).keys() & {"channel", "chain"} for _, labels in samples)
    assert value(samples, "loopthread_calls_total", loop="m", outcome="ok") == 0
    assert not [e for e in logs if e["event"] == "loop_thread.metrics_failed"]


# ---------------------------------------------------------------------- serve()


def test_serve_reports_its_port_and_stops(registry: CollectorRegistry) -> None:
    """port=0 picks a free port; close() stops serving and is idempotent."""
    server = metrics.serve(0, registry=registry)
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    scrape(server)
    server.close()
    server.close()
    with pytest.raises(OSError, match=r"\d"):
        urllib.request.urlopen(server.url, timeout=2)


@pytest.mark.parametrize(
    ("port", "error"), [(-1, ValueError), (70000, ValueError), ("80", TypeError), (True, TypeError)]
)
def test_serve_refuses_bad_ports(port: Any, error: type[Exception]) -> None:
    """A port must be an int in 0..65535."""
    with pytest.raises(error, match="port"):
        metrics.serve(port)


def test_serve_refuses_a_port_in_use(server: metrics.MetricsServer) -> None:
    """A taken port raises OSError naming the address, suggesting port=0 and saying what a
    pre-fork server's workers need (one port each)."""
    with pytest.raises(OSError, match="port=0") as caught:
        metrics.serve(server.port)
    assert "each needs a port of its own" in str(caught.value)


def test_enricher_queue_wait_and_merge_failures(
    mlt: LoopThread, server: metrics.MetricsServer
) -> None:
    """Calls that waited for a place (max_concurrency) and the seconds they waited, apart from
    the enricher's own time; results a failing merge function lost, per chain."""
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def lookup(event: Mapping[str, Any]) -> dict[str, Any]:
        first_in.set()
        await release.wait()
        return {"found": event["id"]}

    lookup.__qualname__ = "lookup"  # the enricher's name (a local function's is longer)

    def bad_merge(into: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        raise ValueError("this merge always fails")

    limited = EnricherChain([lookup], loop_thread=mlt, max_concurrency=1, name="limited")
    merging = EnricherChain([user], loop_thread=mlt, merge=bad_merge, name="merging")

    async def three_at_once() -> list[dict[str, Any]]:
        calls = [asyncio.ensure_future(limited.enrich({"id": i})) for i in range(3)]
        await first_in.wait()
        await asyncio.sleep(0.01)  # the two others wait for the place this long, at least
        release.set()
        return await asyncio.gather(*calls)

    assert [e["found"] for e in mlt.run(three_at_once())] == [0, 1, 2]
    with structlog.testing.capture_logs():  # the merge failures are logged
        assert merging.enrich_sync({"id": 1}) == {"id": 1}
        assert merging.enrich_sync({"id": 2}) == {"id": 2}
    samples = scrape(server)
    key = {"loop": "m", "chain": "limited", "enricher": "lookup"}
    stats = enricher_stats(limited, "lookup")
    assert stats.queued == 2
    assert value(samples, "loopthread_enricher_queue_wait_seconds_count", **key) == 2
    waited = value(samples, "loopthread_enricher_queue_wait_seconds_sum", **key)
    assert waited == pytest.approx(stats.queue_time, rel=1e-9)
    assert waited is not None
    assert waited >= 0.02  # two calls waited at least 10 ms each
    assert value(samples, "loopthread_chain_merge_failures_total", loop="m", chain="merging") == 2
    assert value(samples, "loopthread_chain_merge_failures_total", loop="m", chain="limited") == 0
