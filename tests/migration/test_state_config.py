"""Migration status machine, capabilities and parameters: QEMU 7.2 names, order, texts."""

from __future__ import annotations

import pytest

from qmpd.errors import QMPError
from qmpd.migration.config import CAPABILITIES, PARAMETERS, MigrationConfig
from qmpd.migration.state import (
    TRANSITIONS,
    MigrationStateError,
    MigrationStatus,
    StatusMachine,
)

S = MigrationStatus

QEMU_72_CAPS = [
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
]


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


# -- capabilities ---------------------------------------------------------------------

def test_capabilities_every_qemu_72_name_in_order_default_false() -> None:
    assert list(CAPABILITIES) == QEMU_72_CAPS
    caps = MigrationConfig().query_capabilities()
    assert [c["capability"] for c in caps] == QEMU_72_CAPS
    assert all(c["state"] is False for c in caps)


def test_implemented_capabilities_can_be_set() -> None:
    cfg = MigrationConfig()
    cfg.set_capabilities([{"capability": "events", "state": True},
                          {"capability": "x-colo", "state": True},
                          {"capability": "return-path", "state": True}])
    assert cfg.capability("events") and cfg.capability("x-colo")
    cfg.set_capabilities([{"capability": "xbzrle", "state": False}])  # false is fine


def test_unimplemented_capability_true_is_refused_whole() -> None:
    cfg = MigrationConfig()
    with pytest.raises(QMPError) as exc:
        cfg.set_capabilities([{"capability": "events", "state": True},
                              {"capability": "postcopy-ram", "state": True}])
    assert exc.value.desc == "Migration capability 'postcopy-ram' is not supported by qmpd"
    assert exc.value.error_class == "GenericError"
    assert not cfg.capability("events")


def test_capability_change_refused_during_migration() -> None:
    cfg = MigrationConfig(is_running=lambda: True)
    with pytest.raises(QMPError) as exc:
        cfg.set_capabilities([{"capability": "events", "state": True}])
    assert exc.value.desc == "There's a migration process in progress"


def test_unknown_capability_name() -> None:
    with pytest.raises(QMPError) as exc:
        MigrationConfig().set_capabilities([{"capability": "nope", "state": True}])
    assert exc.value.desc == "Parameter 'capabilities[0].capability' does not accept value 'nope'"


# -- parameters -----------------------------------------------------------------------

def test_parameter_defaults_qemu_72_except_checkpoint_delay() -> None:
    p = MigrationConfig().query_parameters()
    assert list(p) == list(PARAMETERS)
    assert p["downtime-limit"] == 300
    assert p["max-bandwidth"] == 32 << 20
    assert p["x-checkpoint-delay"] == 200
    assert (p["announce-initial"], p["announce-max"], p["announce-rounds"],
            p["announce-step"]) == (50, 550, 5, 100)
    assert p["tls-creds"] == "" and p["multifd-compression"] == "none"


@pytest.mark.parametrize(("args", "desc"), [
    ({"downtime-limit": 2000001},
     "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms"),
    ({"downtime-limit": -1},
     "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms"),
    ({"announce-step": 0}, "Parameter 'announce_step' expects a value between 0 and 10000"),
    ({"announce-rounds": 1001},
     "Parameter 'announce_rounds' expects a value between 0 and 1000"),
    ({"compress-level": 10}, "Parameter 'compress_level' expects a value between 0 and 9"),
    ({"cpu-throttle-initial": 0},
     "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99"),
    ({"max-cpu-throttle": 10},
     "Parameter 'max_cpu_throttle' expects an integer in the range of "
     "cpu_throttle_initial to 99"),
    ({"xbzrle-cache-size": 5000},
     "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page "
     "size"),
    ({"x-checkpoint-delay": 1 << 32}, "Parameter 'x-checkpoint-delay' expects uint32_t"),
    ({"compress-level": 256}, "Parameter 'compress-level' expects uint8_t"),
    ({"downtime-limit": "1"},
     "Invalid parameter type for 'downtime-limit', expected: integer"),
    ({"multifd-compression": "lz4"},
     "Parameter 'multifd-compression' does not accept value 'lz4'"),
    ({"no-such": 1}, "Parameter 'no-such' is unexpected"),
])
def test_parameter_checks_refuse_with_qemu_text_and_change_nothing(
        args: dict[str, object], desc: str) -> None:
    cfg = MigrationConfig()
    before = cfg.query_parameters()
    with pytest.raises(QMPError) as exc:
        cfg.set_parameters({"downtime-limit": 100, **args})
    assert exc.value.desc == desc
    assert cfg.query_parameters() == before


def test_parameters_set_and_listener_sees_every_set() -> None:
    cfg = MigrationConfig()
    seen: list[tuple[str, object]] = []
    cfg.add_listener(lambda n, v: seen.append((n, v)))
    cfg.set_parameters({"x-checkpoint-delay": 2000, "downtime-limit": 2000000,
                        "max-bandwidth": 0})
    cfg.set_parameters({"x-checkpoint-delay": 2000})
    assert cfg.parameter("x-checkpoint-delay") == 2000
    assert cfg.parameter("downtime-limit") == 2000000
    assert seen.count(("x-checkpoint-delay", 2000)) == 2
    cfg.set_parameters({"tls-creds": None})
    assert cfg.parameter("tls-creds") == ""
