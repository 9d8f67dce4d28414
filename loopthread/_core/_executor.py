"""The loop's default executor: works until its LoopThread shuts it down, and never blocks exit.

asyncio accepts only a ``ThreadPoolExecutor`` as default executor, so this is one, but with
its own workers. The stdlib's pool is tied to interpreter shutdown in two ways that break a
long-lived loop (both found the hard way):

* ``concurrent.futures`` registers ``_python_exit`` with ``threading._register_atexit``: it
  runs in ``threading._shutdown()``, before any ``atexit`` hook, sets a global flag after which
  every stdlib pool refuses new work, and joins every pool worker *without a timeout*. The
  exit drain of a LoopThread runs from ``atexit``: handlers that use ``run_in_executor`` would
  fail for everything drained, and one stuck job would keep the process from exiting at all.
* its workers are non-daemon threads, joined at exit.

Here workers are daemon threads that ``_python_exit`` does not know, the pool refuses work
only once :meth:`LoopExecutor.shutdown` ran, and that shutdown joins the workers with a bound.
Idle workers block in ``SimpleQueue.get()``: no wake-ups. Where no thread can be started any
more (Python 3.12+ at interpreter exit) and no worker exists, a job runs in the submitting
thread, so the drain still completes.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from loopthread._util import new_thread, wait_arg

__all__ = ["LoopExecutor"]

T = TypeVar("T")

_current = threading.local()  # .executor: the LoopExecutor whose worker this thread is


class _Job:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self, future: Future[Any], fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            self.future.set_exception(exc)
            del exc  # no frame <-> exception cycle
        else:
            self.future.set_result(result)


class LoopExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` with daemon workers that only its own shutdown stops."""

    def __init__(self, max_workers: int | None, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: set[threading.Thread] = set()
        # As the stdlib pool's idle semaphore, but a count under _lock: a Semaphore's
        # Condition can be left held by a caller interrupted inside it (a Ctrl-C in
        # Semaphore.acquire's Python-level `with`), and the loop thread submits here too.
        self._idle = 0
        self._busy_count = 0
        self._closed = False
        self._lock = threading.Lock()
        self._prefix = thread_name_prefix

    @property
    def max_workers(self) -> int:
        """The most worker threads this executor starts."""
        return int(self._max_workers)

    def owns_current_thread(self) -> bool:
        """True when called from one of this executor's workers."""
        ref = getattr(_current, "executor", None)
        return ref is not None and ref() is self

    def counts(self) -> tuple[int, int]:
        """(jobs waiting for a worker, workers running a job)."""
        return self._jobs.qsize(), self._busy_count

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker; refused only after :meth:`shutdown`.

        Raises:
            RuntimeError: the executor was shut down (its LoopThread stopped).
        """
        future: Future[T] = Future()
        job = _Job(future, fn, args, kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    "cannot schedule new futures after shutdown: this LoopThread's executor "
                    "stopped with its loop."
                )
            self._jobs.put(job)
            if self._idle:
                self._idle -= 1
                return future
            if len(self._workers) >= self._max_workers:
                return future
            worker = new_thread(
                _work, weakref.ref(self), self._jobs, name=f"{self._prefix}_{len(self._workers)}"
            )
            self._workers.add(worker)
        try:
            worker.start()
        except RuntimeError:  # no new threads at interpreter shutdown (3.12+)
            with self._lock:
                self._workers.discard(worker)
                alone = not self._workers
            if alone:
                self._run_queued_here()
        return future

    def _run_queued_here(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.put(None)
                return
            job.run()

    def _busy(self, delta: int) -> None:
        with self._lock:
            self._busy_count += delta
            if delta < 0:
                self._idle -= delta  # the worker goes back to waiting for a job

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs and stop the workers (joined without a bound if ``wait``)."""
        self.shutdown_bounded(wait, cancel_futures=cancel_futures, timeout=None)

    def shutdown_bounded(
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> list[threading.Thread]:
        """Refuse new jobs, stop the workers; return those still running after ``timeout``.

        ``wait``: join the workers, all together up to ``timeout`` (None: no limit); a worker
        that is the calling thread is not joined.
        """
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.future.cancel()
        self._jobs.put(None)  # each worker puts it back for the next one
        me = threading.current_thread()
        if wait:
            limit = wait_arg(timeout)
            deadline = None if limit is None else time.monotonic() + limit
            for worker in workers:
                if worker is not me:
                    worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [w for w in workers if w.is_alive() and w is not me]


def _work(executor_ref: weakref.ref[LoopExecutor], jobs: queue.SimpleQueue[_Job | None]) -> None:
    _current.executor = executor_ref
    while True:
        job = jobs.get()
        if job is None:
            jobs.put(None)
            return
        executor = executor_ref()
        if executor is not None:
            executor._busy(1)
        job.run()
        del job
        if executor is not None:
            executor._busy(-1)
        del executor
