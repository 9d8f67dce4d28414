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

Under prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus_client is imported), where a scrape reads only the files of
``prometheus_client.multiprocess.MultiProcessCollector`` and no custom collector, every
LoopThread with metrics on also writes the same series to those files
(:mod:`loopthread._metrics_mp`): counters that only go up and outlive their process,
histograms and summaries summed across processes, gauges with a ``multiprocess_mode`` each
(``livesum``; ``livemax`` for high water; ``liveall``, with a ``pid`` label, for circuit
state). They are written while the loop has work (at most every 0.5 s), once after it went
idle, at stop, and by :func:`flush`; never at each call, and never while idle.

Families (all labelled by ``loop``; channel and enricher families by ``channel`` or
``chain`` and ``enricher`` too):

| family | type | what it counts |
| --- | --- | --- |
| `loopthread_calls_total` | counter | by `outcome`: ok, error, timeout, cancelled |
| `loopthread_call_duration_seconds` | histogram | on the loop, first step to outcome |
| `loopthread_calls_in_flight` | gauge |  |
| `loopthread_loops_created_total` | counter |  |
| `loopthread_loop_lag_seconds` | histogram | how long a lag probe waited to run |
| `loopthread_loop_stalls_total` | counter | iterations longer than slow_callback |
| `loopthread_executor_queue_depth` | gauge | jobs waiting for a worker |
| `loopthread_executor_busy_workers` | gauge |  |
| `loopthread_executor_max_workers` | gauge |  |
| `loopthread_channel_depth` | gauge |  |
| `loopthread_channel_high_water` | gauge |  |
| `loopthread_channel_put_total` | counter | items accepted |
| `loopthread_channel_handled_total` | counter |  |
| `loopthread_channel_dropped_total` | counter |  |
| `loopthread_channel_failed_total` | counter | handler failures |
| `loopthread_enricher_duration_seconds` | summary | `_count` calls, `_sum` seconds |
| `loopthread_enricher_failures_total` | counter | by `reason`: error, timeout |
| `loopthread_enricher_skipped_total` | counter | not called: circuit open, disabled |
| `loopthread_enricher_circuit_state` | gauge | 1 for the current `state`: closed, half_open, open |
| `loopthread_enricher_queue_wait_seconds` | summary | waits for a `max_concurrency` place |
| `loopthread_chain_merge_failures_total` | counter | results the merge function lost |
| `loopthread_chain_degraded_events_total` | counter | events passed through un-enriched |
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from loopthread import _metrics_mp
from loopthread._core._component import ComponentBase
from loopthread._log import RateLimiter, logger
from loopthread._metrics_samples import Samples, read_component, read_loop
from loopthread._monitor import DEFAULT_REGISTRY
from loopthread._process import fork_safe_lock, on_fork_in_child
from loopthread._util import describe

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from loopthread._loopthread import LoopThread

__all__ = ["LoopThreadCollector", "MetricsComponent", "MetricsServer", "flush", "serve"]


class LoopThreadCollector:
    """The custom collector that serves every LoopThread attached to one registry.

    Created and registered by the first LoopThread that uses the registry; users do not
    normally create one. Thread-safe: LoopThreads attach and retire from their loop threads
    while the HTTP server scrapes from its own.
    """

    def __init__(self) -> None:
        self._lock = fork_safe_lock()
        self._loops: weakref.WeakKeyDictionary[LoopThread, str] = weakref.WeakKeyDictionary()
        self._retired = Samples()
        self._limiter = RateLimiter(60.0)  # used under _lock only

    def describe(self) -> list[Metric]:
        """The families this collector yields (so the registry can detect name clashes)."""
        return Samples().families()

    def collect(self) -> list[Metric]:
        """Read every attached LoopThread's stats() now and return the metric families."""
        with self._lock:
            self._retire_finished()
            samples = Samples()
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
                final = Samples()
                read_component(component, label, final)
                self._retired.fold(final)
            remove()

    def _retire(self, lt: LoopThread) -> None:
        label = self._loops.pop(lt, None)
        if label is None or lt.pid != os.getpid():
            return  # unknown, or inherited across fork(): its counts belong to the parent
        final = Samples()
        self._read(lt, label, final)
        self._retired.fold(final)

    def _retire_finished(self) -> None:
        # A LoopThread that died without running its close path (or was inherited by a forked
        # child) is retired here, at the next scrape or attach.
        for lt in [lt for lt in list(self._loops) if lt.state in ("stopped", "dead")]:
            self._retire(lt)

    def _read(self, lt: LoopThread, label: str, out: Samples) -> None:
        try:
            read_loop(lt, label, out)
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
        self._retired = Samples()
        self._loops = weakref.WeakKeyDictionary()


class MetricsComponent(ComponentBase):
    """Attaches one LoopThread to its registry's collector while its loop runs."""

    def __init__(self, registry: object) -> None:
        self._collector = _collector_for(registry)  # checks the registry
        self._lt: weakref.ref[LoopThread] | None = None
        self._writer: _metrics_mp.LoopWriter | None = None  # multiprocess mode only
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
            if owner is None:
                return
            writer = self._writer
            if writer is None:
                collector.fold_detached(owner, component, remove)
            else:
                writer.fold_detached(
                    component, lambda: collector.fold_detached(owner, component, remove), remove
                )

        lt.components.on_detach(fold)

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the collector; a name clash is logged before ``start()`` returns."""
        lt = self._lt() if self._lt is not None else None
        if lt is None:
            return
        self.label = label = self._collector.attach(lt)
        if label != lt.name:
            _log_clash(lt.name, label)
        if _metrics_mp.active():
            self._writer = _metrics_mp.start(lt)

    def on_closed(self) -> int:
        """Fold the final counts into the collector (and write them to the multiprocess
        files)."""
        writer = self._writer
        if writer is not None:
            writer.close()
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


def flush(lt: LoopThread | None = None) -> int:
    """Under prometheus_client's multiprocess mode, write the metrics of every running
    LoopThread of this process (or only ``lt``'s) to its files now; return how many
    LoopThreads were written (0 outside multiprocess mode).

    Not needed for correctness: a LoopThread writes them while it has work (at most every
    0.5 s), once after it went idle, and at stop. Call it where a scrape must see this
    process's values exactly, e.g. in the ``/metrics`` view before collecting.
    """
    if not _metrics_mp.active():
        return 0
    return _metrics_mp.flush(lt)


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
