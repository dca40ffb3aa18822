"""The VM run state: QEMU's RunState names and its transition table.

Users: the machine controller (stop/cont/reset), migration (inmigrate, finish-migrate,
postmigrate) and COLO (colo). ``query-status`` reads it. A change goes through
:meth:`RunStateHolder.set`, which checks the table, logs and calls every listener; an
illegal transition raises :class:`RunStateError` and changes nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from qmpd.errors import MachineError

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

RunStateListener = Callable[[RunState, RunState], None]


class RunStateError(MachineError):
    """An illegal run-state transition was requested."""

    def __init__(self, old: RunState, new: RunState) -> None:
        super().__init__(f"invalid runstate transition: '{old.value}' -> '{new.value}'")
        self.old = old
        self.new = new


class RunStateHolder:
    """Holds the current RunState; the only place it changes."""

    def __init__(self, initial: RunState = RunState.PRELAUNCH) -> None:
        self._state = initial
        self._listeners: list[RunStateListener] = []

    @property
    def state(self) -> RunState:
        """The current run state."""
        return self._state

    @property
    def is_running(self) -> bool:
        """True in ``running`` only, as QEMU's ``runstate_is_running()``."""
        return self._state is RunState.RUNNING

    def add_listener(self, listener: RunStateListener) -> None:
        """Call ``listener(old, new)`` after every transition."""
        self._listeners.append(listener)

    def check(self, new: RunState) -> None:
        """Raise :class:`RunStateError` if ``new`` is not reachable from the current state."""
        if new is not self._state and new not in TRANSITIONS[self._state]:
            raise RunStateError(self._state, new)

    def set(self, new: RunState) -> None:
        """Move to ``new``; a no-op if already there.

        :raise RunStateError: if the table does not allow the transition.
        """
        if new is self._state:
            return
        self.check(new)
        old, self._state = self._state, new
        log.info("runstate %s -> %s", old.value, new.value)
        for listener in self._listeners:
            listener(old, new)
