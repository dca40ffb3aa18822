"""The introspected shapes of QEMU 7.2's migration and CPU queries, compared with QEMU 7.2.

``query-qmp-schema`` masks type names, so each command's argument and return types are
resolved through the introspection graph into shapes (members in order with their
optionality and resolved types, recursively; enum values; union tag and variants;
arrays; builtins by JSON type) and qmpd's shapes must equal QEMU 7.2's, except for
qmpd's own ``x-colo-...`` parameters. Members qmpd never reports or refuses to set
are still there, as the issue asks (a client that introspects sees QEMU 7.2's shapes).
Needs a real QEMU 7.2 (skipped with a reason without it; fails when CI is set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import Raw, qmpd_or_qemu72

COMMANDS = ("query-cpus-fast", "query-migrate", "query-migrate-parameters",
            "migrate-set-parameters")
#: qmpd's own extensions (allowed on top of QEMU 7.2's members)
QMPD_EXTENSIONS = ("x-colo-pipeline", "x-colo-max-dirty-pages")


def shape(info: list[dict[str, Any]], name: str) -> Any:
    """The structure of type ``name``, with masked names resolved away."""
    entry = {e["name"]: e for e in info}[name]
    kind = entry["meta-type"]
    if kind == "builtin":
        return entry["json-type"]
    if kind == "array":
        return [shape(info, entry["element-type"])]
    if kind == "enum":
        return {"enum": entry["values"]}
    if kind == "alternate":
        return {"alternate": [shape(info, m["type"]) for m in entry["members"]]}
    assert kind == "object", entry
    out: dict[str, Any] = {"members": [
        (m["name"], "default" in m, shape(info, m["type"])) for m in entry["members"]]}
    if "variants" in entry:
        out["tag"] = entry["tag"]
        out["variants"] = {v["case"]: shape(info, v["type"]) for v in entry["variants"]}
    return out


def command_shapes(path: str) -> dict[str, Any]:
    client = Raw(path)
    client.negotiate()
    info = client.cmd({"execute": "query-qmp-schema"})["return"]
    client.close()
    commands = {e["name"]: e for e in info if e["meta-type"] == "command"}
    return {c: {"arg": shape(info, commands[c]["arg-type"]),
                "ret": shape(info, commands[c]["ret-type"])} for c in COMMANDS}


def _without_extensions(s: Any) -> Any:
    if isinstance(s, dict) and "members" in s:
        return {**s, "members": [m for m in s["members"] if m[0] not in QMPD_EXTENSIONS]}
    return s


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("qemu", "qmpd"):
        with qmpd_or_qemu72(kind, tmp_path_factory.mktemp(kind)) as (path, _pid):
            out[kind] = command_shapes(path)
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_shape_as_qemu_72(shapes: dict[str, dict[str, Any]], command: str) -> None:
    qemu, qmpd = shapes["qemu"][command], shapes["qmpd"][command]
    for part in ("arg", "ret"):
        assert _without_extensions(qmpd[part]) == qemu[part], (command, part)


def test_qmpd_extensions_are_optional_extras(shapes: dict[str, dict[str, Any]]) -> None:
    """qmpd adds only its x-colo-... parameters, both optional, after QEMU's members."""
    for command, part in (("query-migrate-parameters", "ret"),
                          ("migrate-set-parameters", "arg")):
        members = shapes["qmpd"][command][part]["members"]
        assert [(n, opt) for n, opt, _ in members[-2:]] == \
            [(n, True) for n in QMPD_EXTENSIONS]


def test_refused_parameter_is_absent_until_set_and_refused(tmp_path: Path) -> None:
    """block-bitmap-mapping is in the shapes, absent from the reply (as 7.2 before it is
    set) and refused by qmpd, which has no block devices."""
    with qmpd_or_qemu72("qmpd", tmp_path) as (path, _pid):
        client = Raw(path)
        client.negotiate()
        assert "block-bitmap-mapping" not in \
            client.cmd({"execute": "query-migrate-parameters"})["return"]
        reply = client.cmd({"execute": "migrate-set-parameters",
                            "arguments": {"block-bitmap-mapping": []}})
        assert reply["error"] == {
            "class": "GenericError",
            "desc": "Migration parameter 'block-bitmap-mapping' is not supported by qmpd"}
        client.close()
