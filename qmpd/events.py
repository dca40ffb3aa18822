"""The event bus: every QMP event passes through :meth:`EventBus.emit`.

Users: command handlers and the daemon emit (``SHUTDOWN``; later ``STOP``/``RESUME``,
``MIGRATION``, ``COLO_EXIT``); the QMP server subscribes and fans each event out to
every negotiated session's bounded output (see :mod:`qmpd.qmp.session`); the web
layer and tests may subscribe too. Loop thread only: other threads use
``loop.call_soon_threadsafe(bus.emit, ...)``.

An emitted event is checked against schema.json (the validator is injected by the
daemon), stamped with the wall clock as QEMU does (``seconds``/``microseconds``) and
delivered synchronously, so it is ordered with the replies written around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One emitted event."""

    name: str
    data: dict[str, Any] | None
    seconds: int
    microseconds: int


EventSubscriber = Callable[[Event], None]
EventValidator = Callable[[str, "dict[str, Any] | None"], None]


class EventBus:
    """Stamps events and delivers them to subscribers in subscription order."""

    def __init__(self, validate: EventValidator | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._validate = validate
        self._clock = clock
        self._subscribers: list[EventSubscriber] = []

    def subscribe(self, subscriber: EventSubscriber) -> Callable[[], None]:
        """Deliver every later event to ``subscriber``; returns an unsubscribe function."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, name: str, data: dict[str, Any] | None = None) -> Event:
        """Emit one event.

        :raise qmpd.schema.SchemaError: if the event or its data is not in schema.json.
        """
        if self._validate is not None:
            self._validate(name, data)
        now = self._clock()
        seconds = int(now)
        event = Event(name, data, seconds, int((now - seconds) * 1_000_000))
        log.debug("event %s %s", name, data)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("event subscriber failed for %s", name)
        return event
