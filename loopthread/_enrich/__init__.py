"""Enricher chains: add context to an event with many async lookups, each bounded and isolated.

An enricher is any callable ``(event) -> Mapping | None``: an ``async def`` function, an object
with an async ``__call__`` (and optionally ``name``, ``timeout``, ``max_concurrency``,
``async startup()``, ``async shutdown()``), or a plain function, which runs in the loop thread's
shared executor; or an object with an async ``enrich(event)`` method and ``start()``/``stop()``
hooks (fapilog's enrichers).

The package, one concern per module (each module's docstring says why it is built its way):

* ``_chain``: :class:`EnricherChain`, configuration, ``enrich``/``enrich_sync``, stats, the
  binding to a loop, its part in the LoopThread's lifecycle;
* ``_eager``: calling the enrichers, each one's first step in the caller's task, a Task only
  for those that await, their ``max_concurrency`` places, and recording each call's outcome;
* ``_breaker``: the circuit breaker of one enricher, pure, its clock injected;
* ``_hooks``: the enrichers' ``startup()`` and ``shutdown()``;
* ``_merge``: how fields go into the event (``merge="flat"``, ``"deep"``, a user function);
* ``_slots``: :func:`enricher`, and one enricher's slot in a chain: its settings and counters.
"""

from loopthread._enrich._chain import EnricherChain
from loopthread._enrich._slots import enricher
from loopthread._stats import ChainStats, EnricherStats

__all__ = ["ChainStats", "EnricherChain", "EnricherStats", "enricher"]
