"""Migration capabilities and parameters: derived from schema.json, QEMU 7.2's range rules.

Over QMP (every member's behaviour, a fresh qmpd's values): tests/qmp/test_migration_schema.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qmpd.errors import ArgumentRangeError, MigrationError
from qmpd.migration.config import (
    MigrationConfig,
    MigrationSpec,
    UnsupportedCapabilityError,
    default_spec,
)
from qmpd.schema import SchemaError, load
from qmpd.schema.loader import DEFAULT_SCHEMA

QEMU_72_CAPS = [
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
]

#: query-migrate-parameters of a fresh qmpd: QEMU 7.2's members, order and defaults,
#: except x-checkpoint-delay (200, QEMU 2.8's); the last two members are qmpd's own.
FRESH_PARAMETERS: dict[str, object] = {
    "announce-initial": 50, "announce-max": 550, "announce-rounds": 5,
    "announce-step": 100, "compress-level": 1, "compress-threads": 8,
    "compress-wait-thread": True, "decompress-threads": 2,
    "throttle-trigger-threshold": 50, "cpu-throttle-initial": 20,
    "cpu-throttle-increment": 10, "cpu-throttle-tailslow": False, "tls-creds": "",
    "tls-hostname": "", "tls-authz": "", "max-bandwidth": 128 << 20,
    "downtime-limit": 300, "x-checkpoint-delay": 200, "block-incremental": False,
    "multifd-channels": 2, "xbzrle-cache-size": 64 << 20, "max-postcopy-bandwidth": 0,
    "max-cpu-throttle": 99, "multifd-compression": "none", "multifd-zlib-level": 1,
    "multifd-zstd-level": 1, "x-colo-pipeline": True, "x-colo-max-dirty-pages": 0,
}


# -- derived from the schema ----------------------------------------------------------

def test_capabilities_are_the_schema_enum_qemu_72_order_all_false() -> None:
    assert list(default_spec().capabilities) == QEMU_72_CAPS
    caps = MigrationConfig().query_capabilities()
    assert [c["capability"] for c in caps] == QEMU_72_CAPS
    assert all(c["state"] is False for c in caps)


def test_parameters_are_the_schema_members_with_their_defaults() -> None:
    members = load().index.types["MigrationParameters"].members
    # every member but the one qmpd refuses to set (absent until set, as in QEMU 7.2)
    assert default_spec().defaults == {m.name: m.default for m in members
                                       if m.name != "block-bitmap-mapping"}
    assert [m.name for m in members if m.default is None] == ["block-bitmap-mapping"]
    fresh = MigrationConfig().query_parameters()
    assert list(fresh.items()) == list(FRESH_PARAMETERS.items())


def _schema_with(tmp_path: Path, edit: Any) -> Path:
    raw = json.loads(DEFAULT_SCHEMA.read_text())
    for entry in raw["definitions"]:
        edit(entry)
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    return path


def _member(struct: str, member: str, **change: object) -> Any:
    def edit(entry: dict[str, Any]) -> None:
        if entry.get("struct") == struct:
            entry["data"][member].update(change)
    return edit


@pytest.mark.parametrize(("struct", "member", "default", "problem"), [
    ("MigrationParameters", "*downtime-limit", -1, "-1: it reads as 18446744073709551615"),
    ("MigrationParameters", "*compress-level", 256, "expects uint8_t"),
    ("MigrationParameters", "*x-colo-pipeline", 1, "expected: boolean"),
    ("MigrationParameters", "*multifd-compression", "lz4", "does not accept value 'lz4'"),
    ("MigrationParameters", "*tls-creds", None, "a 'default' must be a value"),
    ("MigrationCapabilityStatus", "state", True, "on an optional member of a struct"),
])
def test_the_loader_checks_each_default_against_its_type(
        tmp_path: Path, struct: str, member: str, default: object, problem: str) -> None:
    path = _schema_with(tmp_path, _member(struct, member, default=default))
    with pytest.raises(SchemaError, match="default") as err:
        load(path)
    assert problem in str(err.value)


def test_a_parameter_without_default_is_a_schema_error(tmp_path: Path) -> None:
    def drop(entry: dict[str, Any]) -> None:
        if entry.get("struct") == "MigrationParameters":
            del entry["data"]["*max-bandwidth"]["default"]
    with pytest.raises(SchemaError, match=r"no default for \['max-bandwidth'\]"):
        MigrationSpec(load(_schema_with(tmp_path, drop)))


def test_set_parameters_must_list_the_same_members(tmp_path: Path) -> None:
    def drop(entry: dict[str, Any]) -> None:
        if entry.get("command") == "migrate-set-parameters":
            del entry["data"]["*x-colo-pipeline"]
    with pytest.raises(SchemaError, match="must list the MigrationParameters members"):
        MigrationSpec(load(_schema_with(tmp_path, drop)))


# -- capabilities ---------------------------------------------------------------------

def test_implemented_capabilities_can_be_set() -> None:
    cfg = MigrationConfig()
    cfg.set_capabilities([{"capability": "events", "state": True},
                          {"capability": "x-colo", "state": True},
                          {"capability": "return-path", "state": True}])
    assert cfg.capability("events") and cfg.capability("x-colo")
    cfg.set_capabilities([{"capability": "xbzrle", "state": False}])  # false is fine


def test_unimplemented_capability_true_is_refused_whole() -> None:
    cfg = MigrationConfig()
    with pytest.raises(UnsupportedCapabilityError) as exc:
        cfg.set_capabilities([{"capability": "events", "state": True},
                              {"capability": "postcopy-ram", "state": True}])
    assert str(exc.value) == "Migration capability 'postcopy-ram' is not supported by qmpd"
    assert (exc.value.name, exc.value.value) == ("capabilities[1].capability", "postcopy-ram")
    assert not cfg.capability("events")


def test_capability_change_refused_during_migration() -> None:
    cfg = MigrationConfig(is_running=lambda: True)
    with pytest.raises(MigrationError) as exc:
        cfg.set_capabilities([{"capability": "events", "state": True}])
    assert str(exc.value) == "There's a migration process in progress"
    assert not cfg.capability("events")


# -- parameters -----------------------------------------------------------------------

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
    # QEMU checks in its own order: compress-level before downtime-limit.
    ({"downtime-limit": 2000001, "compress-level": 10},
     "Parameter 'compress_level' expects a value between 0 and 9"),
])
def test_range_rules_refuse_with_qemu_text_and_change_nothing(
        args: dict[str, object], desc: str) -> None:
    cfg = MigrationConfig()
    before = cfg.query_parameters()
    with pytest.raises(ArgumentRangeError) as exc:
        cfg.set_parameters({"max-bandwidth": 0, **args})
    assert str(exc.value) == desc
    assert cfg.query_parameters() == before


def test_parameters_set_and_listener_sees_every_set() -> None:
    cfg = MigrationConfig()
    seen: list[tuple[str, object]] = []
    cfg.add_listener(lambda n, v: seen.append((n, v)))
    cfg.set_parameters({"x-checkpoint-delay": 2000, "downtime-limit": 2000000,
                        "max-bandwidth": 0})
    cfg.set_parameters({"x-checkpoint-delay": 2000})
    assert cfg.parameter("x-checkpoint-delay") == 2000
    assert cfg.int_parameter("downtime-limit") == 2000000
    assert seen.count(("x-checkpoint-delay", 2000)) == 2
    cfg.set_parameters({"tls-creds": "x"})
    cfg.set_parameters({"tls-creds": None})  # StrOrNull: null resets to ""
    assert cfg.parameter("tls-creds") == ""
