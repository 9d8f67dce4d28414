"""The enrichers' own lifecycle: ``startup()`` once per loop before first use, ``shutdown()``
at stop (``start()`` and ``stop()``, fapilog's names, when an enricher has not the others).

Design notes (why it is built this way):

* Startup hooks run once per loop in a Task with an empty ``contextvars.Context``: they are
  shared by every event, so they must not capture the first caller's context (a request id
  leaking into a connection pool's background tasks). Callers wait on it through
  ``asyncio.shield`` so a caller that gives up does not cancel startup for the others.
* A failed ``startup()`` disables only that enricher (``slot.disabled``: skipped, counted in
  ``startup_failures``); the others run.
* Shutdown hooks run from a "close" stop hook registered once startup finished. Resources
  (``lt.resource``) are closed after every close hook, so a shutdown may still use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import math
import time

from loopthread._core._shutdown import CLOSE_FLOOR
from loopthread._enrich._slots import Slot, cancelled_from_outside, log
from loopthread._util import describe

__all__ = ["Lifecycle"]


class Lifecycle:
    """Startup and shutdown of a chain's enrichers, for the loop the chain is bound to.

    ``started`` is True once every ``startup()`` finished (at once when no enricher has hooks);
    ``failures`` counts the startups that failed, over the chain's life.
    """

    __slots__ = ("_chain", "_hook_timeout", "_slots", "failures", "has_hooks", "started", "task")

    def __init__(self, chain: str, slots: list[Slot], hook_timeout: float | None) -> None:
        self._chain = chain
        self._slots = slots
        self._hook_timeout = hook_timeout
        self.has_hooks = any(s.startup is not None or s.shutdown is not None for s in slots)
        self.started = not self.has_hooks
        self.task: asyncio.Task[None] | None = None
        self.failures = 0

    def reset(self) -> None:
        """A new loop (or a forked child): start every enricher again before first use."""
        self.started = not self.has_hooks
        self.task = None
        for slot in self._slots:
            slot.started = False

    async def ensure_started(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the enrichers on ``loop`` (once), or wait for the startup under way."""
        task = self.task
        if task is None:
            task = loop.create_task(
                self._startup(), name="loopthread-enricher-startup", context=contextvars.Context()
            )
            self.task = task
        if not task.done():
            # Shielded: a caller that gives up must not cancel startup for the others.
            await asyncio.shield(task)

    async def _startup(self) -> None:
        hooked = [s for s in self._slots if s.startup is not None]
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *[
                loop.create_task(self._start_one(s), name=f"loopthread-startup-{s.name}")
                for s in hooked
            ]
        )
        for slot in self._slots:
            if slot.startup is None and not slot.disabled:
                slot.started = True
        self.started = True

    async def _start_one(self, slot: Slot) -> None:
        try:
            async with asyncio.timeout(self._hook_timeout):
                assert slot.startup is not None
                result = slot.startup()
                if inspect.isawaitable(result):
                    await result
            slot.started = True  # from now on stop() shuts it down, whatever else happens
        except BaseException as exc:  # a failed startup disables one enricher
            if isinstance(exc, asyncio.CancelledError) and cancelled_from_outside():
                raise  # the loop is stopping (its own deadline raises TimeoutError)
            slot.disabled = True
            self.failures += 1
            log(
                "warning",
                "enricher.startup_failed",
                chain=self._chain,
                enricher=slot.name,
                error=describe(exc),
                exc_info=exc,
            )

    async def shutdown(self, deadline: float) -> None:
        """Cancel a startup still running, then shut down every started enricher by
        ``deadline`` (a ``time.monotonic()`` value)."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=max(CLOSE_FLOOR, deadline - time.monotonic()))
        closing = [s for s in self._slots if s.started and s.shutdown is not None]
        for slot in closing:
            slot.started = False
        if closing:
            await _Shutdown(self._chain, closing, self._hook_timeout)(deadline)


class _Shutdown:
    """The "close" stop hook of a chain: every started enricher's shutdown(), concurrently."""

    __slots__ = ("_chain", "_hook_timeout", "_slots")

    def __init__(self, chain: str, slots: list[Slot], hook_timeout: float | None) -> None:
        self._chain = chain
        self._slots = slots
        self._hook_timeout = hook_timeout

    async def __call__(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        limit = self._hook_timeout
        if not math.isinf(remaining):
            # Never less than the core's floor: a zero limit would cancel each shutdown before
            # its first line, skipping it entirely.
            floor = max(CLOSE_FLOOR, remaining)
            limit = floor if limit is None else min(limit, floor)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *[
                loop.create_task(self._one(s, limit), name=f"loopthread-shutdown-{s.name}")
                for s in self._slots
            ]
        )

    async def _one(self, slot: Slot, limit: float | None) -> None:
        try:
            async with asyncio.timeout(limit):
                assert slot.shutdown is not None
                result = slot.shutdown()
                if inspect.isawaitable(result):
                    await result
        except BaseException as exc:  # one failing shutdown must not skip the others
            if isinstance(exc, asyncio.CancelledError) and cancelled_from_outside():
                raise
            log(
                "warning",
                "enricher.shutdown_failed",
                chain=self._chain,
                enricher=slot.name,
                error=describe(exc),
            )
