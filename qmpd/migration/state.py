"""Migration status: QEMU's ``MigrationStatus`` names, one transition table, one setter.

Users: :class:`qmpd.migration.manager.MigrationManager` (the only writer) and, through
``query-migrate`` and the ``MIGRATION`` event, every QMP client. A process has one
:class:`StatusMachine` per direction (outgoing, incoming); both start in ``none``.

Transitions follow QEMU 7.2's ``migrate_set_state`` call sites (migration/migration.c):

::

    none ─► setup ─► active ─────────────► completed
              │        │  └─► colo ──────► completed | failed
              │        └─► (pre-switchover ─► device) ─► completed | colo
              └────────┴─► failed
              └────────┴─► cancelling ─► cancelled | failed
    completed | failed | cancelled ─► setup      (a new migration)

The postcopy states exist for name compatibility only; nothing enters them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from qmpd.errors import MigrationError

log = logging.getLogger(__name__)

#: ``emit(event_name, data)``: the EventBus seam (``EventBus.emit``), injected.
EmitFn = Callable[[str, dict[str, object] | None], None]


class MigrationStatus(enum.Enum):
    """QEMU's MigrationStatus (qapi/migration.json), in QEMU's order."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    POSTCOPY_ACTIVE = "postcopy-active"
    POSTCOPY_PAUSED = "postcopy-paused"
    POSTCOPY_RECOVER = "postcopy-recover"
    COMPLETED = "completed"
    FAILED = "failed"
    COLO = "colo"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    WAIT_UNPLUG = "wait-unplug"


_S = MigrationStatus
_NEW = frozenset({_S.SETUP})

#: The one transition table. Anything not listed is a bug and raises.
TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    _S.NONE: _NEW,
    _S.SETUP: frozenset({_S.ACTIVE, _S.FAILED, _S.CANCELLING}),
    _S.ACTIVE: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLING, _S.COLO,
                          _S.PRE_SWITCHOVER, _S.DEVICE}),
    _S.PRE_SWITCHOVER: frozenset({_S.DEVICE, _S.FAILED, _S.CANCELLING}),
    _S.DEVICE: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLING, _S.COLO}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED}),
    _S.COLO: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: _NEW,
    _S.FAILED: _NEW,
    _S.CANCELLED: _NEW,
    _S.POSTCOPY_ACTIVE: frozenset(),
    _S.POSTCOPY_PAUSED: frozenset(),
    _S.POSTCOPY_RECOVER: frozenset(),
    _S.WAIT_UNPLUG: frozenset(),
}

#: States in which a migration is "running" (QEMU 7.2's ``migration_is_running``).
RUNNING: frozenset[MigrationStatus] = frozenset({
    _S.SETUP, _S.ACTIVE, _S.PRE_SWITCHOVER, _S.DEVICE, _S.WAIT_UNPLUG, _S.CANCELLING,
    _S.POSTCOPY_ACTIVE, _S.POSTCOPY_PAUSED, _S.POSTCOPY_RECOVER,
})

#: States that end a migration.
FINAL: frozenset[MigrationStatus] = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED})


class MigrationStateError(MigrationError):
    """An illegal status transition was requested (a bug in the caller)."""

    def __init__(self, old: MigrationStatus, new: MigrationStatus) -> None:
        super().__init__(f"invalid migration status transition: '{old.value}' -> '{new.value}'")
        self.old = old
        self.new = new


class StatusMachine:
    """One direction's migration status; :meth:`set` is the only way it changes.

    :param direction: ``"outgoing"`` or ``"incoming"`` (for logs).
    :param emit: the event sink; ``MIGRATION`` is emitted only when ``events_on()``
        is true, except that the incoming side's ``setup`` is always emitted (QEMU).
    :param events_on: reads capability ``events`` at emit time.
    """

    def __init__(self, direction: str, emit: EmitFn, events_on: Callable[[], bool]) -> None:
        self.direction = direction
        self._emit = emit
        self._events_on = events_on
        self._status = MigrationStatus.NONE
        self._listeners: list[Callable[[MigrationStatus, MigrationStatus], None]] = []

    @property
    def status(self) -> MigrationStatus:
        """The current status."""
        return self._status

    @property
    def is_running(self) -> bool:
        """True while a migration is in progress in this direction."""
        return self._status in RUNNING

    def add_listener(self, cb: Callable[[MigrationStatus, MigrationStatus], None]) -> None:
        """Call ``cb(old, new)`` after every transition."""
        self._listeners.append(cb)

    def set(self, new: MigrationStatus) -> None:
        """Move to ``new`` (the single ``_set_state``): check, log, emit, notify.

        :raise MigrationStateError: if the table does not allow it.
        """
        old = self._status
        if new not in TRANSITIONS[old]:
            raise MigrationStateError(old, new)
        self._status = new
        log.info("migration %s: %s -> %s", self.direction, old.value, new.value)
        always = self.direction == "incoming" and new is MigrationStatus.SETUP
        if always or self._events_on():
            self._emit("MIGRATION", {"status": new.value})
        for cb in self._listeners:
            cb(old, new)

    def set_if(self, old: MigrationStatus, new: MigrationStatus) -> bool:
        """Compare-and-set like QEMU's ``migrate_set_state(&state, old, new)``."""
        if self._status is not old:
            return False
        self.set(new)
        return True
