"""What a blocking call checks about its caller before the hand-off: the context it carries
into the loop (without the caller's sniffio marker) and an event loop that may be running in
the caller's own thread (it works, but that loop stands still: warn once per call site)."""

from __future__ import annotations

import contextvars
import sys
import threading
import warnings

from loopthread._core._call import Call
from loopthread._exceptions import BlockingInLoopWarning

__all__ = ["call_context", "warn_if_in_a_loop"]


_sniffio_cvar: contextvars.ContextVar[str | None] | None = None  # once sniffio is imported


def call_context() -> contextvars.Context:
    """The caller's context for a call, minus sniffio's "which async library runs me" marker:
    a caller inside a trio (or anyio-on-trio) program must not make anyio or httpx code on
    this asyncio loop think it runs under trio (anyio's #523).

    Also taken per item by channels with ``context="producer"``, so sniffio's variable is
    looked up once: with sniffio imported this took ~225 ns, now ~50 (``copy_context()``
    itself is ~20)."""
    global _sniffio_cvar
    context = contextvars.copy_context()
    cvar = _sniffio_cvar
    if cvar is None:
        sniffio = sys.modules.get("sniffio")
        if sniffio is None:
            return context
        cvar = _sniffio_cvar = getattr(sniffio, "current_async_library_cvar", None)
        if cvar is None:
            return context
    if cvar in context and context[cvar] is not None:
        context.run(cvar.set, None)
    return context


def warn_if_in_a_loop(call: Call, api: str, name: str, loop_thread_id: int | None) -> None:
    """Warn that ``api`` blocks the loop running in this thread (see BlockingInLoopWarning);
    if a filter turned the warning into an error, close ``call``'s coroutine first."""
    try:
        _warn(api, name, loop_thread_id)
    except BaseException:  # nothing was queued
        call.close_unstarted()
        raise


def _warn(api: str, name: str, loop_thread_id: int | None) -> None:
    """Warn (once per call site) that ``api`` blocks the event loop running in this thread."""
    if threading.get_ident() == loop_thread_id:
        return  # our own loop: WouldDeadlockError says more
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "loopthread."
    ):
        frame = frame.f_back
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(
        BlockingInLoopWarning(
            f"{api}() was called from a thread whose own event loop is running: that loop stands "
            f"still until the coroutine finishes on LoopThread {name!r}. In async code use "
            "`await lt.arun(coro)`. (Shown once per call site; make it an error or silence it "
            "with warnings.filterwarnings(..., category=loopthread.BlockingInLoopWarning).)"
        ),
        BlockingInLoopWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        frame.f_globals.get("__name__"),
        registry,
    )
