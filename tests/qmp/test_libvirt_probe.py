"""A libvirt-style capability probe replayed against qmpd (qmp-clients.md §4).

Like libvirt's monitor: lines split only on CRLF, ``libvirt-N`` ids, strictly one
command at a time, ``qmp_capabilities`` sent without waiting for the greeting, and
``query-qmp-schema`` checked by the rules of libvirt's ``qemu_qapi.c``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from qmp_helpers import Qmpd


class LibvirtMonitor:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.serial = 0

    def _line(self) -> dict[str, Any]:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "EOF"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        value = json.loads(line)
        assert isinstance(value, dict), "non-object line is fatal to libvirt"
        return value

    def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.serial += 1
        cmd: dict[str, Any] = {"execute": name, "id": f"libvirt-{self.serial}"}
        if args is not None:
            cmd["arguments"] = args
        self.sock.sendall(json.dumps(cmd, separators=(",", ":")).encode() + b"\r\n")
        while True:
            msg = self._line()
            if "QMP" in msg or "event" in msg:
                continue
            assert "return" in msg or "error" in msg, "Unknown JSON reply"
            return msg


def check_schema_by_libvirt_rules(schema: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """qemu_qapi.c: names unique, meta-type everywhere, every reference resolvable."""
    table: dict[str, dict[str, Any]] = {}
    for entry in schema:
        assert isinstance(entry.get("name"), str), "malformed QMP schema"
        assert entry["name"] not in table, f"duplicate name {entry['name']}"
        table[entry["name"]] = entry
    refs_by_kind = {
        "command": lambda e: [e["arg-type"], e["ret-type"]],
        "event": lambda e: [e["arg-type"]],
        "object": lambda e: [m["type"] for m in e["members"]]
        + [v["type"] for v in e.get("variants", [])],
        "array": lambda e: [e["element-type"]],
        "alternate": lambda e: [m["type"] for m in e["members"]],
        "enum": lambda e: [],
        "builtin": lambda e: [],
    }
    for entry in schema:
        kind = entry.get("meta-type")
        assert kind in refs_by_kind, f"{entry['name']}: bad meta-type {kind!r}"
        for ref in refs_by_kind[kind](entry):
            assert ref in table, f"{entry['name']}: dangling reference {ref}"
        if kind == "enum":
            assert all(isinstance(v, str) for v in entry["values"])
            assert all(isinstance(m["name"], str) for m in entry["members"])
        if kind == "builtin":
            assert entry["json-type"] in ("string", "number", "int", "boolean", "null",
                                          "object", "array", "value")
        assert all(isinstance(f, str) for f in entry.get("features", []))
    return table


def query(table: dict[str, dict[str, Any]], path: str) -> dict[str, Any] | None:
    """A libvirt schema query like ``qmp_capabilities/arg-type/enable``."""
    cmd, *steps = path.split("/")
    entry: dict[str, Any] | None = table.get(cmd)
    for step in steps:
        if entry is None:
            return None
        if step in ("arg-type", "ret-type", "element-type"):
            entry = table.get(entry[step])
        elif step.startswith("^"):
            values = entry.get("values", [])
            return entry if step[1:] in values else None
        else:
            member = next((m for m in entry.get("members", []) if m.get("name") == step), None)
            entry = table.get(member["type"]) if member else None
            if entry is not None and entry["meta-type"] == "array":
                entry = table.get(entry["element-type"])
    return entry


def test_libvirt_probe_sequence(daemon: Qmpd) -> None:
    mon = LibvirtMonitor(daemon.path)
    assert mon.command("qmp_capabilities") == {"return": {}, "id": "libvirt-1"}
    version = mon.command("query-version")["return"]
    assert all(type(version["qemu"][k]) is int for k in ("major", "minor", "micro"))
    assert (version["qemu"]["major"], version["qemu"]["minor"]) >= (4, 2)
    assert isinstance(version["package"], str)
    assert mon.command("query-target")["return"]["arch"] == "x86_64"
    schema = mon.command("query-qmp-schema")["return"]
    table = check_schema_by_libvirt_rules(schema)
    assert query(table, "qmp_capabilities/arg-type/enable/^oob") is not None
    assert query(table, "query-status/ret-type/status/^colo") is not None
    assert "allow-oob" not in table["qmp_capabilities"]  # as QEMU 7.2's control.json
    assert table["migrate-pause"].get("allow-oob") is True
    assert "allow-oob" not in table["query-status"]
    kvm = mon.command("query-kvm")["return"]
    assert type(kvm["enabled"]) is bool and type(kvm["present"]) is bool
    for name in ("qom-list-types", "query-machines", "query-cpu-definitions"):
        reply = mon.command(name)
        assert reply["error"]["class"] == "CommandNotFound"
        assert reply["id"] == f"libvirt-{mon.serial}"
    caps = mon.command("query-migrate-capabilities")
    if "query-migrate-capabilities" in table:
        assert all(isinstance(c["capability"], str) for c in caps["return"])
    else:
        assert caps["error"]["class"] == "CommandNotFound"


def test_schema_masks_type_names_and_collapses_integers(daemon: Qmpd) -> None:
    mon = LibvirtMonitor(daemon.path)
    mon.command("qmp_capabilities")
    schema = mon.command("query-qmp-schema")["return"]
    named = {e["name"] for e in schema if e["meta-type"] in ("command", "event")}
    assert {"query-status", "quit", "SHUTDOWN"} <= named
    others = [e["name"] for e in schema if e["meta-type"] in ("object", "enum", "alternate")]
    assert all(name.isdigit() for name in others)
    builtins = {e["name"] for e in schema if e["meta-type"] == "builtin"}
    assert builtins <= {"str", "int", "bool", "number", "null", "any"}
    arrays = [e for e in schema if e["meta-type"] == "array"]
    assert all(e["name"] == f"[{e['element-type']}]" for e in arrays)
    table = {e["name"]: e for e in schema}
    empty = query(table, "quit/arg-type")
    assert empty is not None and empty["meta-type"] == "object" and empty["members"] == []
    assert table["query-version"]["arg-type"] == empty["name"]  # one shared empty object
