"""The VM run state: QEMU's RunState names and its transition table.

Users: the machine controller (stop/cont/reset), migration (inmigrate, finish-migrate,
postmigrate) and COLO (colo). ``query-status`` reads it. A change goes through
:meth:`RunStateHolder.set`, which checks the table, logs and calls every listener; an
illegal transition raises :class:`RunStateError` and changes nothing. The machine is the
generic :class:`qmpd.statemachine.StateMachine`.
"""

from __future__ import annotations

import enum
import logging

from qmpd.errors import MachineError
from qmpd.statemachine import StateError, StateMachine

log = logging.getLogger(__name__)


class RunState(enum.Enum):
    """QEMU's RunState (qapi/run-state.json), the values qmpd can be in."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


_R = RunState

#: Allowed transitions, after QEMU's runstate_transitions_def (softmmu/runstate.c).
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    _R.PRELAUNCH: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.INMIGRATE, _R.PAUSED}),
    _R.INMIGRATE: frozenset({_R.RUNNING, _R.PAUSED, _R.POSTMIGRATE, _R.PRELAUNCH,
                             _R.FINISH_MIGRATE, _R.SHUTDOWN, _R.COLO, _R.INTERNAL_ERROR}),
    _R.RUNNING: frozenset({_R.DEBUG, _R.INTERNAL_ERROR, _R.IO_ERROR, _R.PAUSED,
                           _R.FINISH_MIGRATE, _R.RESTORE_VM, _R.SAVE_VM, _R.SHUTDOWN,
                           _R.WATCHDOG, _R.GUEST_PANICKED, _R.COLO}),
    _R.PAUSED: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.POSTMIGRATE, _R.PRELAUNCH,
                          _R.COLO, _R.SHUTDOWN}),
    _R.POSTMIGRATE: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.PRELAUNCH, _R.PAUSED}),
    _R.FINISH_MIGRATE: frozenset({_R.RUNNING, _R.PAUSED, _R.POSTMIGRATE, _R.PRELAUNCH,
                                  _R.COLO}),
    _R.COLO: frozenset({_R.RUNNING, _R.PAUSED, _R.SHUTDOWN, _R.INTERNAL_ERROR}),
    _R.SHUTDOWN: frozenset({_R.PAUSED, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.DEBUG: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.INTERNAL_ERROR: frozenset({_R.PAUSED, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.IO_ERROR: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.RESTORE_VM: frozenset({_R.RUNNING, _R.PRELAUNCH}),
    _R.SAVE_VM: frozenset({_R.RUNNING}),
    _R.SUSPENDED: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.WATCHDOG: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
    _R.GUEST_PANICKED: frozenset({_R.PAUSED, _R.FINISH_MIGRATE, _R.PRELAUNCH}),
}

class RunStateError(StateError, MachineError):
    """An illegal run-state transition was requested (``old``, ``new``)."""


class RunStateHolder(StateMachine[RunState]):
    """Holds the current RunState; the only place it changes (``set``, ``check``,
    ``add_listener`` as :class:`~qmpd.statemachine.StateMachine`)."""

    def __init__(self, initial: RunState = RunState.PRELAUNCH) -> None:
        super().__init__(initial, TRANSITIONS, name="runstate", error=RunStateError,
                         logger=log)

    @property
    def is_running(self) -> bool:
        """True in ``running`` only, as QEMU's ``runstate_is_running()``."""
        return self.state is RunState.RUNNING
