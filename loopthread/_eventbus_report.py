"""What producers hand an event bus: :class:`Reporter` (``report`` and ``publish``), the
check of a ready-made event, and the bus's stats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopthread._eventbus_dispatch import Event

if TYPE_CHECKING:
    from loopthread._channel import ChannelStats
    from loopthread._eventbus import EventBus

__all__ = ["EventBusStats", "Reporter", "event_of"]


@dataclass(frozen=True, slots=True)
class EventBusStats:
    """A snapshot of an event bus's counters.

    Attributes:
        channel: the stats of the bus's channel (None until the first event).
        events: events that had at least one handler.
        unknown: events whose type had no handler (counted and ignored).
        handler_calls: handler calls made (on the loop and in the executor).
        handler_failures: handler calls that raised (each logged; the others still ran), and
            events an executor handler could not be given (its lane could not be opened).
        lanes: the stats of each executor handler's lane (a channel named
            ``event-bus-N/executor-K``, K counting executor handlers in registration order).
    """

    channel: ChannelStats | None
    events: int
    unknown: int
    handler_calls: int
    handler_failures: int
    lanes: tuple[ChannelStats, ...] = ()


class Reporter:
    """What a worker thread holds to report events to an :class:`EventBus`; thread-safe.

    Get one with :meth:`EventBus.reporter`.
    """

    __slots__ = ("_bus",)

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def report(self, event_type: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue the event ``{"type": event_type, **data}`` for the bus's handlers.

        The dict is built here, so the caller may reuse or change ``data`` afterwards.
        Returns True when queued, False when the bus's overflow policy dropped it; with
        ``"block"`` (the default) it waits for room while the bus is full. The handlers run
        in a copy of the caller's ``contextvars``.

        Raises:
            TypeError: ``event_type`` is not a str, or ``data`` is not a mapping.
            ValueError: ``data`` has a ``"type"`` key (the event type goes in ``event_type``,
                or pass the whole event to :meth:`publish`).
            ChannelClosedError: the bus was closed.
            ChannelFullError: the bus is full and its policy is ``"error"``.
            LoopNotRunningError: the bus's explicit ``loop_thread`` is not running.
        """
        if not isinstance(event_type, str):
            raise TypeError(
                f"event_type must be a str such as 'progress'; got {type(event_type).__name__} "
                f"{event_type!r}."
            )
        if data is None:
            event: Event = {"type": event_type}
        else:
            try:
                if "type" in data:
                    raise ValueError(
                        f"data must not have a 'type' key (got {data['type']!r}): the event "
                        f"type is the first argument, report({event_type!r}, data); for an "
                        "event dict that has its type, use publish(event)."
                    )
                event = {"type": event_type, **data}
            except TypeError:
                raise TypeError(
                    f"data must be a mapping such as {{'done': 3}}; got {type(data).__name__}."
                ) from None
        return self._bus._put(event)

    def publish(self, event: Mapping[str, Any]) -> bool:
        """Queue a ready-made event (a mapping with a str ``"type"``); see
        :meth:`EventBus.publish`."""
        return self._bus.publish(event)

    def __repr__(self) -> str:
        return f"<Reporter of {self._bus!r}>"


def event_of(event: object) -> Event:
    """A copy of ``event`` as the bus's event dict; see EventBus.publish for the errors."""
    if type(event) is not dict and not isinstance(event, Mapping):  # the ABC check is slow
        raise TypeError(
            "event must be a mapping with a 'type' key, such as {'type': 'progress', "
            f"'done': 3}}; got {type(event).__name__}. For a type and its data apart, use "
            "reporter.report('progress', data)."
        )
    try:
        event_type = event["type"]
    except KeyError:
        raise ValueError(
            f"event has no 'type' key (its keys: {sorted(map(str, event))[:10]}): add one, "
            "such as {'type': 'progress', ...}, or use reporter.report('progress', event)."
        ) from None
    if not isinstance(event_type, str):
        raise TypeError(
            f"event['type'] must be a str such as 'progress'; got "
            f"{type(event_type).__name__} {event_type!r}."
        )
    return dict(event)
