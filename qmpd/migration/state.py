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

The postcopy states exist for name compatibility only; nothing enters them. The machine
is the generic :class:`qmpd.statemachine.StateMachine` (``set``, compare-and-set ``cas``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from qmpd.errors import MigrationError
from qmpd.statemachine import StateError, StateMachine

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


class MigrationStateError(StateError, MigrationError):
    """An illegal status transition was requested (a bug in the caller)."""


class StatusMachine(StateMachine[MigrationStatus]):
    """One direction's migration status; ``set``/``cas`` are the only ways it changes.

    Every change is logged and emits ``MIGRATION`` (before any other listener) when
    ``events_on()`` is true, except that the incoming side's ``setup`` is always emitted
    (QEMU).

    :param direction: ``"outgoing"`` or ``"incoming"`` (names the machine in logs).
    :param emit: the event sink.
    :param events_on: reads capability ``events`` at emit time.
    """

    def __init__(self, direction: str, emit: EmitFn, events_on: Callable[[], bool]) -> None:
        super().__init__(MigrationStatus.NONE, TRANSITIONS,
                         name=f"{direction} migration status",
                         error=MigrationStateError, logger=log)
        self.direction = direction
        self._emit = emit
        self._events_on = events_on
        self.add_listener(self._emit_event)

    @property
    def status(self) -> MigrationStatus:
        """The current status (QEMU's word for the state)."""
        return self.state

    @property
    def is_running(self) -> bool:
        """True while a migration is in progress in this direction."""
        return self.state in RUNNING

    def _emit_event(self, _old: MigrationStatus, new: MigrationStatus) -> None:
        always = self.direction == "incoming" and new is MigrationStatus.SETUP
        if always or self._events_on():
            self._emit("MIGRATION", {"status": new.value})
