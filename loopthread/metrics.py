"""Prometheus metrics for LoopThreads, their channels and their enricher chains.

A LoopThread attaches itself to ``LoopThread(metrics_registry=...)`` (default: the global
``prometheus_client.REGISTRY``; ``None``: no metrics) when its loop starts. Each registry gets
one :class:`LoopThreadCollector` that serves every LoopThread attached to it, so any number of
LoopThreads can share a registry. Values are read from the ``stats()`` data at scrape time:
the hot paths take no metric lock. The two histograms that must see every event (call
duration, loop lag) are plain bucket counts written by the loop thread alone
(:class:`loopthread._monitor.Buckets`).

Counters stay monotonic per ``loop`` label across LoopThreads: when a LoopThread stops, its
final counts are folded into the collector, and a later LoopThread with the same name (a
restarted worker, the default loop replaced in a forked child) continues from there. Gauges
of a stopped LoopThread disappear. Two *running* LoopThreads with the same name on one
registry do not clash: the second is exported as ``loop="name#2"``, with a warning.

Families (all labelled by ``loop``; channel and enricher families by ``channel`` or
``chain`` and ``enricher`` too):

==========================================  =========  =====================================
``loopthread_calls_total``                  counter    by ``outcome``: ok, error, timeout,
                                                       cancelled
``loopthread_call_duration_seconds``        histogram  on the loop, first step to outcome
``loopthread_calls_in_flight``              gauge
``loopthread_loops_created_total``          counter
``loopthread_loop_lag_seconds``             histogram  how long a lag probe handed to
                                                       the loop waited to run
``loopthread_loop_stalls_total``            counter    iterations longer than slow_callback
``loopthread_executor_queue_depth``         gauge      jobs waiting for a worker
``loopthread_executor_busy_workers``        gauge
``loopthread_executor_max_workers``         gauge
``loopthread_channel_depth``                gauge
``loopthread_channel_high_water``           gauge
``loopthread_channel_put_total``            counter    items accepted
``loopthread_channel_handled_total``        counter
``loopthread_channel_dropped_total``        counter
``loopthread_channel_failed_total``         counter    handler failures
``loopthread_enricher_duration_seconds``    summary    ``_count`` calls, ``_sum`` seconds
``loopthread_enricher_failures_total``      counter    by ``reason``: error, timeout
``loopthread_enricher_skipped_total``       counter    not called: circuit open, disabled
``loopthread_enricher_circuit_state``       gauge      1 for the current ``state`` (closed,
                                                       half_open, open), 0 for the others
``loopthread_chain_degraded_events_total``  counter    events passed through un-enriched
==========================================  =========  =====================================
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from loopthread._core._component import ComponentBase
from loopthread._log import RateLimiter, logger
from loopthread._monitor import DEFAULT_REGISTRY
from loopthread._process import fork_safe_lock, on_fork_in_child
from loopthread._stats import ChainStats, ChannelStats
from loopthread._util import describe

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from loopthread._loopthread import LoopThread

__all__ = ["LoopThreadCollector", "MetricsComponent", "MetricsServer", "serve"]

_Kind = Literal["counter", "gauge", "histogram", "summary"]
_Labels = tuple[str, ...]

_LOOP = ("loop",)
_CHANNEL = ("loop", "channel")
_ENRICHER = ("loop", "chain", "enricher")

# name -> (type, help, label names); counter names without the _total the exposition adds.
_FAMILIES: dict[str, tuple[_Kind, str, _Labels]] = {
    "loopthread_calls": (
        "counter",
        "Calls run on the loop (run, call, gather, submit), by outcome.",
        ("loop", "outcome"),
    ),
    "loopthread_call_duration_seconds": (
        "histogram",
        "Seconds a call took on the loop, from its first step to its outcome.",
        _LOOP,
    ),
    "loopthread_calls_in_flight": ("gauge", "Calls accepted and not finished yet.", _LOOP),
    "loopthread_loops_created": ("counter", "Event loops created under this name.", _LOOP),
    "loopthread_loop_lag_seconds": (
        "histogram",
        "Seconds a probe handed to the loop waited before it ran (loop lag).",
        _LOOP,
    ),
    "loopthread_loop_stalls": (
        "counter",
        "Loop iterations that ran longer than slow_callback (the loop was blocked).",
        _LOOP,
    ),
    "loopthread_executor_queue_depth": (
        "gauge",
        "Jobs waiting for a worker in the loop's default executor.",
        _LOOP,
    ),
    "loopthread_executor_busy_workers": (
        "gauge",
        "Workers of the loop's default executor running a job.",
        _LOOP,
    ),
    "loopthread_executor_max_workers": (
        "gauge",
        "Size of the loop's default executor.",
        _LOOP,
    ),
    "loopthread_channel_depth": ("gauge", "Items waiting in the channel.", _CHANNEL),
    "loopthread_channel_high_water": ("gauge", "Largest depth the channel reached.", _CHANNEL),
    "loopthread_channel_put": ("counter", "Items the channel accepted.", _CHANNEL),
    "loopthread_channel_handled": ("counter", "Items the channel's handler finished.", _CHANNEL),
    "loopthread_channel_dropped": (
        "counter",
        "Items dropped by the channel's overflow policy.",
        _CHANNEL,
    ),
    "loopthread_channel_failed": ("counter", "Items whose handler raised.", _CHANNEL),
    "loopthread_enricher_duration_seconds": (
        "summary",
        "Enricher calls (_count) and the seconds they took in total (_sum).",
        _ENRICHER,
    ),
    "loopthread_enricher_failures": (
        "counter",
        "Enricher calls that failed, by reason (error, timeout).",
        (*_ENRICHER, "reason"),
    ),
    "loopthread_enricher_skipped": (
        "counter",
        "Events an enricher was not called for (its circuit was open, or it is disabled).",
        _ENRICHER,
    ),
    "loopthread_enricher_circuit_state": (
        "gauge",
        "1 for the circuit breaker's current state, 0 for the others.",
        (*_ENRICHER, "state"),
    ),
    "loopthread_chain_degraded_events": (
        "counter",
        "Events the chain passed through without enrichment (degraded).",
        ("loop", "chain"),
    ),
}
_CUMULATIVE = frozenset(n for n, (kind, _, _) in _FAMILIES.items() if kind != "gauge")
_CIRCUIT_STATES = ("closed", "half_open", "open")
_OUTCOMES = (
    ("ok", "calls_ok"),
    ("error", "calls_failed"),
    ("timeout", "calls_timed_out"),
    ("cancelled", "calls_cancelled"),
)


class _Samples:
    """Sample values of one scrape (or the folded totals of stopped LoopThreads)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[_Labels, float]] = {}
        self.hists: dict[str, dict[_Labels, tuple[tuple[float, ...], list[int], float]]] = {}
        self.summaries: dict[str, dict[_Labels, tuple[float, float]]] = {}

    def add(self, name: str, labels: _Labels, value: float) -> None:
        family = self.values.setdefault(name, {})
        family[labels] = family.get(labels, 0.0) + value

    def maximum(self, name: str, labels: _Labels, value: float) -> None:
        family = self.values.setdefault(name, {})
        family[labels] = max(family.get(labels, value), value)

    def histogram(
        self, name: str, labels: _Labels, bounds: tuple[float, ...], counts: list[int], total: float
    ) -> None:
        family = self.hists.setdefault(name, {})
        old = family.get(labels)
        if old is not None and old[0] == bounds:
            counts = [a + b for a, b in zip(old[1], counts, strict=True)]
            total += old[2]
        family[labels] = (bounds, counts, total)

    def summary(self, name: str, labels: _Labels, count: float, total: float) -> None:
        family = self.summaries.setdefault(name, {})
        old_count, old_total = family.get(labels, (0.0, 0.0))
        family[labels] = (old_count + count, old_total + total)

    def fold(self, other: _Samples) -> None:
        """Add ``other``'s cumulative samples (counters, histograms, summaries) to these."""
        for name, family in other.values.items():
            if name in _CUMULATIVE:
                for labels, value in family.items():
                    self.add(name, labels, value)
        for name, hists in other.hists.items():
            for labels, (bounds, counts, total) in hists.items():
                self.histogram(name, labels, bounds, list(counts), total)
        for name, summaries in other.summaries.items():
            for labels, (count, total) in summaries.items():
                self.summary(name, labels, count, total)

    def families(self) -> list[Metric]:
        result: list[Metric] = []
        for name, (kind, doc, labelnames) in _FAMILIES.items():
            metric: Metric
            if kind == "counter":
                counter = CounterMetricFamily(name, doc, labels=labelnames)
                for labels, value in sorted(self.values.get(name, {}).items()):
                    counter.add_metric(labels, value)
                metric = counter
            elif kind == "gauge":
                gauge = GaugeMetricFamily(name, doc, labels=labelnames)
                for labels, value in sorted(self.values.get(name, {}).items()):
                    gauge.add_metric(labels, value)
                metric = gauge
            elif kind == "histogram":
                histogram = HistogramMetricFamily(name, doc, labels=labelnames)
                for labels, (bounds, counts, total) in sorted(self.hists.get(name, {}).items()):
                    histogram.add_metric(labels, _cumulative(bounds, counts), total)
                metric = histogram
            else:
                summary = SummaryMetricFamily(name, doc, labels=labelnames)
                for labels, (count, total) in sorted(self.summaries.get(name, {}).items()):
                    summary.add_metric(labels, int(count), total)
                metric = summary
            result.append(metric)
        return result


def _le(bound: float) -> str:
    # As prometheus_client writes bucket bounds: "0.005", "1.0", "+Inf".
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append((_le(bound), running))
    return buckets


class LoopThreadCollector:
    """The custom collector that serves every LoopThread attached to one registry.

    Created and registered by the first LoopThread that uses the registry; users do not
    normally create one. Thread-safe: LoopThreads attach and retire from their loop threads
    while the HTTP server scrapes from its own.
    """

    def __init__(self) -> None:
        self._lock = fork_safe_lock()
        self._loops: weakref.WeakKeyDictionary[LoopThread, str] = weakref.WeakKeyDictionary()
        self._retired = _Samples()
        self._limiter = RateLimiter(60.0)  # used under _lock only

    def describe(self) -> list[Metric]:
        """The families this collector yields (so the registry can detect name clashes)."""
        return _Samples().families()

    def collect(self) -> list[Metric]:
        """Read every attached LoopThread's stats() now and return the metric families."""
        with self._lock:
            self._retire_finished()
            samples = _Samples()
            samples.fold(self._retired)
            for lt, label in list(self._loops.items()):
                self._read(lt, label, samples)
        return samples.families()

    def attach(self, lt: LoopThread) -> str:
        """Serve ``lt``'s metrics from now on; return the ``loop`` label it gets."""
        with self._lock:
            self._retire_finished()
            used = set(self._loops.values())
            label = lt.name
            n = 1
            while label in used:
                n += 1
                label = f"{lt.name}#{n}"
            self._loops[lt] = label
        return label

    def retire(self, lt: LoopThread) -> None:
        """``lt`` stopped: fold its final counts into the totals and stop reading it."""
        with self._lock:
            self._retire(lt)

    def fold_detached(self, lt: LoopThread, component: object, remove: Callable[[], None]) -> None:
        """A component of ``lt`` detached (a closed channel): keep its final counters, and
        let it go (``remove()``) under the same lock a scrape holds."""
        with self._lock:
            label = self._loops.get(lt)
            if label is not None:
                final = _Samples()
                _read_component(component, label, final)
                self._retired.fold(final)
            remove()

    def _retire(self, lt: LoopThread) -> None:
        label = self._loops.pop(lt, None)
        if label is None or lt.pid != os.getpid():
            return  # unknown, or inherited across fork(): its counts belong to the parent
        final = _Samples()
        self._read(lt, label, final)
        self._retired.fold(final)

    def _retire_finished(self) -> None:
        # A LoopThread that died without running its close path (or was inherited by a forked
        # child) is retired here, at the next scrape or attach.
        for lt in [lt for lt in list(self._loops) if lt.state in ("stopped", "dead")]:
            self._retire(lt)

    def _read(self, lt: LoopThread, label: str, out: _Samples) -> None:
        try:
            _read_loop(lt, label, out)
        except Exception as exc:  # noqa: BLE001 - one broken stats() must not fail the scrape
            suppressed = self._limiter.allow(label)
            if suppressed is not None:
                logger.warning(
                    "loop_thread.metrics_failed",
                    loop_thread=label,
                    error=describe(exc),
                    suppressed=suppressed,
                )

    def _after_fork_in_child(self) -> None:
        # The counts folded so far are the parent's to report.
        self._retired = _Samples()
        self._loops = weakref.WeakKeyDictionary()


class MetricsComponent(ComponentBase):
    """Attaches one LoopThread to its registry's collector while its loop runs."""

    def __init__(self, registry: object) -> None:
        self._collector = _collector_for(registry)  # checks the registry
        self._lt: weakref.ref[LoopThread] | None = None
        self.label = ""

    @property
    def name(self) -> str:
        """``metrics``."""
        return "metrics"

    def bind(self, lt: LoopThread) -> None:
        """Serve ``lt`` (called once, by the LoopThread it belongs to)."""
        self._lt = weakref.ref(lt)
        collector = self._collector
        ref = self._lt

        def fold(component: object, remove: Callable[[], None]) -> None:
            owner = ref()
            if owner is not None:
                collector.fold_detached(owner, component, remove)

        lt.components.on_detach(fold)

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the collector; a name clash is logged before ``start()`` returns."""
        lt = self._lt() if self._lt is not None else None
        if lt is None:
            return
        self.label = label = self._collector.attach(lt)
        if label != lt.name:
            _log_clash(lt.name, label)

    def on_closed(self) -> int:
        """Fold the final counts into the collector."""
        lt = self._lt() if self._lt is not None else None
        if lt is not None:
            self._collector.retire(lt)
        return 0

    def stats(self) -> str:
        """The ``loop`` label this LoopThread is exported under."""
        return self.label


def _log_clash(name: str, label: str) -> None:
    logger.warning(
        "loop_thread.metrics_name_clash",
        loop_thread=name,
        metrics_label=label,
        hint="another running LoopThread on this metrics registry has this name; "
        "give each LoopThread a unique name.",
    )


def _read_loop(lt: LoopThread, label: str, out: _Samples) -> None:
    stats = lt.stats()
    loop = (label,)
    for outcome, field in _OUTCOMES:
        out.add("loopthread_calls", (label, outcome), getattr(stats, field))
    out.add("loopthread_loops_created", loop, stats.loops_created)
    out.add("loopthread_calls_in_flight", loop, stats.in_flight)
    if stats.call_durations is not None:
        h = stats.call_durations
        out.histogram("loopthread_call_duration_seconds", loop, h.bounds, list(h.counts), h.sum)
    out.add("loopthread_loop_stalls", loop, stats.loop_stalls)
    if stats.loop_lag is not None:
        h = stats.loop_lag
        out.histogram("loopthread_loop_lag_seconds", loop, h.bounds, list(h.counts), h.sum)
    if stats.executor_workers:
        out.add("loopthread_executor_queue_depth", loop, stats.executor_queue_depth)
        out.add("loopthread_executor_busy_workers", loop, stats.executor_busy)
        out.add("loopthread_executor_max_workers", loop, stats.executor_workers)
    failed: Exception | None = None
    for component in lt.components:
        try:
            _read_component(component, label, out)
        except Exception as exc:  # noqa: BLE001 - one broken component must not hide the rest
            failed = failed or exc
    if failed is not None:
        raise failed


def _read_component(component: object, loop_label: str, out: _Samples) -> None:
    stats = getattr(component, "stats", None)
    if not callable(stats):
        return
    snapshot = stats()
    if isinstance(snapshot, ChannelStats):
        _read_channel(snapshot, loop_label, out)
    elif isinstance(snapshot, ChainStats):
        _read_chain(snapshot, loop_label, out)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _name(stats: object, owner: object, fallback: str) -> str:
    name = getattr(stats, "name", None) or getattr(owner, "name", None)
    return str(name) if name else fallback


def _read_channel(stats: ChannelStats, loop_label: str, out: _Samples) -> None:
    key = (loop_label, stats.name)
    for field in ("put", "handled", "dropped", "failed"):
        value = _number(getattr(stats, field, None))
        if value is not None:
            out.add(f"loopthread_channel_{field}", key, value)
    depth = _number(getattr(stats, "depth", None))
    if depth is not None:
        out.add("loopthread_channel_depth", key, depth)
    high_water = _number(getattr(stats, "high_water", None))
    if high_water is not None:
        out.maximum("loopthread_channel_high_water", key, high_water)


def _read_chain(stats: ChainStats, loop_label: str, out: _Samples) -> None:
    chain_name = stats.name
    degraded = _number(getattr(stats, "degraded", None))
    if degraded is not None:
        out.add("loopthread_chain_degraded_events", (loop_label, chain_name), degraded)
    for enricher_name, enricher in _enrichers(stats):
        key = (loop_label, chain_name, enricher_name)
        calls = _number(getattr(enricher, "calls", None))
        seconds = _number(getattr(enricher, "time", None))
        if calls is not None:
            out.summary("loopthread_enricher_duration_seconds", key, calls, seconds or 0.0)
        for field, reason in (("failures", "error"), ("timeouts", "timeout")):
            value = _number(getattr(enricher, field, None))
            if value is not None:
                out.add("loopthread_enricher_failures", (*key, reason), value)
        skipped = _number(getattr(enricher, "skipped", None))
        if skipped is not None:
            out.add("loopthread_enricher_skipped", key, skipped)
        state = _circuit_state(enricher)
        if state is not None:
            states = _CIRCUIT_STATES if state in _CIRCUIT_STATES else (*_CIRCUIT_STATES, state)
            for name in states:
                out.maximum(
                    "loopthread_enricher_circuit_state",
                    (*key, name),
                    1.0 if name == state else 0.0,
                )


def _enrichers(stats: object) -> Iterator[tuple[str, Any]]:
    for attribute in ("enrichers", "per_enricher"):
        members = getattr(stats, attribute, None)
        if members is None:
            continue
        if isinstance(members, Mapping):
            for key, enricher in members.items():
                yield _name(enricher, None, str(key)), enricher
        else:
            for index, enricher in enumerate(members):
                yield _name(enricher, None, f"enricher{index}"), enricher
        return


def _circuit_state(enricher: object) -> str | None:
    for attribute in ("circuit", "circuit_state", "breaker", "state"):
        value = getattr(enricher, attribute, None)
        if value is None:
            continue
        if isinstance(value, bool):  # "circuit open?"
            return "open" if value else "closed"
        if isinstance(value, enum.Enum):
            value = value.value if isinstance(value.value, str) else value.name
        return str(value).lower().replace("-", "_").replace(" ", "_")
    return None


# ---------------------------------------------------------------------- one collector per registry

_collectors_lock = fork_safe_lock()
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, LoopThreadCollector] = (
    weakref.WeakKeyDictionary()
)


def _collector_for(registry: object) -> LoopThreadCollector:
    """Return the collector serving ``registry``, creating and registering it once.

    Raises:
        TypeError: ``registry`` is not a ``prometheus_client.CollectorRegistry``.
        ValueError: the registry already has other metrics with loopthread's names.
    """
    if registry is DEFAULT_REGISTRY:
        registry = REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "metrics_registry must be a prometheus_client.CollectorRegistry, or None to turn "
            f"metrics off; got {type(registry).__name__} {registry!r}."
        )
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = LoopThreadCollector()
            try:
                registry.register(collector)
            except ValueError as exc:
                raise ValueError(
                    f"cannot add loopthread's metrics to this registry: {exc}. Other metrics "
                    "already use loopthread_* names; pass another CollectorRegistry as "
                    "metrics_registry=..., or None to turn loopthread's metrics off."
                ) from exc
            _collectors[registry] = collector
    return collector


def _after_fork_in_child() -> None:
    for collector in list(_collectors.values()):
        collector._after_fork_in_child()


on_fork_in_child(_after_fork_in_child)


# ---------------------------------------------------------------------- the HTTP endpoint


class MetricsServer:
    """A running Prometheus HTTP endpoint (from :func:`serve`); ``close()`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False

    @property
    def addr(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the one chosen by the OS for ``port=0``)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL to scrape."""
        host = self.addr
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<MetricsServer {self.url} {state}>"


def serve(
    port: int, *, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: the global registry) over HTTP in a daemon thread.

    Listens on loopback unless ``addr`` says otherwise (``"0.0.0.0"`` for every interface).
    ``port=0`` picks a free port: read it from the returned server's ``.port``.

    Raises:
        TypeError: ``port`` is not an int, ``addr`` not a str, or ``registry`` is not a
            CollectorRegistry.
        ValueError: ``port`` is out of range.
        OSError: the address cannot be bound (the port is in use, the address is not local).
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int (0 picks a free port); got {port!r}.")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0 picks a free port); got {port!r}.")
    if not isinstance(addr, str) or not addr:
        raise TypeError(
            f"addr must be a host address as a str, e.g. addr='127.0.0.1' (loopback) or "
            f"addr='0.0.0.0' (every interface); got {addr!r}."
        )
    if registry is None:
        registry = REGISTRY
    elif not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry, or None for the global "
            f"registry; got {type(registry).__name__} {registry!r}."
        )
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        prefork = (
            " Under a pre-fork server (gunicorn, multiprocessing) every worker exports its own"
            " loop, so each needs a port of its own (e.g. a base port plus the worker's index),"
            " or port=0 and its address logged."
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise OSError(
            exc.errno,
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}. Pick another port, "
            f"or port=0 for a free one.{prefork}",
        ) from exc
    return MetricsServer(server, thread)
