"""loopthread's metrics under prometheus_client's multiprocess mode.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported:
gunicorn's documented setup) a scrape is served by
``prometheus_client.multiprocess.MultiProcessCollector`` from the files every process writes,
and custom collectors such as :class:`loopthread.metrics.LoopThreadCollector` are not read.
So each process also keeps prometheus_client's own ``Counter``, ``Gauge``, ``Histogram`` and
``Summary`` objects for loopthread's families, unregistered (they write the files), and brings
them up to date from the same totals a scrape of the collector would show: counters,
histograms and summaries by their increase since the last write (a counter never goes down,
and its file outlives the process), gauges by their value now.

When the files are written, and why not at every call: a write is a lock and an mmap store,
0.9-2 µs each, and one ``lt.run`` would need four or five (a counter, a histogram, the
in-flight gauge twice): ~20% of an ``lt.run``. Instead the values are written at moments the
loop's monitor thread is awake anyway (:meth:`loopthread._monitor.LoopMonitor.add_tick`): at
most every :data:`WRITE_INTERVAL` seconds while the loop has work, once after it went idle
(before the monitor parks), at ``stop()`` (so at a worker's clean exit), and by
:func:`loopthread.metrics.flush`. The hot paths are unchanged and an idle loop writes nothing
and wakes no thread. A LoopThread without a monitor thread (``lag_interval=None`` and
``slow_callback=None``) is written at stop and by ``flush()`` only, with a warning at start.

Gauges get the ``multiprocess_mode`` that makes the merged value mean what it means in one
process (:data:`GAUGE_MODES`); the ``live*`` files go when
``prometheus_client.multiprocess.mark_process_dead(pid)`` is called for a dead worker. A
stopped LoopThread's gauges are written as 0. ``liveall`` series carry a ``pid`` label,
added by prometheus_client.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loopthread._log import RateLimiter, logger
from loopthread._metrics_samples import FAMILIES, Labels, Samples, read_component, read_loop
from loopthread._monitor import CALL_DURATION_BUCKETS, LAG_BUCKETS, MonitorComponent
from loopthread._process import fork_safe_lock, on_fork_in_child
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._loopthread import LoopThread

__all__ = ["GAUGE_MODES", "WRITE_INTERVAL", "LoopWriter", "active", "flush", "start"]

#: While a loop has work, its values are written at most this often (seconds).
WRITE_INTERVAL = 0.5

#: prometheus_client's ``multiprocess_mode`` of each gauge.
GAUGE_MODES: dict[str, str] = {
    "loopthread_calls_in_flight": "livesum",  # calls in flight in all live workers
    "loopthread_executor_queue_depth": "livesum",
    "loopthread_executor_busy_workers": "livesum",
    "loopthread_executor_max_workers": "livesum",  # capacity: busy / max is the utilisation
    "loopthread_channel_depth": "livesum",
    "loopthread_channel_high_water": "livemax",  # the deepest any live worker's channel got
    "loopthread_enricher_circuit_state": "liveall",  # each worker has its own breaker: by pid
}
_BUCKETS = {
    "loopthread_call_duration_seconds": CALL_DURATION_BUCKETS,
    "loopthread_loop_lag_seconds": LAG_BUCKETS,
}
_Key = tuple[str, Labels]

_lock = fork_safe_lock()  # every write, and the state below
_writers: dict[int, LoopWriter] = {}  # the live writers of this process, by id
_files: _Files | None = None
_limiter = RateLimiter(60.0)  # used under _lock only


def active() -> bool:
    """True if prometheus_client runs in multiprocess mode in this process."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


class _Files:
    """prometheus_client's metric objects for loopthread's families (they write the files)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, Summary

        self._metrics: dict[str, Any] = {}
        for name, (kind, doc, labels) in FAMILIES.items():
            metric: Any
            if kind == "counter":
                metric = Counter(name, doc, labels, registry=None)
            elif kind == "gauge":
                mode: Any = GAUGE_MODES[name]
                metric = Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)
            elif kind == "histogram":
                metric = Histogram(name, doc, labels, registry=None, buckets=_BUCKETS[name])
            else:
                metric = Summary(name, doc, labels, registry=None)
            self._metrics[name] = metric
        self._children: dict[_Key, Any] = {}

    def child(self, name: str, labels: Labels) -> Any:
        """The labelled series (created, at 0 in the file, on first use)."""
        key = (name, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[name].labels(*labels)
        return child


def _files_now() -> _Files:
    global _files
    if _files is None:
        _files = _Files()
    return _files


class LoopWriter:
    """Writes one LoopThread's values to the multiprocess files (see the module docstring)."""

    def __init__(self, lt: LoopThread, label: str) -> None:
        self._lt = weakref.ref(lt)
        self.label = label
        self._pid = os.getpid()
        self._closed = False
        self._retired = Samples()  # final counts of detached components, as the collector's
        self._counters: dict[_Key, float] = {}  # as written: the files hold these increases
        self._hists: dict[_Key, tuple[list[int], float]] = {}
        self._summaries: dict[_Key, tuple[float, float]] = {}
        self._gauges: dict[_Key, float] = {}
        self._seen = -1  # the monitor's activity count at the last write
        self._due = 0.0

    def owner(self) -> LoopThread | None:
        """The LoopThread written, while it lives."""
        return self._lt()

    def tick(self, activity: int, parking: bool) -> None:
        """The monitor is awake: write if the loop did something since the last write, and
        either the monitor is about to park (the loop may be idle now) or the last write was
        WRITE_INTERVAL ago."""
        if activity == self._seen:
            return
        now = time.monotonic()
        if not parking and now < self._due:
            return
        self._seen = activity
        self._due = now + WRITE_INTERVAL
        self.write()

    def write(self) -> bool:
        """Write the values now; False if there is nothing to write (stopped, gone, forked)."""
        failed: BaseException | None = None
        with _lock:
            lt = self._lt()
            if self._closed or lt is None or self._pid != os.getpid():
                return False
            try:
                self._write(lt)
            except Exception as exc:  # noqa: BLE001 - reported below, outside the lock
                failed = exc
        if failed is not None:
            _report(self.label, failed)
        return True

    def fold_detached(
        self, component: object, fold_others: Callable[[], None], remove: Callable[[], None]
    ) -> None:
        """``component`` detached: keep its final counts, let the collector fold them too
        (``fold_others``) and ``remove()`` it, all before the next write can read."""
        with _lock:
            try:
                final = Samples()
                read_component(component, self.label, final)
                self._retired.fold(final)
            except Exception:  # noqa: BLE001 - the collector reports broken stats
                pass
            try:
                fold_others()
            finally:
                remove()

    def close(self) -> None:
        """The LoopThread stopped: write its final values, then its gauges as 0; idempotent."""
        self.write()
        with _lock:
            if self._closed:
                return
            self._closed = True
            _writers.pop(id(self), None)
            if self._pid != os.getpid():
                return
            files = _files_now()
            for key, value in self._gauges.items():
                if value:
                    files.child(*key).set(0.0)

    def _write(self, lt: LoopThread) -> None:
        total = Samples()
        total.fold(self._retired)
        read_loop(lt, self.label, total)  # raises only after reading every other component
        files = _files_now()
        for name, family in total.values.items():
            if FAMILIES[name][0] == "gauge":
                for labels, value in family.items():
                    self._set((name, labels), value, files)
            else:
                for labels, value in family.items():
                    self._increase((name, labels), value, files)
        for name, hists in total.hists.items():
            for labels, (_, counts, seconds) in hists.items():
                self._histogram((name, labels), counts, seconds, files)
        for name, summaries in total.summaries.items():
            for labels, (count, seconds) in summaries.items():
                self._summary((name, labels), count, seconds, files)
        present = {(n, labels) for n, family in total.values.items() for labels in family}
        for key, value in self._gauges.items():
            if value and key not in present:  # a detached channel's depth
                self._set(key, 0.0, files)

    # Each file value only ever grows by what the total grew past the value written: a total
    # that dips (it cannot, while folds and removals happen under _lock) is not counted twice.

    def _increase(self, key: _Key, value: float, files: _Files) -> None:
        written = self._counters.get(key)
        if written is None:
            files.child(*key)  # the series exists from its first sight, at 0
            written = self._counters[key] = 0.0
        if value > written:
            files.child(*key).inc(value - written)
            self._counters[key] = value

    def _set(self, key: _Key, value: float, files: _Files) -> None:
        if self._gauges.get(key) != value:
            files.child(*key).set(value)
            self._gauges[key] = value

    def _histogram(self, key: _Key, counts: list[int], seconds: float, files: _Files) -> None:
        child = files.child(*key)
        buckets: list[Any] = child._buckets  # one value per bucket, +Inf last, as ours
        written, written_sum = self._hists.get(key, ([0] * len(counts), 0.0))
        if len(buckets) != len(counts) or len(written) != len(counts):
            return  # other bounds: cannot happen with loopthread's own histograms
        for i, (now, before) in enumerate(zip(counts, written, strict=True)):
            if now > before:
                buckets[i].inc(now - before)
        if seconds > written_sum:
            child._sum.inc(seconds - written_sum)
        self._hists[key] = (
            [max(a, b) for a, b in zip(counts, written, strict=True)],
            max(seconds, written_sum),
        )

    def _summary(self, key: _Key, count: float, seconds: float, files: _Files) -> None:
        child = files.child(*key)
        written_count, written_sum = self._summaries.get(key, (0.0, 0.0))
        if count > written_count:
            child._count.inc(count - written_count)
        if seconds > written_sum:
            child._sum.inc(seconds - written_sum)
        self._summaries[key] = (max(count, written_count), max(seconds, written_sum))


def _report(label: str, exc: BaseException) -> None:
    with _lock:
        suppressed = _limiter.allow(label)
    if suppressed is not None:
        logger.warning(
            "loop_thread.metrics_failed",
            loop_thread=label,
            error=describe(exc),
            suppressed=suppressed,
            multiprocess=True,
        )


def start(lt: LoopThread) -> LoopWriter:
    """Write ``lt``'s values from now on (on its loop thread, before the loop runs)."""
    with _lock:
        used = {writer.label for writer in _writers.values()}
        label = lt.name
        n = 1
        while label in used:  # the collector's rule, over the whole process
            n += 1
            label = f"{lt.name}#{n}"
        writer = LoopWriter(lt, label)
        _writers[id(writer)] = writer
    writer.write()  # every series exists, at 0, from the start
    monitor = next((c for c in lt.components if isinstance(c, MonitorComponent)), None)
    running = monitor.monitor if monitor is not None else None
    if running is None or not running.add_tick(writer.tick):
        logger.warning(
            "loop_thread.metrics_written_at_stop_only",
            loop_thread=lt.name,
            hint="prometheus_client runs in multiprocess mode, and this LoopThread has no "
            "monitor thread (lag_interval=None and slow_callback=None, or uvloop without "
            "lag_interval) to write its metrics while it runs: they reach the files at stop() "
            "and when loopthread.metrics.flush() is called.",
        )
    return writer


def flush(lt: LoopThread | None = None) -> int:
    """Write the values of every LoopThread of this process (or of ``lt``) now; return how
    many were written."""
    with _lock:
        writers = [w for w in _writers.values() if lt is None or w.owner() is lt]
    return sum(writer.write() for writer in writers)


def _prometheus_lock() -> Any:
    # prometheus_client's MultiProcessValue closes over one module lock (its `lock`) that
    # every write takes; it does not re-create it in a forked child.
    from prometheus_client import values

    for cell in getattr(getattr(values.ValueClass, "inc", None), "__closure__", None) or ():
        try:
            found = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(found, type(_lock)):
            return found
    return None


def _after_fork_in_child() -> None:
    # The parent's writers write the parent's loops: none of them runs here.
    for writer in _writers.values():
        writer._closed = True
    _writers.clear()
    # A monitor thread of the parent may have been writing at fork(): it does not exist here,
    # and the lock it held would hang the child's first write (as loopthread._log does for
    # structlog's write locks).
    if active():
        lock = _prometheus_lock()
        if lock is not None and lock.locked():
            lock._at_fork_reinit()


on_fork_in_child(_after_fork_in_child)
