"""The processors behind ``loopthread.structlog``, one module each.

* ``_enrich``: :class:`EnrichProcessor`, an EnricherChain's fields merged into each event,
  waiting at most its timeout and never in a thread that runs an event loop;
* ``_offload``: :class:`OffloadProcessor`, the caller's chain ends with a ``put``; the rest of
  it runs on the loop.
"""
