"""Supported ways in for tests (ours and users'): no test needs a private attribute.

* :func:`reset_default` stops the process-wide default loop and forgets it, so the next
  ``loopthread.default()`` starts a fresh one;
* :func:`current_default` returns the default LoopThread as it is now, without creating one;
* :func:`components` lists what is attached to a LoopThread (channels, chains, resources);
* :func:`add_stop_hook` runs a coroutine function in a phase of ``stop()``;
* :func:`monitor` gives a LoopThread's lag monitor and watchdog;
* :func:`holding_default_locks` holds the locks that creating the default loop takes (for
  fork-safety tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

from loopthread import _default, _process
from loopthread._core._component import Component, ComponentBase, StopPhase
from loopthread._core._state import ShutdownReport
from loopthread._loopthread import LoopThread
from loopthread._monitor import LoopMonitor, MonitorComponent

__all__ = [
    "add_stop_hook",
    "components",
    "current_default",
    "holding_default_locks",
    "monitor",
    "reset_default",
]


def current_default() -> LoopThread | None:
    """The default LoopThread as it is now (None if none was made in this process)."""
    return _default.current_default()


def reset_default(timeout: float | None = 5.0) -> ShutdownReport | None:
    """Stop the default LoopThread (if any) and forget it; return its stop report."""
    lt = _default.current_default()
    if lt is None:
        return None
    report = lt.stop(timeout)
    with _default._lock:
        if _default._default is lt:
            _default._default = None
    return report


def components(lt: LoopThread) -> list[Component]:
    """The components attached to ``lt`` now, in attach order."""
    return list(lt.components)


class _StopHook(ComponentBase):
    def __init__(self, hook: Callable[[float], Awaitable[object]], phase: StopPhase) -> None:
        self._hook = hook
        self.stop_phase = phase

    @property
    def name(self) -> str:
        return f"stop-hook:{getattr(self._hook, '__qualname__', 'hook')}"

    async def on_stop(self, deadline: float) -> None:
        await self._hook(deadline)

    def stats(self) -> None:
        return None


def add_stop_hook(
    lt: LoopThread, hook: Callable[[float], Awaitable[object]], phase: StopPhase = "drain"
) -> Component:
    """Run ``await hook(deadline)`` on the loop in ``phase`` of ``lt.stop()``; return the
    component (detach it with ``lt.components.detach(...)``).

    Within one phase, components stop newest first: a ``"close_last"`` hook added *before*
    the first ``lt.resource(...)`` runs after the resources were closed.

    Raises:
        LoopNotRunningError: ``lt`` began stopping.
    """
    return lt.components.attach(_StopHook(hook, phase))


def monitor(lt: LoopThread) -> LoopMonitor | None:
    """``lt``'s lag monitor and stall watchdog (None when both are off or before start)."""
    for component in lt.components:
        if isinstance(component, MonitorComponent):
            return component.monitor
    return None


@contextlib.contextmanager
def holding_default_locks() -> Iterator[None]:
    """Hold, for the ``with`` block, the locks that creating the default LoopThread takes (the
    default loop's own and the process registry's), in the order it takes them.

    For fork-safety tests: another thread forks while one thread is inside the block, and the
    child must still be able to create its own default loop (the fork hook re-creates every
    lock in the child). Inside the block, the holding thread must not create LoopThreads or
    call ``loopthread.default()`` while no default loop runs: that would wait for itself.
    """
    with _default._lock, _process._lock:
        yield
