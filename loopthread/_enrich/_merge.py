"""How an enricher's fields go into the event: ``merge="flat"`` (the default), ``"deep"``, or a
function of the user's.

Design notes (why it is built this way):

* Flat is ``dict.update``: the later enricher's value wins for a key, whatever it is. The chain
  keeps it inline (no function call per enricher) because it is the common case.
* Deep merges nested mappings key by key, so two enrichers that both return a ``context`` group
  (fapilog's ``context`` / ``diagnostics``) keep both groups' fields; anything that is not a
  mapping on both sides is replaced, as in flat. It never changes the mappings it is given: a
  nested mapping is copied before another is merged into it, so neither the caller's event nor
  what an enricher returned (often a constant) is touched.
* A user function ``merge(event, fields) -> mapping`` gets the chain's own working dict (it may
  update it in place and return it) and one enricher's fields, once per enricher that returned
  some, in the order the enrichers were given. One that raises or returns something other than a
  mapping costs that enricher's fields only: counted (``ChainStats.merge_failures``) and logged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from loopthread._enrich._slots import log
from loopthread._log import RateLimiter
from loopthread._util import describe

if TYPE_CHECKING:
    from loopthread._enrich._slots import Slot

__all__ = ["MergeFunction", "Merger", "check_merge", "deep_merge"]

MergeFunction: TypeAlias = Callable[[dict[str, Any], Mapping[str, Any]], Mapping[str, Any]]


def deep_merge(into: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``fields`` into ``into`` (changed in place and returned), nested mappings key by key.

    A nested mapping already in ``into`` is replaced by a merged copy, never changed.
    """
    for key, value in fields.items():
        if isinstance(value, Mapping):
            old = into.get(key)
            if isinstance(old, Mapping):
                into[key] = deep_merge(dict(old), value)
                continue
        into[key] = value
    return into


def check_merge(merge: object) -> MergeFunction | None:
    """The merge to use for the chain's ``merge=`` argument: None for flat (kept inline).

    Raises:
        TypeError: ``merge`` is neither a str nor a plain function.
        ValueError: ``merge`` is a str other than ``"flat"`` or ``"deep"``.
    """
    if isinstance(merge, str):
        if merge == "flat":
            return None
        if merge == "deep":
            return deep_merge
        raise ValueError(
            f"merge must be 'flat', 'deep' or a function (event, fields) -> mapping; got "
            f"{merge!r}. 'deep' merges nested mappings (such as fapilog's 'context' groups) "
            "key by key."
        )
    if not callable(merge) or inspect.iscoroutinefunction(merge):
        kind = "an async function" if callable(merge) else type(merge).__name__
        raise TypeError(
            "merge must be 'flat', 'deep' or a plain function (event, fields) -> mapping that "
            f"returns the merged event; got {kind}. It runs on the loop for every enricher "
            "result, so it must not await."
        )
    return merge


class Merger:
    """A chain's merge other than flat: the function, and what its failures cost (counted and
    logged, rate-limited); loop thread only."""

    __slots__ = ("_chain", "_function", "_limiter", "_slots", "failures")

    def __init__(self, chain: str, slots: list[Slot], function: MergeFunction) -> None:
        self._chain = chain
        self._slots = slots
        self._function = function
        self._limiter = RateLimiter()
        self.failures = 0

    def merge(self, into: dict[str, Any], fields: Mapping[str, Any], index: int) -> dict[str, Any]:
        """``into`` with the fields of enricher ``index`` merged in (``into`` if that failed)."""
        try:
            merged = self._function(into, fields)
            if type(merged) is dict:
                return merged
            if not isinstance(merged, Mapping):
                raise TypeError(
                    f"the merge function returned {type(merged).__name__}, not a mapping; it "
                    "returns the merged event (it may update the dict it is given and return it)"
                )
            return dict(merged)
        except Exception as exc:  # noqa: BLE001 - a broken merge must not cost the event
            self.failures += 1
            enricher = self._slots[index].name
            if self._limiter.allow(enricher) is not None:
                log(
                    "warning",
                    "enricher_chain.merge_failed",
                    chain=self._chain,
                    enricher=enricher,
                    error=describe(exc),
                )
            return into
