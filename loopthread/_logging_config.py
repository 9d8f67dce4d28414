"""LoopHandler's configuration glue: wrapped handlers given by name, and enrichers given as
configuration (``logging.config.dictConfig``).

* ``handler_names`` are checked when the LoopHandler is built: each must be a str naming a
  handler of the ``dictConfig`` call building it, or one already configured; a typo fails
  there (dictConfig raises) with the names that exist, instead of every later record going
  nowhere. Names already built are resolved at once; names dictConfig builds later (it builds
  handlers in sorted order) are resolved once, under a lock, when the first record needs them.
* ``enrichers`` from dictConfig arrive as a ``ConvertingList``, whose items convert
  (``ext://pkg.fn`` to the function) only when indexed, not when iterated; items may also be
  dicts giving one enricher its own options (``{"fn": "ext://pkg.fn", "timeout": 0.5}``).
"""

from __future__ import annotations

import inspect
import logging
import sys
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from loopthread._process import fork_safe_lock

if TYPE_CHECKING:
    from loopthread._enrich import EnricherChain
    from loopthread._loopthread import LoopThread

__all__ = ["NamedHandlers", "dictconfig_site", "make_chain"]


# ---------------------------------------------------------------------- dictConfig


def dictconfig_site() -> tuple[Mapping[str, object] | None, str | None]:
    """The handler table of the ``logging.config.dictConfig`` call building the caller, if any,
    and the name of the handler it is building.

    dictConfig keeps the handlers it creates only in its own config dict and in logging's
    weak registry, and fills the table in as it goes (a name maps to its config dict until
    that handler is built, then to the handler).
    """
    import logging.config

    frame: types.FrameType | None = sys._getframe(1)
    table: Mapping[str, object] | None = None
    configurator: object = None
    for _ in range(16):  # dictConfig -> configure -> configure_handler -> factory -> us
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, logging.config.DictConfigurator):
            if configurator is None:
                configurator = candidate
                handlers = candidate.config.get("handlers")
                table = handlers if isinstance(handlers, Mapping) else None
            if candidate is configurator and frame.f_code.co_name == "configure":
                name = frame.f_locals.get("name")
                return table, name if isinstance(name, str) else None
        frame = frame.f_back
    return table, None


def _registered() -> dict[str, logging.Handler]:
    """Handlers known to logging by name (configured earlier)."""
    refs: Any = getattr(logging, "_handlers", {})
    out: dict[str, logging.Handler] = {}
    for name in list(refs.keys()):
        handler = refs.get(name)
        if isinstance(handler, logging.Handler):
            out[str(name)] = handler
    return out


class NamedHandlers:
    """The handlers named in ``handler_names``: checked at construction, resolved under a lock.

    Raises (at construction):
        TypeError: ``names`` is a str, or holds something other than a non-empty str.
        ValueError: a name that neither the dictConfig call building us nor logging knows,
            or the LoopHandler's own name.
    """

    __slots__ = ("_lock", "_names", "_resolved", "_slots", "_table")

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes) or not isinstance(names, Iterable):
            raise TypeError(
                f"handler_names takes a list of names, e.g. [{names!r}], not a "
                f"{type(names).__name__}."
            )
        listed = list(names)
        for index, name in enumerate(listed):
            if not isinstance(name, str) or not name:
                raise TypeError(
                    f"handler_names[{index}] must be the name of a handler (a non-empty str); "
                    f"got {name!r}. Name handlers configured under 'handlers' in the same "
                    "dictConfig, or pass the handler objects themselves."
                )
        self._names = listed
        self._lock = fork_safe_lock()
        self._table: Mapping[str, object] | None = None
        self._slots: list[logging.Handler | None] = []
        self._resolved: list[logging.Handler] | None = [] if not listed else None
        if not listed:
            return
        table, building = dictconfig_site()
        registered = _registered()
        in_table = set(table.keys()) if table is not None else set()
        for name in listed:
            if name == building:
                raise ValueError(
                    f"LoopHandler {name!r} names itself in handler_names; name the handlers "
                    "it should write to."
                )
            if name not in in_table and name not in registered:
                known = sorted((in_table | set(registered)) - {building})
                raise ValueError(
                    f"LoopHandler: no logging handler named {name!r}. Handlers that exist: "
                    f"{', '.join(map(repr, known)) if known else 'none'}. Fix the name in "
                    "handler_names, or configure that handler under 'handlers' in the same "
                    "dictConfig."
                )
        for name in listed:
            found = table.get(name) if table is not None and name in in_table else None
            if not isinstance(found, logging.Handler):
                found = registered.get(name) if name not in in_table else None
            self._slots.append(found)
        # Held until every name is resolved: dictConfig's table is the only strong reference
        # to the handlers it builds after us (logging's registry is weak).
        self._table = table if any(slot is None for slot in self._slots) else None
        if self._table is None:
            self._resolved = [slot for slot in self._slots if slot is not None]

    @property
    def names(self) -> list[str]:
        """The names, in order."""
        return list(self._names)

    def resolve(self) -> tuple[list[logging.Handler], list[str]]:
        """The named handlers in order, and the names that are still missing (each record is
        then counted as not written by them)."""
        resolved = self._resolved
        if resolved is not None:
            return resolved, []
        with self._lock:
            if self._resolved is not None:
                return self._resolved, []
            table = self._table
            registered: dict[str, logging.Handler] | None = None
            missing: list[str] = []
            for index, name in enumerate(self._names):
                if self._slots[index] is not None:
                    continue
                found = table.get(name) if table is not None else None
                if not isinstance(found, logging.Handler):
                    if registered is None:
                        registered = _registered()
                    found = registered.get(name)
                if isinstance(found, logging.Handler):
                    self._slots[index] = found
                else:
                    missing.append(name)
            handlers = [slot for slot in self._slots if slot is not None]
            if not missing:
                self._table = None
                self._resolved = handlers
            return handlers, missing


# ---------------------------------------------------------------------- enrichers

_OPTIONS = ("fn", "name", "timeout", "max_concurrency")


def make_chain(
    enrichers: object, timeout: float | None, loop_thread: LoopThread | None, name: str
) -> EnricherChain | None:
    """The chain for ``LoopHandler(enrichers=...)``: the chain given, or one built (named
    ``name``) from a list of enrichers and enricher dicts; None for an empty list.

    Raises:
        TypeError, ValueError: ``enrichers`` is not a chain or a list of enrichers, or an
            enricher dict has an unknown key or a bad value.
    """
    from loopthread._enrich import EnricherChain

    if isinstance(enrichers, EnricherChain):
        return enrichers
    if isinstance(enrichers, str | bytes | Mapping) or not isinstance(enrichers, Iterable):
        raise TypeError(
            "LoopHandler(enrichers=...) takes an EnricherChain or a list of enrichers (async "
            f"callables taking the record's fields); got {type(enrichers).__name__}. "
            "Pass enrichers=[add_region] or enrichers=loopthread.EnricherChain([...])."
        )
    listed: list[Any] = [_enricher(item, index) for index, item in enumerate(_converted(enrichers))]
    if not listed:
        return None
    return EnricherChain(listed, timeout=timeout, loop_thread=loop_thread, name=name)


def _converted(items: Iterable[Any]) -> list[Any]:
    import logging.config

    if isinstance(items, logging.config.ConvertingList | logging.config.ConvertingTuple):
        # Iterating a ConvertingList yields the raw strings; indexing converts them.
        return [items[index] for index in range(len(items))]
    return list(items)


def _not_a_string(value: object, where: str) -> None:
    if not isinstance(value, str):
        return
    if value.startswith("ext://"):
        hint = (
            "'ext://' is converted by logging.config.dictConfig only; in code, pass the "
            "function itself"
        )
    else:
        hint = (
            f"in logging.config.dictConfig write 'ext://{value}' so that logging imports it; "
            "in code, pass the function itself"
        )
    raise TypeError(f"{where} is the string {value!r}, not an enricher: {hint}.")


def _enricher(item: object, index: int) -> object:
    where = f"enrichers[{index}]"
    _not_a_string(item, where)
    if not isinstance(item, Mapping):
        return item
    unknown = sorted(str(key) for key in item if key not in _OPTIONS)
    if unknown:
        raise ValueError(
            f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; an enricher dict "
            f"takes {', '.join(map(repr, _OPTIONS))}, e.g. "
            "{'fn': 'ext://myapp.lookup_user', 'timeout': 0.5}."
        )
    if "fn" not in item:
        raise ValueError(
            f"{where} is a dict without 'fn': give the enricher as "
            "{'fn': 'ext://myapp.lookup_user', 'timeout': 0.5}."
        )
    fn = item["fn"]  # a ConvertingDict converts 'ext://' here
    _not_a_string(fn, f"{where}['fn']")
    from loopthread._enrich import enricher

    options: dict[str, Any] = {key: item[key] for key in ("name", "timeout") if key in item}
    if item.get("max_concurrency") is not None:
        if "max_concurrency" not in inspect.signature(enricher).parameters:
            raise ValueError(
                f"{where}: max_concurrency is not supported by this version of loopthread's "
                "enricher chains; remove it (or upgrade)."
            )
        options["max_concurrency"] = item["max_concurrency"]
    return enricher(fn, **options)
