"""What belongs to the caller of a log call, resolved in the caller before ``offload`` hands the
event to the loop.

Design notes (why it is built this way):

* The processors after ``offload`` run later, on another thread. Whatever they would read from
  the caller's thread at call time is taken here, at call time, or it is silently wrong:
  ``sys.exc_info()`` is empty on the loop thread (the traceback vanished), the stack and the
  callsite are the loop's (they pointed into loopthread), the clock has moved on (a burst
  queued for a second is stamped a second late), and the caller may change the objects it
  logged before they are rendered.
* So the caller pays for: a copy of the event dict with its built-in containers copied
  (:func:`snapshot`; other objects are shared, so render or copy mutable objects of your own
  before ``offload``); ``exc_info`` turned into the ``(type, value, traceback)`` tuple that
  every structlog exception processor accepts (:func:`resolve_exc_info`; formatting it stays
  on the loop); a ``contextvars.copy_context()`` (O(1)), in which the processors after
  ``offload`` and a sync sink then run, so ``merge_contextvars`` placed after ``offload``
  still reads the caller's request id; and the processors :func:`split` moves in front:
  ``TimeStamper``, ``StackInfoRenderer``, ``CallsiteParameterAdder`` and ``set_exc_info``.
* Those moved processors run with structlog's own "calling stack" contextvar pointing at the
  caller's frame (the hook structlog's async log methods use for the same reason), so the
  stack and callsite they find are the application's, not loopthread's.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, MutableMapping, Sequence
from types import FrameType
from typing import Any

import structlog

calling_stack: contextvars.ContextVar[FrameType] | None
try:
    from structlog.contextvars import _ASYNC_CALLING_STACK

    calling_stack = _ASYNC_CALLING_STACK
except ImportError:  # pragma: no cover - structlog < 23.3: the callsite is found from here
    calling_stack = None

__all__ = ["calling_stack", "resolve_exc_info", "snapshot", "split"]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]

_CALLER_CLASSES = (
    structlog.processors.TimeStamper,
    structlog.processors.StackInfoRenderer,
    structlog.processors.CallsiteParameterAdder,
)
_CALLER_FUNCTIONS = (structlog.dev.set_exc_info,)

# Deep enough for any event a person logs; deeper containers are shared, not copied (and a
# container that contains itself is not followed forever).
_DEPTH = 8


def split(processors: Sequence[Processor]) -> tuple[list[Processor], list[Processor]]:
    """``(in_caller, on_loop)``: the processors that read the caller's clock, stack or thread,
    each in its order, and the others."""
    in_caller: list[Processor] = []
    on_loop: list[Processor] = []
    for processor in processors:
        if isinstance(processor, _CALLER_CLASSES) or any(processor is f for f in _CALLER_FUNCTIONS):
            in_caller.append(processor)
        else:
            on_loop.append(processor)
    return in_caller, on_loop


def snapshot(event_dict: EventDict) -> dict[str, Any]:
    """A copy of ``event_dict`` whose dicts, lists, tuples and sets are copies too."""
    copy = dict(event_dict)  # in C; then only the containers are replaced
    if _COPIED_KEYS.isdisjoint(map(type, event_dict.values())):  # the usual event: no container
        return copy
    for key, value in event_dict.items():
        if type(value) in _COPIED:
            copy[key] = _copy(value, _DEPTH)
    return copy


def _copy(value: Any, depth: int) -> Any:
    if depth == 0:
        return value
    kind = type(value)
    if kind is dict:
        return {k: _copy(v, depth - 1) if type(v) in _COPIED else v for k, v in value.items()}
    if kind is list:
        return [_copy(v, depth - 1) if type(v) in _COPIED else v for v in value]
    if kind is tuple:
        return tuple([_copy(v, depth - 1) if type(v) in _COPIED else v for v in value])
    return set(value)  # elements of a set are hashable: not containers to copy


# A dict, not a frozenset: every logging thread reads it, and on free-threaded 3.13 a set
# lookup takes the set's own mutex; one contended when fork() came can be left held in the
# child (CPython gh-144513), hanging its first log call. A dict is read without a lock there.
_COPIED = dict.fromkeys((dict, list, tuple, set))
_COPIED_KEYS = _COPIED.keys()


def resolve_exc_info(event: dict[str, Any]) -> None:
    """``exc_info=True`` (or any true value that is not an exception) becomes the caller's
    ``sys.exc_info()``; an exception becomes its tuple, its traceback as it is now."""
    value = event.get("exc_info")
    if not value:
        return
    if isinstance(value, BaseException):
        event["exc_info"] = (type(value), value, value.__traceback__)
    elif not (type(value) is tuple and len(value) == 3):
        info = sys.exc_info()
        if info[1] is not None:
            event["exc_info"] = info
        # else: nothing is being handled here either; left as it is, it renders as it would
        # have in the caller.
