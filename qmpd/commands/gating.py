"""Command gates: which run states and COLO modes refuse a command, declared as data.

Users: handler modules declare a command's gate where they register it::

    @command("cont", refuse_in=(
        in_colo("Cannot continue the VM while it is in COLO mode; ..."),
        in_runstates("Migration is not finalized yet", RunState.FINISH_MIGRATE)))

and the dispatcher (:mod:`qmpd.commands.dispatcher`) is the one place that checks them:
after the arguments were checked (QEMU's marshaller visits the arguments before the
command runs) and before the handler. Rules are tried in their declared order; the
first that matches answers ``GenericError`` with its text (QEMU 7.2's). Like
Firecracker's pre-boot/runtime controllers, the whole "allowed in this state" table is
data, so ``tests/qmp/test_gating.py`` walks every gated command through every state
that refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmpd.colo.state import ColoMode
from qmpd.machine.runstate import RunState


@dataclass(frozen=True)
class Refuse:
    """One rule: refuse in these run states or these COLO modes, with ``text``."""

    text: str
    runstates: frozenset[RunState] = frozenset()
    colo_modes: frozenset[ColoMode] = frozenset()

    def matches(self, state: RunState, mode: ColoMode) -> bool:
        """True if the node's run state or COLO mode is one this rule refuses."""
        return state in self.runstates or mode in self.colo_modes


#: A command's gate: its rules, in order (empty: allowed everywhere).
Gate = tuple[Refuse, ...]


def in_runstates(text: str, *states: RunState) -> Refuse:
    """Refuse in any of ``states``."""
    return Refuse(text, runstates=frozenset(states))


def outside_runstates(text: str, *states: RunState) -> Refuse:
    """Refuse in every run state except ``states``."""
    return Refuse(text, runstates=frozenset(RunState) - frozenset(states))


def in_colo_modes(text: str, *modes: ColoMode) -> Refuse:
    """Refuse while the node's COLO mode is one of ``modes``."""
    return Refuse(text, colo_modes=frozenset(modes))


def in_colo(text: str) -> Refuse:
    """Refuse while the node is in COLO (primary or secondary)."""
    return in_colo_modes(text, ColoMode.PRIMARY, ColoMode.SECONDARY)


def refusal(gate: Gate, state: RunState, mode: ColoMode) -> str | None:
    """The text of the first rule of ``gate`` that refuses, or None if none does."""
    for rule in gate:
        if rule.matches(state, mode):
            return rule.text
    return None
