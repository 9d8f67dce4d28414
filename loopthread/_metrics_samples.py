"""The samples loopthread exports: the family table, and reading them from ``stats()``.

Shared by the scrape-time collector (:mod:`loopthread.metrics`) and the writer of
prometheus_client's multiprocess files (:mod:`loopthread._metrics_mp`): both turn the same
``stats()`` snapshots into the same series.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from loopthread._stats import ChainStats, ChannelStats

if TYPE_CHECKING:
    from loopthread._core._state import LoopStats
    from loopthread._loopthread import LoopThread

__all__ = [
    "CUMULATIVE",
    "FAMILIES",
    "Labels",
    "Samples",
    "read_component",
    "read_loop",
    "read_loop_stats",
]

Kind = Literal["counter", "gauge", "histogram", "summary"]
Labels = tuple[str, ...]

_LOOP = ("loop",)
_CHANNEL = ("loop", "channel")
_ENRICHER = ("loop", "chain", "enricher")

# name -> (type, help, label names); counter names without the _total the exposition adds.
FAMILIES: dict[str, tuple[Kind, str, Labels]] = {
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
    "loopthread_enricher_queue_wait_seconds": (
        "summary",
        "Enricher calls that waited for a place (max_concurrency) (_count), and the seconds "
        "they waited in total (_sum), apart from the enricher's own time.",
        _ENRICHER,
    ),
    "loopthread_chain_merge_failures": (
        "counter",
        "Enricher results left out because the chain's merge function failed.",
        ("loop", "chain"),
    ),
    "loopthread_chain_degraded_events": (
        "counter",
        "Events the chain passed through without enrichment (degraded).",
        ("loop", "chain"),
    ),
}
CUMULATIVE = frozenset(n for n, (kind, _, _) in FAMILIES.items() if kind != "gauge")
_CIRCUIT_STATES = ("closed", "half_open", "open")
_OUTCOMES = (
    ("ok", "calls_ok"),
    ("error", "calls_failed"),
    ("timeout", "calls_timed_out"),
    ("cancelled", "calls_cancelled"),
)


class Samples:
    """Sample values of one scrape (or the folded totals of stopped LoopThreads)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[Labels, float]] = {}
        self.hists: dict[str, dict[Labels, tuple[tuple[float, ...], list[int], float]]] = {}
        self.summaries: dict[str, dict[Labels, tuple[float, float]]] = {}

    def add(self, name: str, labels: Labels, value: float) -> None:
        family = self.values.setdefault(name, {})
        family[labels] = family.get(labels, 0.0) + value

    def maximum(self, name: str, labels: Labels, value: float) -> None:
        family = self.values.setdefault(name, {})
        family[labels] = max(family.get(labels, value), value)

    def histogram(
        self, name: str, labels: Labels, bounds: tuple[float, ...], counts: list[int], total: float
    ) -> None:
        family = self.hists.setdefault(name, {})
        old = family.get(labels)
        if old is not None and old[0] == bounds:
            counts = [a + b for a, b in zip(old[1], counts, strict=True)]
            total += old[2]
        family[labels] = (bounds, counts, total)

    def summary(self, name: str, labels: Labels, count: float, total: float) -> None:
        family = self.summaries.setdefault(name, {})
        old_count, old_total = family.get(labels, (0.0, 0.0))
        family[labels] = (old_count + count, old_total + total)

    def fold(self, other: Samples) -> None:
        """Add ``other``'s cumulative samples (counters, histograms, summaries) to these."""
        for name, family in other.values.items():
            if name in CUMULATIVE:
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
        for name, (kind, doc, labelnames) in FAMILIES.items():
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


def read_loop(lt: LoopThread, label: str, out: Samples) -> None:
    """Add ``lt``'s samples (its own and every component's) to ``out``.

    Raises:
        Exception: the first error of a ``stats()``, after every other source was read.
    """
    read_loop_stats(lt.stats(), label, out)
    failed: Exception | None = None
    for component in lt.components:
        try:
            read_component(component, label, out)
        except Exception as exc:  # noqa: BLE001 - one broken component must not hide the rest
            failed = failed or exc
    if failed is not None:
        raise failed


def read_loop_stats(stats: LoopStats, label: str, out: Samples) -> None:
    """Add the samples of one LoopThread's own ``stats()`` (not its components') to ``out``."""
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


def read_component(component: object, loop_label: str, out: Samples) -> None:
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


def _read_channel(stats: ChannelStats, loop_label: str, out: Samples) -> None:
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


def _read_chain(stats: ChainStats, loop_label: str, out: Samples) -> None:
    chain_name = stats.name
    degraded = _number(getattr(stats, "degraded", None))
    if degraded is not None:
        out.add("loopthread_chain_degraded_events", (loop_label, chain_name), degraded)
    merge_failures = _number(getattr(stats, "merge_failures", None))
    if merge_failures is not None:
        out.add("loopthread_chain_merge_failures", (loop_label, chain_name), merge_failures)
    for enricher_name, enricher in _enrichers(stats):
        key = (loop_label, chain_name, enricher_name)
        calls = _number(getattr(enricher, "calls", None))
        seconds = _number(getattr(enricher, "time", None))
        if calls is not None:
            out.summary("loopthread_enricher_duration_seconds", key, calls, seconds or 0.0)
        queued = _number(getattr(enricher, "queued", None))
        if queued is not None:
            waited = _number(getattr(enricher, "queue_time", None)) or 0.0
            out.summary("loopthread_enricher_queue_wait_seconds", key, queued, waited)
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
