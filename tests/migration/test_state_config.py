"""Migration status machine: QEMU 7.2 names, order, texts (config: test_config.py)."""

from __future__ import annotations

import pytest

from qmpd.migration.state import (
    TRANSITIONS,
    MigrationStateError,
    MigrationStatus,
    StatusMachine,
)

S = MigrationStatus


def machine(direction: str = "outgoing", events: bool = True
            ) -> tuple[StatusMachine, list[tuple[str, dict[str, object] | None]]]:
    seen: list[tuple[str, dict[str, object] | None]] = []
    sm = StatusMachine(direction, lambda n, d: seen.append((n, d)), lambda: events)
    return sm, seen


def test_status_names_are_qemus_in_order() -> None:
    assert [s.value for s in S] == [
        "none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
        "postcopy-paused", "postcopy-recover", "completed", "failed", "colo",
        "pre-switchover", "device", "wait-unplug"]
    assert set(TRANSITIONS) == set(S)


def test_precopy_sequence_emits_migration_events_in_order() -> None:
    sm, seen = machine()
    for st in (S.SETUP, S.ACTIVE, S.COMPLETED, S.SETUP, S.ACTIVE, S.CANCELLING,
               S.CANCELLED, S.SETUP, S.FAILED, S.SETUP, S.ACTIVE, S.COLO, S.COMPLETED):
        sm.set(st)
    assert [d["status"] for _, d in seen if d] == [
        "setup", "active", "completed", "setup", "active", "cancelling", "cancelled",
        "setup", "failed", "setup", "active", "colo", "completed"]
    assert {n for n, _ in seen} == {"MIGRATION"}


def test_events_only_with_capability_except_incoming_setup() -> None:
    out, seen_out = machine("outgoing", events=False)
    out.set(S.SETUP)
    out.set(S.ACTIVE)
    assert seen_out == []
    inc, seen_in = machine("incoming", events=False)
    inc.set(S.SETUP)
    inc.set(S.ACTIVE)
    assert seen_in == [("MIGRATION", {"status": "setup"})]


@pytest.mark.parametrize(("path", "bad"), [
    ((), S.ACTIVE), ((), S.COMPLETED), ((S.SETUP,), S.COMPLETED),
    ((S.SETUP, S.ACTIVE), S.SETUP), ((S.SETUP, S.ACTIVE, S.CANCELLING), S.ACTIVE),
    ((), S.POSTCOPY_ACTIVE),
])
def test_illegal_transitions_raise_and_change_nothing(path: tuple[MigrationStatus, ...],
                                                      bad: MigrationStatus) -> None:
    sm, seen = machine()
    for st in path:
        sm.set(st)
    before = (sm.status, len(seen))
    with pytest.raises(MigrationStateError):
        sm.set(bad)
    assert (sm.status, len(seen)) == before


def test_cas_is_compare_and_set() -> None:
    """As QEMU's migrate_set_state(&s, old, new): the status found is returned."""
    sm, seen = machine()
    assert sm.cas(S.ACTIVE, S.COMPLETED) is S.NONE
    assert (sm.status, seen) == (S.NONE, [])
    assert sm.cas(S.NONE, S.SETUP) is S.NONE
    assert sm.status is S.SETUP
    assert seen == [("MIGRATION", {"status": "setup"})]


def test_cas_on_an_edge_outside_the_table_raises() -> None:
    sm, seen = machine()
    with pytest.raises(MigrationStateError) as info:
        sm.cas(S.NONE, S.COMPLETED)
    assert (info.value.old, info.value.new) == (S.NONE, S.COMPLETED)
    assert (sm.status, seen) == (S.NONE, [])
