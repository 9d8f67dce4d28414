"""Prometheus metrics: the HTTP endpoint, every family, shared registries, metrics off."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loopthread import LoopThread, metrics

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
        block_the_loop(0.15)

    lt = LoopThread("lag", metrics_registry=registry, lag_interval=0.05, slow_callback=0.1)
    lt.start()
    try:
        with structlog.testing.capture_logs():
            lt.run(blocker())
            lt.run(ok())
            lt.run(ok())
            monitor = lt._monitor
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
    assert lag_sum >= 0.05
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
        assert lt._metrics is None
        assert lt._call_durations is None
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
# Fakes shaped like ChannelStats and ChainStats: the collector reads fields by name.


@dataclass(frozen=True)
class FakeChannelStats:
    name: str
    put: int
    handled: int
    dropped: int
    failed: int
    depth: int
    high_water: int


@dataclass(frozen=True)
class FakeEnricherStats:
    name: str
    calls: int
    failures: int
    timeouts: int
    skipped: int
    time: float
    circuit: str


@dataclass(frozen=True)
class FakeChainStats:
    name: str
    degraded: int
    enrichers: tuple[FakeEnricherStats, ...] = field(default=())


class Fake:
    """Anything with a stats() method, as channels and chains are."""

    def __init__(self, stats: Any) -> None:
        self.current = stats

    def stats(self) -> Any:
        if isinstance(self.current, Exception):
            raise self.current
        return self.current


def test_channel_families(mlt: LoopThread, server: metrics.MetricsServer) -> None:
    """Depth, high water and the item counters, per channel, read at scrape time."""
    channel = Fake(FakeChannelStats("events", 10, 6, 2, 1, 1, 5))
    mlt._channels.add(channel)
    samples = scrape(server)
    key = {"loop": "m", "channel": "events"}
    assert value(samples, "loopthread_channel_put_total", **key) == 10
    assert value(samples, "loopthread_channel_handled_total", **key) == 6
    assert value(samples, "loopthread_channel_dropped_total", **key) == 2
    assert value(samples, "loopthread_channel_failed_total", **key) == 1
    assert value(samples, "loopthread_channel_depth", **key) == 1
    assert value(samples, "loopthread_channel_high_water", **key) == 5
    channel.current = FakeChannelStats("events", 12, 9, 2, 1, 0, 5)
    assert value(scrape(server), "loopthread_channel_handled_total", **key) == 9


def test_enricher_families(mlt: LoopThread, server: metrics.MetricsServer) -> None:
    """Durations as a summary, failures by reason, skips, circuit state, degraded events."""
    chain = Fake(
        FakeChainStats(
            "audit",
            degraded=3,
            enrichers=(
                FakeEnricherStats("geo", 100, 4, 2, 7, 0.5, "open"),
                FakeEnricherStats("user", 50, 0, 0, 0, 0.25, "closed"),
            ),
        )
    )
    mlt._chains.add(chain)
    samples = scrape(server)
    geo = {"loop": "m", "chain": "audit", "enricher": "geo"}
    assert value(samples, "loopthread_enricher_duration_seconds_count", **geo) == 100
    assert value(samples, "loopthread_enricher_duration_seconds_sum", **geo) == 0.5
    assert value(samples, "loopthread_enricher_failures_total", **geo, reason="error") == 4
    assert value(samples, "loopthread_enricher_failures_total", **geo, reason="timeout") == 2
    assert value(samples, "loopthread_enricher_skipped_total", **geo) == 7
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="open") == 1
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="closed") == 0
    assert value(samples, "loopthread_enricher_circuit_state", **geo, state="half_open") == 0
    user = {"loop": "m", "chain": "audit", "enricher": "user"}
    assert value(samples, "loopthread_enricher_circuit_state", **user, state="closed") == 1
    assert value(samples, "loopthread_chain_degraded_events_total", loop="m", chain="audit") == 3


def test_channel_counters_survive_their_loop(registry: CollectorRegistry) -> None:
    """A stopped loop's channel counters are folded in, like its own."""
    lt = LoopThread("c", metrics_registry=registry, lag_interval=None).start()
    channel = Fake(FakeChannelStats("q", 4, 4, 0, 0, 0, 2))
    lt._channels.add(channel)
    lt.stop()
    samples = local(registry)
    assert value(samples, "loopthread_channel_handled_total", loop="c", channel="q") == 4
    assert value(samples, "loopthread_channel_depth", loop="c", channel="q") is None


def test_a_broken_stats_does_not_break_the_scrape(
    mlt: LoopThread, server: metrics.MetricsServer
) -> None:
    """A stats() that raises is logged; the scrape still answers."""
    broken = Fake(RuntimeError("stats exploded"))
    mlt._channels.add(broken)
    with structlog.testing.capture_logs() as logs:
        samples = scrape(server)
    assert ("loopthread_calls_total", frozenset({("loop", "m"), ("outcome", "ok")})) in samples
    assert any(e["event"] == "loop_thread.metrics_failed" for e in logs)


def test_objects_without_stats_fields_are_skipped(
    mlt: LoopThread, registry: CollectorRegistry
) -> None:
    """The collector reads fields defensively: unknown shapes yield nothing, not an error."""

    @dataclass(frozen=True)
    class Bare:
        name: str

    mlt._channels.add(Fake(Bare("bare")))
    mlt._chains.add(Fake(Bare("bare-chain")))
    samples = local(registry)
    assert not any(dict(labels).get("channel") == "bare" for _, labels in samples)


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
    """A taken port raises OSError naming the address and suggesting port=0."""
    with pytest.raises(OSError, match="port=0"):
        metrics.serve(server.port)
