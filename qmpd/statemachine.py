"""One state-machine shape for all of qmpd: an Enum, one transition table, one setter.

Users (each holds one :class:`StateMachine` over its own Enum and table):
:mod:`qmpd.machine.runstate` (QEMU's RunState), :mod:`qmpd.machine.vcpu_thread` (the vCPU
thread's run loop), :mod:`qmpd.qmp.session` (a QMP connection's life cycle),
:mod:`qmpd.migration.state` (MigrationStatus), :mod:`qmpd.migration.source` (the sender's
phases) and :mod:`qmpd.colo.state` (COLO mode, failover status).

Every change goes through one place, which checks the table, logs and then calls the
listeners ``cb(old, new)`` in the order they were added::

    set(new)            new is the current state ─► nothing (no log, no listener)
                        new not in table[current] ─► StateError(current, new), no change
                        else: state = new; log "NAME: old -> new"; listeners(old, new)
    cas(expected, new)  (expected, new) not in the table ─► StateError(expected, new)
                        current is not expected ─► return current, no change
                        else: set(new); return expected

``cas`` is QEMU's ``failover_set_state(old, new)`` / ``migrate_set_state(&s, old, new)``:
it returns the state it found, so the caller compares it with ``expected``; asking for an
edge the table does not have is a bug and raises even when the compare fails.

Nothing here locks: a machine is used from one thread (the event loop, or the vCPU
thread for its own machine); other threads may read :attr:`StateMachine.state`, a single
attribute load. Standard library only (layer L0).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from qmpd.errors import QmpdError

log = logging.getLogger(__name__)

S = TypeVar("S", bound=enum.Enum)

#: ``table[state]`` is the set of states reachable from ``state`` in one step.
Transitions = Mapping[S, frozenset[S]]
#: ``cb(old, new)``, called after every change.
Listener = Callable[[S, S], None]


class StateError(QmpdError):
    """A transition the machine's table does not have (a bug in the caller).

    Each layer subclasses it next to its own root (e.g. ``RunStateError(StateError,
    MachineError)``), so ``except`` clauses on either keep working.

    :param old: the state the transition starts from.
    :param new: the state asked for.
    :param machine: the machine's name, e.g. ``runstate``.
    """

    def __init__(self, old: enum.Enum, new: enum.Enum, machine: str = "state") -> None:
        super().__init__(old, new, machine)
        self.old = old
        self.new = new
        self.machine = machine

    def __str__(self) -> str:
        return f"invalid {self.machine} transition: '{self.old.value}' -> '{self.new.value}'"


class StateMachine(Generic[S]):
    """The current state of one Enum, changed only along ``transitions``.

    :param initial: the state it starts in.
    :param transitions: an entry for every member of the Enum (final states map to an
        empty set); checked here, so a missing entry fails at construction.
    :param name: names the machine in logs and in :class:`StateError`'s text.
    :param error: the :class:`StateError` subclass raised for an edge outside the table.
    :param logger: where changes are logged (the owning module's logger).
    :param level: the level changes are logged at.
    :raise ValueError: if ``transitions`` leaves out a member of the Enum.
    """

    def __init__(self, initial: S, transitions: Transitions[S], *, name: str,
                 error: type[StateError] = StateError, logger: logging.Logger = log,
                 level: int = logging.INFO) -> None:
        missing = [m.value for m in type(initial) if m not in transitions]
        if missing:
            raise ValueError(f"{name}: no transitions given for {missing}")
        self.name = name
        self._state = initial
        # The table as tuples keyed by member name: an Enum's __hash__ is Python code, so
        # a frozenset test costs more than an identity scan of a few members, and the vCPU
        # sets its state twice in every checkpoint's pause (figure: bench/results/
        # design-figures.md).
        self._next = {m.name: tuple(transitions[m]) for m in type(initial)}
        self._allowed = self._next[initial.name]
        self._error = error
        self._log = logger
        self._level = level
        self._listeners: list[Listener[S]] = []

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    def add_listener(self, listener: Listener[S]) -> None:
        """Call ``listener(old, new)`` after every change, after those added before."""
        self._listeners.append(listener)

    def check(self, new: S) -> None:
        """Raise if ``new`` is neither the current state nor reachable from it.

        :raise StateError: (the machine's subclass) if the table forbids it.
        """
        if new is not self._state and new not in self._allowed:
            raise self._error(self._state, new, self.name)

    def set(self, new: S) -> None:
        """Move to ``new``: check, change, log, notify; a no-op if already there.

        :raise StateError: (the machine's subclass) if the table forbids it; nothing
            changes then.
        """
        old = self._state
        if new is old:
            return
        if new not in self._allowed:
            raise self._error(old, new, self.name)
        self._state = new
        self._allowed = self._next[new._name_]
        self._log.log(self._level, "%s: %s -> %s", self.name, old.value, new.value)
        for listener in self._listeners:
            listener(old, new)

    def cas(self, expected: S, new: S) -> S:
        """Compare-and-set: move to ``new`` only if the state is ``expected``.

        Returns the state found; equal to ``expected`` means the change was made.

        :raise StateError: if ``expected -> new`` is not in the table, whatever the
            current state.
        """
        if new not in self._next[expected._name_]:
            raise self._error(expected, new, self.name)
        found = self._state
        if found is expected:
            self.set(new)
        return found
