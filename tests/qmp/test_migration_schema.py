"""Every migration capability and parameter in schema.json, tied to what qmpd does with it.

The member lists are read from schema.json itself (not through qmpd), so a member added
there without a row here fails. Over QMP on a real qmpd (the module's shared ``daemon``,
through ``raw``): a fresh process reports the schema's defaults; each parameter can be
set and reset, QEMU 7.2's range rule (if any) and type check refuse with QEMU's text;
each capability qmpd implements can be set, every other one is refused. Where qmpd
*uses* a member, the row names the test that observes the effect, and it must exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import REPO, Raw, error, start_qmpd

from qmpd.commands.migration import HMP_NOT_SHOWN, HMP_PARAMETERS
from qmpd.schema.loader import DEFAULT_SCHEMA


def _schema(kind: str, name: str) -> Any:
    raw = json.loads(Path(DEFAULT_SCHEMA).read_text())
    return next(e for e in raw["definitions"] if e.get(kind) == name)["data"]


SCHEMA_CAPABILITIES = [c if isinstance(c, str) else c["name"]
                       for c in _schema("enum", "MigrationCapability")]
#: (block-bitmap-mapping, which qmpd refuses and reports only once set -- never --, has
#: no default: tests/qmp/test_introspection_72.py covers it)
SCHEMA_PARAMETERS = {key.lstrip("*"): spec
                     for key, spec in _schema("struct", "MigrationParameters").items()
                     if "default" in spec}

#: A parameter qmpd keeps and reports but has no mechanism for (QEMU compatibility).
STORED = "stored"
#: auto-converge's parameters: the rule's own tests.
THROTTLE = "tests/migration/test_throttle.py::"

#: Capability -> the test that observes its effect; every other one is refused.
CAPABILITY_EFFECTS = {
    "events": "tests/migration/test_e2e_qmp.py::test_migrate_between_two_qmpd_processes",
    "x-colo": "tests/e2e/test_colo.py::test_entering_colo_statuses_and_events_in_order",
    # always on in qmpd: the source completes only after the destination's verdict
    "return-path": "tests/migration/test_migrate.py::"
                   "test_destination_error_reported_on_return_path",
    "auto-converge": "tests/migration/test_converge.py::test_auto_converge_as_qemu",
}


def _range(member: str, expects: str) -> str:
    return f"Parameter '{member.replace('-', '_')}' expects {expects}"


#: Parameter -> (a valid value other than the default, a value QEMU 7.2's range rules
#: refuse and their text (None: the type is the only rule), where its effect is tested).
PARAMETERS: dict[str, tuple[object, tuple[int, str] | None, str]] = {
    "announce-initial": (60, (100001, _range("announce-initial", "a value between 0 and "
                                                                 "100000")), STORED),
    "announce-max": (600, (100001, _range("announce-max", "a value between 0 and 100000")),
                     STORED),
    "announce-rounds": (6, (1001, _range("announce-rounds", "a value between 0 and 1000")),
                        STORED),
    "announce-step": (50, (0, _range("announce-step", "a value between 0 and 10000")),
                      STORED),
    "compress-level": (9, (10, _range("compress-level", "a value between 0 and 9")), STORED),
    "compress-threads": (4, (0, _range("compress-threads", "a value between 1 and 255")),
                         STORED),
    "compress-wait-thread": (False, None, STORED),
    "decompress-threads": (4, (0, _range("decompress-threads", "a value between 1 and 255")),
                           STORED),
    "throttle-trigger-threshold": (60, (101, _range("throttle-trigger-threshold",
                                                    "an integer in the range of 1 to 100")),
                                   THROTTLE + "test_low_periods_do_not_reset_the_count_"
                                              "and_never_trigger"),
    "cpu-throttle-initial": (30, (0, _range("cpu-throttle-initial",
                                            "an integer in the range of 1 to 99")),
                             THROTTLE + "test_parameters_initial_increment_max"),
    "cpu-throttle-increment": (20, (100, _range("cpu-throttle-increment",
                                                "an integer in the range of 1 to 99")),
                               THROTTLE + "test_parameters_initial_increment_max"),
    "cpu-throttle-tailslow": (True, None,
                              THROTTLE + "test_tailslow_steps_toward_the_threshold"),
    "tls-creds": ("tls0", None, "tests/e2e/test_tls.py::"
                                "test_tls_migration_completes_and_output_continues"),
    "tls-hostname": ("peer", None, "tests/e2e/test_tls.py::test_bad_credentials_fail_cleanly"),
    "tls-authz": ("authz0", None, "tests/e2e/test_tls.py::test_tls_authz_is_refused"),
    "max-bandwidth": (1 << 20, None, "tests/migration/test_migrate.py::"
                                     "test_query_migrate_while_active_and_bandwidth_honoured"),
    "downtime-limit": (500, (2000001, _range("downtime-limit", "an integer in the range of "
                                                               "0 to (2000 * 1000) ms")),
                       "tests/migration/test_migrate.py::"
                       "test_iterates_until_remainder_fits_downtime_limit"),
    "x-checkpoint-delay": (500, None, "tests/e2e/test_colo.py::"
                                      "test_changing_checkpoint_delay_live_checkpoints_at_once"),
    "block-incremental": (True, None, STORED),
    "multifd-channels": (4, (0, _range("multifd-channels", "a value between 1 and 255")),
                         STORED),
    "xbzrle-cache-size": (1 << 20, (5000, _range("xbzrle-cache-size", "a power of two no "
                                                 "less than the target page size")), STORED),
    "max-postcopy-bandwidth": (1 << 20, None, STORED),
    "max-cpu-throttle": (50, (10, _range("max-cpu-throttle", "an integer in the range of "
                                                             "cpu_throttle_initial to 99")),
                         THROTTLE + "test_parameters_initial_increment_max"),
    "multifd-compression": ("zlib", None, STORED),
    "multifd-zlib-level": (9, (10, _range("multifd-zlib-level", "a value between 0 and 9")),
                           STORED),
    "multifd-zstd-level": (20, (21, _range("multifd-zstd-level", "a value between 0 and 20")),
                           STORED),
    "x-colo-pipeline": (False, None, "tests/colo/test_colo_inprocess.py::"
                                     "test_pipeline_decides_when_the_guest_runs_again"),
    "x-colo-max-dirty-pages": (64, None, "tests/colo/test_colo_inprocess.py::"
                                         "test_adaptive_epochs_bound_the_dirty_set"),
}

#: What QEMU's input visitor says to a JSON value of the wrong type, by schema type.
WRONG_TYPE = {
    "bool": ("1", "Invalid parameter type for '{}', expected: boolean"),
    "size": ("1", "Invalid parameter type for '{}', expected: size"),
    "uint8": ("1", "Parameter '{}' expects uint64"),
    "uint32": ("1", "Parameter '{}' expects uint64"),
    "uint64": ("1", "Parameter '{}' expects uint64"),
    "str": (1, "Invalid parameter type for '{}', expected: StrOrNull"),
    "MultiFDCompression": (1, "Invalid parameter type for '{}', expected: string"),
}


def _cmd(c: Raw, name: str, **args: Any) -> dict[str, Any]:
    return c.cmd({"execute": name, "arguments": args})


def test_every_schema_member_has_a_row_and_every_named_test_exists() -> None:
    assert list(PARAMETERS) == list(SCHEMA_PARAMETERS)
    assert set(CAPABILITY_EFFECTS) <= set(SCHEMA_CAPABILITIES)
    for where in [*CAPABILITY_EFFECTS.values(), *(row[2] for row in PARAMETERS.values())]:
        if where == STORED:
            continue
        path, _, test = where.partition("::")
        assert f"def {test}(" in (REPO / path).read_text(), where


def test_a_fresh_qmpd_reports_the_schema_defaults(tmp_path: Path) -> None:
    d = start_qmpd(tmp_path, "-m", "32M", "-accel", "tcg")
    try:
        c = Raw(d.path)
        c.negotiate()
        # (the wire orders members as QEMU's QDict does: qmpd.qmp.wire.qdict_order)
        params = _cmd(c, "query-migrate-parameters")["return"]
        assert params == {name: spec["default"] for name, spec in SCHEMA_PARAMETERS.items()}
        caps = _cmd(c, "query-migrate-capabilities")["return"]
        assert caps == [{"capability": name, "state": False} for name in SCHEMA_CAPABILITIES]
        c.close()
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("name", SCHEMA_CAPABILITIES)
def test_each_capability_is_implemented_or_refused(raw: Raw, name: str) -> None:
    caps = [{"capability": name, "state": True}]
    if name in CAPABILITY_EFFECTS:
        assert _cmd(raw, "migrate-set-capabilities", capabilities=caps) == {"return": {}}
        assert {"capability": name, "state": True} in \
            _cmd(raw, "query-migrate-capabilities")["return"]
        caps[0]["state"] = False
        assert _cmd(raw, "migrate-set-capabilities", capabilities=caps) == {"return": {}}
    else:
        assert _cmd(raw, "migrate-set-capabilities", capabilities=caps) == error(
            f"Migration capability '{name}' is not supported by qmpd")
    assert {"capability": name, "state": False} in \
        _cmd(raw, "query-migrate-capabilities")["return"]


@pytest.mark.parametrize("name", list(SCHEMA_PARAMETERS))
def test_each_parameter_sets_resets_and_refuses_as_qemu(raw: Raw, name: str) -> None:
    value, refused, _ = PARAMETERS[name]
    default = SCHEMA_PARAMETERS[name]["default"]
    assert value != default
    assert _cmd(raw, "migrate-set-parameters", **{name: value}) == {"return": {}}
    assert _cmd(raw, "query-migrate-parameters")["return"][name] == value
    if refused is not None:
        bad, text = refused
        assert _cmd(raw, "migrate-set-parameters", **{name: bad}) == error(text)
        assert _cmd(raw, "query-migrate-parameters")["return"][name] == value
    wrong, text = WRONG_TYPE[SCHEMA_PARAMETERS[name]["type"]]
    assert _cmd(raw, "migrate-set-parameters", **{name: wrong}) == error(text.format(name))
    assert _cmd(raw, "migrate-set-parameters", **{name: default}) == {"return": {}}
    assert _cmd(raw, "query-migrate-parameters")["return"][name] == default


def test_tls_creds_set_and_reset(raw: Raw) -> None:
    assert _cmd(raw, "migrate-set-parameters", **{"tls-creds": "tls0"}) == {"return": {}}
    assert _cmd(raw, "query-migrate-parameters")["return"]["tls-creds"] == "tls0"
    assert _cmd(raw, "migrate-set-parameters", **{"tls-creds": None}) == {"return": {}}
    assert _cmd(raw, "query-migrate-parameters")["return"]["tls-creds"] == ""


def test_hmp_lists_the_schema_members_in_qemu_72_hmp_order(raw: Raw) -> None:
    shown = [name for name, _ in HMP_PARAMETERS]
    assert sorted(shown + list(HMP_NOT_SHOWN)) == sorted([*SCHEMA_PARAMETERS,
                                                          "block-bitmap-mapping"])
    assert len(set(shown) | set(HMP_NOT_SHOWN)) == len(SCHEMA_PARAMETERS) + 1
    text = _cmd(raw, "human-monitor-command",
                **{"command-line": "info migrate_parameters"})["return"]
    assert [line.split(":")[0] for line in text.splitlines()] == shown
    assert "announce-initial: 50 ms" in text and "tls-creds: ''" in text
    assert "compress-wait-thread: on" in text and "max-bandwidth: 134217728 bytes/second" in text
