"""The process-wide default LoopThread behind ``loopthread.default()``; its only owner.

Created lazily, started outside the lock (``start()`` waits for another thread, and nothing
here waits while holding a lock), replaced once it stopped or died, and forgotten in a forked
child, where its thread does not exist. Work that the default loop itself runs (on its loop
thread or in its executor) gets that loop, even while it is stopping or draining at exit:
asking for "the default loop" from inside it never starts a second one.

Its options come from :func:`configure_default`, else from ``LOOPTHREAD_*`` environment
variables (for deployments that cannot change code), else from ``LoopThread``'s defaults; they
survive ``fork()``, so a child's default loop is made like its parent's.
:func:`resource` declares a value of "the default loop of whichever process uses it": created
lazily in each process, on that process's loop, closed when that loop stops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from loopthread import _process
from loopthread._exceptions import LoopNotRunningError, LoopThreadError
from loopthread._loopthread import LoopThread
from loopthread._resource import Resource, check_resource_args

__all__ = ["DefaultResource", "configure_default", "default", "resource"]

T = TypeVar("T")

NAME = "loopthread-default"

#: The LoopThread options configure_default() takes (all but the name).
OPTIONS = frozenset(
    {
        "loop_factory",
        "uvloop",
        "executor_workers",
        "cancel_grace",
        "metrics_registry",
        "lag_interval",
        "slow_callback",
    }
)

_lock = _process.fork_safe_lock()
_default: LoopThread | None = None
_options: dict[str, Any] = {}  # configure_default()'s, as given
_default_options: dict[str, Any] = {}  # those the current default was made with


def default() -> LoopThread:
    """Return the process-wide LoopThread, started; create (or replace a dead) one if needed.

    It is made with the options of :func:`configure_default` (else ``LOOPTHREAD_*``
    environment variables, else ``LoopThread``'s defaults).

    Raises:
        LoopNotRunningError: the interpreter is shutting down.
        ValueError: a ``LOOPTHREAD_*`` environment variable has a value it does not take.
    """
    lt = _default
    if lt is not None and (lt.running or lt.owns_current_thread()):  # the hot path: no lock
        return lt
    return _make_default()


def current_default() -> LoopThread | None:
    """The default LoopThread as it is now (None if none was made in this process)."""
    return _default


def configure_default(**options: Any) -> None:
    """Set the options of the process-wide LoopThread behind :func:`default`.

    Takes ``LoopThread``'s keyword options (``uvloop``, ``executor_workers``,
    ``cancel_grace``, ``metrics_registry``, ``lag_interval``, ``slow_callback``,
    ``loop_factory``), which replace everything configured before (an empty call restores the
    defaults). Call it at start-up, before the first ``default()``/``loopthread.run()``; under
    a pre-fork server it may be called in the master or in each worker (the options survive
    ``fork()``). Options given here win over ``LOOPTHREAD_*`` environment variables.

    Raises:
        TypeError: an unknown option, or a value ``LoopThread()`` refuses.
        ValueError: a value ``LoopThread()`` refuses.
        LoopThreadError: the default LoopThread already runs with other options.
    """
    global _options
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(
            f"configure_default() got unknown option(s) {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(OPTIONS))} (the default loop's name is always {NAME!r})."
        )
    # LoopThread checks every value now, not at the first default(); it is never started.
    LoopThread(NAME, **options)
    with _lock:
        lt = _default
        # "new" too: another thread's default() made it and is about to start it.
        live = lt is not None and lt.state in ("new", "starting", "running")
        if live and _effective(options) != _default_options:
            raise LoopThreadError(
                f"configure_default() was called after the default LoopThread started with "
                f"other options ({_describe(_default_options)}); configure it at start-up, "
                "before the first loopthread.default() or loopthread.run(), or stop the "
                "running one first (loopthread.default().stop())."
            )
        _options = dict(options)


def resource(
    factory: Callable[[], Awaitable[T]],
    *,
    close: Callable[[T], Awaitable[object] | object] | None = None,
    name: str | None = None,
) -> DefaultResource[T]:
    """Declare a value (a connection pool, an HTTP client) of the default loop, per process.

    Safe at import time, even in a pre-fork server's master (``gunicorn --preload``): nothing
    is created and no loop is started until ``await res.get()`` runs on the default loop of
    some process; each process (and each default LoopThread, if one is replaced) then gets
    its own value, closed when that loop stops. A parent's value is never used in a child.

    Raises:
        TypeError: ``factory`` or ``close`` is not callable, or ``name`` is not a str.
    """
    return DefaultResource(factory, close=close, name=name)


class DefaultResource(Generic[T]):
    """A :class:`~loopthread.Resource` of whichever default loop runs in this process.

    Made by :func:`loopthread.resource`; ``await res.get()`` on the default loop returns the
    value, created on first use in this process.
    """

    __slots__ = ("_bound", "_close", "_factory", "_name")

    def __init__(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        close: Callable[[T], Awaitable[object] | object] | None = None,
        name: str | None = None,
    ) -> None:
        check_resource_args(factory, close, name, "loopthread.resource()")
        self._factory = factory
        self._close = close
        self._name = name or getattr(factory, "__qualname__", None) or type(factory).__qualname__
        self._bound: tuple[LoopThread, Resource[T]] | None = None

    @property
    def name(self) -> str:
        """The name given, or the factory's name (used in logs)."""
        return self._name

    @property
    def created(self) -> bool:
        """True while this process's default loop holds a created value."""
        bound = self._bound
        return bound is not None and bound[0] is _default and bound[1].created

    async def get(self) -> T:
        """Return this process's value, creating it on first use.

        Raises:
            LoopThreadError: awaited on another loop than the default one (use
                ``loopthread.run(...)`` or ``default().submit(...)``).
            BaseException: whatever the factory raised (the next ``get()`` tries again).
        """
        lt = default()  # on the default loop's own thread: that loop, never a new one
        bound = self._bound
        if bound is None or bound[0] is not lt:
            # This runs on one thread (the loop's) without awaiting: no two bindings race.
            bound = (lt, lt.resource(self._factory, close=self._close, name=self._name))
            self._bound = bound
        return await bound[1].get()

    def __repr__(self) -> str:
        state = "created" if self.created else "not created"
        return f"<DefaultResource {self._name!r} {state} in process {os.getpid()}>"


def _make_default() -> LoopThread:
    global _default, _default_options
    with _lock:
        lt = _default
        if lt is None or lt.state in ("stopping", "stopped", "dead"):
            if _process.exiting():
                raise LoopNotRunningError(
                    "the interpreter is shutting down and loopthread's default loop has stopped; "
                    "work submitted from atexit handlers cannot run on it."
                )
            options = _effective(_options)
            try:
                lt = LoopThread(NAME, **options)
            except (TypeError, ValueError) as exc:
                from_env = sorted(set(_from_environment(os.environ)) - set(_options))
                if not from_env:
                    raise
                raise type(exc)(
                    f"{exc} (the default LoopThread's {', '.join(from_env)} came from LOOPTHREAD_* "
                    "environment variables)"
                ) from exc
            _default, _default_options = lt, options
    lt.start()  # concurrent callers share it: start() is idempotent and waits for the loop
    return lt


def _effective(options: Mapping[str, Any]) -> dict[str, Any]:
    """The environment's options, overridden by ``options``."""
    return {**_from_environment(os.environ), **options}


def _seconds_or_off(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", ""):
        return None
    value = float(text)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


def _metrics(text: str) -> Any:
    if _flag(text):
        from prometheus_client import REGISTRY

        return REGISTRY
    return None


#: Environment variable -> (option, parser, what it takes).
_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "LOOPTHREAD_UVLOOP": ("uvloop", _flag, "1 or 0"),
    "LOOPTHREAD_EXECUTOR_WORKERS": ("executor_workers", int, "a number of threads"),
    "LOOPTHREAD_CANCEL_GRACE": ("cancel_grace", _seconds_or_off, "seconds, or none (no limit)"),
    "LOOPTHREAD_LAG_INTERVAL": ("lag_interval", _seconds_or_off, "seconds, or off"),
    "LOOPTHREAD_SLOW_CALLBACK": ("slow_callback", _seconds_or_off, "seconds, or off"),
    "LOOPTHREAD_METRICS": ("metrics_registry", _metrics, "1 (the default registry) or 0"),
}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for variable, (option, parse, takes) in _ENVIRONMENT.items():
        text = environ.get(variable)
        if text is None:
            continue
        try:
            options[option] = parse(text)
        except ValueError:
            raise ValueError(
                f"the environment variable {variable}={text!r} is not valid: it takes {takes} "
                f"(it sets the default LoopThread's {option})."
            ) from None
    return options


def _describe(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in sorted(options.items())) or "defaults"


def _forget_in_child() -> None:
    global _default
    _default = None


_process.on_fork_in_child(_forget_in_child)
