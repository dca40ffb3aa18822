"""The one state-machine shape (qmpd.statemachine): table, set, compare-and-set, errors, log."""

from __future__ import annotations

import enum
import itertools
import logging

import pytest

from qmpd.colo.state import ColoMode, ColoStateError, colo_mode_machine
from qmpd.errors import ColoError, MachineError, MigrationError, QmpdError
from qmpd.machine.errors import MachineStateError
from qmpd.machine.runstate import RunState, RunStateError, RunStateHolder
from qmpd.machine.vcpu_thread import TRANSITIONS as VCPU_TRANSITIONS
from qmpd.machine.vcpu_thread import VcpuRunState, VcpuStateError
from qmpd.migration.source import PHASES, SourcePhase
from qmpd.migration.state import MigrationStateError
from qmpd.statemachine import StateError, StateMachine


class Door(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"


D = Door
TABLE = {
    D.OPEN: frozenset({D.CLOSED}),
    D.CLOSED: frozenset({D.OPEN, D.LOCKED}),
    D.LOCKED: frozenset({D.CLOSED}),
}


class DoorError(StateError):
    """A layer's own subclass."""


def door(seen: list[tuple[str, str, str]] | None = None) -> StateMachine[Door]:
    sm = StateMachine(D.OPEN, TABLE, name="door", error=DoorError,
                      logger=logging.getLogger("test.door"))
    if seen is not None:
        sm.add_listener(lambda a, b: seen.append(("first", a.value, b.value)))
        sm.add_listener(lambda a, b: seen.append(("second", a.value, b.value)))
    return sm


def test_set_follows_the_table_and_calls_listeners_in_order() -> None:
    seen: list[tuple[str, str, str]] = []
    sm = door(seen)
    sm.set(D.CLOSED)
    sm.set(D.LOCKED)
    assert sm.state is D.LOCKED
    assert seen == [("first", "open", "closed"), ("second", "open", "closed"),
                    ("first", "closed", "locked"), ("second", "closed", "locked")]


def test_set_to_the_current_state_is_a_no_op() -> None:
    seen: list[tuple[str, str, str]] = []
    sm = door(seen)
    sm.set(D.OPEN)
    assert sm.state is D.OPEN and seen == []


def test_an_illegal_edge_raises_with_old_and_new_and_changes_nothing() -> None:
    seen: list[tuple[str, str, str]] = []
    sm = door(seen)
    with pytest.raises(DoorError) as info:
        sm.set(D.LOCKED)
    err = info.value
    assert isinstance(err, StateError) and isinstance(err, QmpdError)
    assert (err.old, err.new, err.machine) == (D.OPEN, D.LOCKED, "door")
    assert str(err) == "invalid door transition: 'open' -> 'locked'"
    assert sm.state is D.OPEN and seen == []


def test_check_allows_the_current_state_and_the_table_only() -> None:
    sm = door()
    sm.check(D.OPEN)
    sm.check(D.CLOSED)
    with pytest.raises(DoorError):
        sm.check(D.LOCKED)
    assert sm.state is D.OPEN


def test_cas_match_changes_and_returns_the_expected_state() -> None:
    seen: list[tuple[str, str, str]] = []
    sm = door(seen)
    assert sm.cas(D.OPEN, D.CLOSED) is D.OPEN
    assert sm.state is D.CLOSED
    assert seen[-1] == ("second", "open", "closed")


def test_cas_mismatch_returns_the_actual_state_and_changes_nothing() -> None:
    seen: list[tuple[str, str, str]] = []
    sm = door(seen)
    assert sm.cas(D.CLOSED, D.LOCKED) is D.OPEN
    assert sm.state is D.OPEN and seen == []


def test_cas_on_an_edge_outside_the_table_raises_even_on_a_mismatch() -> None:
    sm = door()
    with pytest.raises(DoorError) as info:
        sm.cas(D.OPEN, D.LOCKED)          # compare matches, edge illegal
    assert (info.value.old, info.value.new) == (D.OPEN, D.LOCKED)
    with pytest.raises(DoorError) as info:
        sm.cas(D.LOCKED, D.OPEN)          # compare fails, edge illegal
    assert (info.value.old, info.value.new) == (D.LOCKED, D.OPEN)
    assert sm.state is D.OPEN


def test_every_change_is_logged_at_the_machines_level(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    sm = door()
    with caplog.at_level(logging.DEBUG, logger="test.door"):
        sm.set(D.CLOSED)
        sm.set(D.CLOSED)
        sm.cas(D.CLOSED, D.LOCKED)
        with pytest.raises(DoorError):
            sm.set(D.OPEN)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("test.door", logging.INFO, "door: open -> closed"),
        ("test.door", logging.INFO, "door: closed -> locked"),
    ]


def test_a_table_missing_a_member_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"^door: no transitions given for \['locked'\]$"):
        StateMachine(D.OPEN, {D.OPEN: frozenset({D.CLOSED}), D.CLOSED: frozenset()},
                     name="door")


# Section: every machine of qmpd is this shape, its error under its layer's root

def test_runstate_errors_are_state_errors_and_machine_errors() -> None:
    rs = RunStateHolder()
    with pytest.raises(RunStateError) as info:
        rs.set(RunState.COLO)
    assert isinstance(info.value, StateError) and isinstance(info.value, MachineError)
    assert str(info.value) == "invalid runstate transition: 'prelaunch' -> 'colo'"
    assert rs.state is RunState.PRELAUNCH


def test_layer_errors_keep_their_roots() -> None:
    assert issubclass(VcpuStateError, StateError) and issubclass(VcpuStateError,
                                                                  MachineStateError)
    assert issubclass(MigrationStateError, StateError) and issubclass(MigrationStateError,
                                                                       MigrationError)
    assert issubclass(ColoStateError, StateError) and issubclass(ColoStateError, ColoError)


def test_vcpu_table_is_the_run_loops() -> None:
    S = VcpuRunState
    expected = {
        S.PAUSED: {S.RUNNING, S.FINISHED},
        S.RUNNING: {S.PAUSED, S.FAULTED, S.FINISHED},
        S.FAULTED: {S.PAUSED, S.FINISHED},
        S.FINISHED: set(),
    }
    assert expected == VCPU_TRANSITIONS


def test_colo_mode_enters_one_role_and_leaves_it_to_none() -> None:
    seen: list[tuple[str, str]] = []
    mode = colo_mode_machine()
    mode.add_listener(lambda a, b: seen.append((a.value, b.value)))
    mode.set(ColoMode.PRIMARY)
    with pytest.raises(ColoStateError, match=r"^invalid COLO mode transition: "
                                             r"'primary' -> 'secondary'$"):
        mode.set(ColoMode.SECONDARY)
    mode.set(ColoMode.NONE)
    mode.set(ColoMode.SECONDARY)
    mode.set(ColoMode.NONE)
    assert seen == [("none", "primary"), ("primary", "none"), ("none", "secondary"),
                    ("secondary", "none")]


def test_source_phases_go_in_order_only() -> None:
    order = list(SourcePhase)
    assert [p.value for p in order] == ["setup", "bulk", "iterate", "stop", "final",
                                        "await-ack", "done"]
    chain = {**{a: {b} for a, b in itertools.pairwise(order)}, SourcePhase.DONE: set()}
    assert chain == PHASES
