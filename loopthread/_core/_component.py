"""The one interface through which components (channels, resources, enricher chains, the
monitor, metrics) attach to a LoopThread.

The core never imports a component: it knows them only as :class:`Component`. A component
attaches once (``lt.components.attach(c)``), is driven by the shutdown phases through
``on_stop`` and ``on_closed``, is told about ``fork()``, and detaches itself when it is done
(a closed channel), at which point observers (metrics) get its final stats, so that counters
never go backwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, TypeVar, runtime_checkable

from loopthread._exceptions import LoopNotRunningError
from loopthread._process import fork_safe_lock

__all__ = ["Component", "ComponentBase", "Components", "StopPhase"]

#: When ``stop()`` runs a component's ``on_stop``: ``"drain"`` with the calls in flight, until
#: the soft deadline (channels); ``"close"`` after calls and drains were finished or cancelled,
#: while the loop's other tasks still run (enricher shutdowns); ``"close_last"`` after every
#: ``"close"`` (resources, which the others may still use); ``"none"``: never.
StopPhase = Literal["drain", "close", "close_last", "none"]

C = TypeVar("C", bound="Component")


@runtime_checkable
class Component(Protocol):
    """What a LoopThread needs of the things built on it."""

    stop_phase: StopPhase

    @property
    def name(self) -> str:
        """Names the component in logs and metrics."""
        ...

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop thread, before the loop runs (components attached before start())."""

    async def on_stop(self, deadline: float) -> None:
        """On the loop, in the component's phase of ``stop()``: drain or close by ``deadline``.

        Cancelled if it outlives its phase; must leave the component's accounting right.
        """

    def on_closed(self) -> int:
        """The loop is gone (stopped, died, or abandoned while blocked): wake every waiter,
        count what is left; return how many accepted items were not handled. Called once, on
        the loop thread or, for an abandoned loop, on the thread that gave up on it."""
        ...

    def stats(self) -> object:
        """A snapshot of the component's counters (a frozen dataclass)."""
        ...

    def after_fork_in_child(self) -> None:
        """In a forked child, where the loop thread does not exist: drop inherited state."""


class ComponentBase:
    """Defaults for the optional parts of :class:`Component`."""

    stop_phase: StopPhase = "none"

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to do by default."""

    async def on_stop(self, deadline: float) -> None:
        """Nothing to do by default."""

    def on_closed(self) -> int:
        """Nothing left by default."""
        return 0

    def after_fork_in_child(self) -> None:
        """Nothing to drop by default."""


class Components:
    """The components attached to one LoopThread, in attach order. Safe from any thread."""

    __slots__ = ("_items", "_keyed", "_lock", "_observers", "_refusal", "_sealed")

    def __init__(self) -> None:
        self._lock = fork_safe_lock()  # re-created in a forked child by _process's hook
        self._items: dict[int, Component] = {}
        self._keyed: dict[str, Component] = {}
        self._sealed = False
        self._refusal = ""
        self._observers: list[Callable[[Component, Callable[[], None]], None]] = []

    def attach(self, component: C) -> C:
        """Attach ``component``; return it.

        Raises:
            LoopNotRunningError: the LoopThread began stopping (or is gone).
        """
        with self._lock:
            if id(component) in self._items:
                return component  # attached already: nothing to refuse
            if self._sealed:
                raise LoopNotRunningError(self._refusal)
            self._items[id(component)] = component
        return component

    def attach_once(self, key: str, factory: Callable[[], C]) -> C:
        """The component attached under ``key``, created by ``factory()`` the first time.

        Raises:
            LoopNotRunningError: the LoopThread began stopping and none is attached yet.
        """
        with self._lock:
            found = self._keyed.get(key)
            if found is not None:
                return found  # type: ignore[return-value]
            if self._sealed:
                raise LoopNotRunningError(self._refusal)
            component = factory()
            self._keyed[key] = component
            self._items[id(component)] = component
            return component

    def detach(self, component: Component) -> None:
        """Detach ``component`` (idempotent); observers get it, for its final stats.

        Each observer gets ``(component, remove)`` and calls ``remove()`` once it has taken
        the final stats, under its own lock: a reader holding that lock (a metrics scrape)
        then sees the component either live or folded, never neither nor both.
        """
        key = id(component)
        with self._lock:
            if key not in self._items:
                return
            observers = list(self._observers)

        def remove() -> None:
            with self._lock:
                self._items.pop(key, None)

        for observe in observers:
            try:
                observe(component, remove)
            except Exception:  # noqa: BLE001 - an observer must not break a detach
                pass
        remove()

    def on_detach(self, observer: Callable[[Component, Callable[[], None]], None]) -> None:
        """Call ``observer(component, remove)`` whenever a component detaches."""
        with self._lock:
            self._observers.append(observer)

    def seal(self, refusal: str) -> list[Component]:
        """Refuse new components from now on (message ``refusal``); return those attached."""
        with self._lock:
            self._sealed = True
            self._refusal = refusal
            return list(self._items.values())

    @property
    def sealed(self) -> bool:
        """True once the LoopThread began stopping."""
        return self._sealed

    def __iter__(self) -> Iterator[Component]:
        with self._lock:
            return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def after_fork_in_child(self) -> None:
        """Tell each component (in the forked child; the lock was re-created already).

        Nothing is written to this object here: on free-threaded builds an object that the
        parent's threads contended for when fork() came can have its own mutex left held in
        the child (CPython gh-144513), and an attribute store takes it.
        """
        for component in list(self._items.values()):
            try:
                component.after_fork_in_child()
            except Exception:  # noqa: BLE001 - one component must not break the child
                pass
