"""``query-qmp-schema`` output: QEMU's SchemaInfo list with masked type names.

Users: the ``query-qmp-schema`` handler (computed once at start-up).

As QEMU's scripts/qapi/introspect.py: commands and events keep their names; every
other type reachable from them is renamed to a decimal string in order of first use;
integer types collapse to ``int``; arrays are ``[elem]``; a union lists its declared
variants, then every other tag value with the empty object; argument-less commands and
events, and commands without a return, point at the masked empty object. Enums carry
both ``values`` and ``members``; ``allow-oob`` appears only when true, ``features``
only when non-empty.
"""

from __future__ import annotations

from typing import Any

from qmpd.schema.loader import BUILTINS, Definition, SchemaIndex

_EMPTY = "q_empty"


class _Masker:
    def __init__(self, index: SchemaIndex) -> None:
        self.index = index
        self.names: dict[str, str] = {}
        self.pending: list[str] = []
        self.builtins: set[str] = set()

    def use(self, ref: str) -> str:
        if ref.startswith("["):
            return f"[{self.use(ref[1:-1])}]"
        if ref in BUILTINS:
            name = "int" if BUILTINS[ref] == "int" else ref
            self.builtins.add(name)
            return name
        if ref not in self.names:
            self.names[ref] = str(len(self.names))
            self.pending.append(ref)
        return self.names[ref]

    def use_object(self, ref: str | None) -> str:
        if ref is None:
            return self.use(_EMPTY)
        if ref in self.index.types and self.index.types[ref].kind == "struct" \
                and not self.index.types[ref].members:
            return self.use(_EMPTY)
        return self.use(ref)


def _with_features(entry: dict[str, Any], features: tuple[str, ...]) -> dict[str, Any]:
    if features:
        entry["features"] = list(features)
    return entry


def _members(m: _Masker, d: Definition, members: list[Any]) -> list[dict[str, Any]]:
    out = []
    for member in members:
        entry: dict[str, Any] = {"name": member.name, "type": m.use(member.type)}
        if member.optional:
            entry["default"] = None
        out.append(_with_features(entry, member.features))
    return out


def _type_entry(m: _Masker, ref: str) -> dict[str, Any]:
    name = m.names[ref]
    if ref == _EMPTY:
        return {"name": name, "meta-type": "object", "members": []}
    d = m.index.types[ref]
    if d.kind == "enum":
        entry: dict[str, Any] = {
            "name": name, "meta-type": "enum",
            "members": [_with_features({"name": v}, d.value_features.get(v, ()))
                        for v in d.values],
            "values": list(d.values)}
    elif d.kind == "alternate":
        entry = {"name": name, "meta-type": "alternate",
                 "members": [{"type": m.use(alt)} for alt in d.alternatives]}
    elif d.kind == "union":
        entry = {"name": name, "meta-type": "object", "members": _members(m, d, d.base),
                 "tag": d.discriminator,
                 "variants": [{"case": case, "type": m.use(struct)}
                              for case, struct in d.variants.items()]}
        # as QEMU: every other tag value is a variant without members
        tag_type = next(b.type for b in d.base if b.name == d.discriminator)
        entry["variants"] += [{"case": v, "type": m.use(_EMPTY)}
                              for v in m.index.types[tag_type].values
                              if v not in d.variants]
    else:
        entry = {"name": name, "meta-type": "object", "members": _members(m, d, d.members)}
    return _with_features(entry, d.features)


def build_schema_info(index: SchemaIndex) -> list[dict[str, Any]]:
    """The ``query-qmp-schema`` return value for ``index``."""
    m = _Masker(index)
    entries: list[dict[str, Any]] = []
    for d in index.commands.values():
        entry: dict[str, Any] = {"name": d.name, "meta-type": "command",
                                 "arg-type": m.use_object(d.args_type),
                                 "ret-type": m.use_object(None) if d.returns is None
                                 else m.use(d.returns)}
        if d.allow_oob:
            entry["allow-oob"] = True
        entries.append(_with_features(entry, d.features))
    for d in index.events.values():
        entries.append(_with_features({"name": d.name, "meta-type": "event",
                                       "arg-type": m.use_object(d.args_type)}, d.features))
    done: set[str] = set()
    while m.pending:
        ref = m.pending.pop(0)
        if ref not in done:
            done.add(ref)
            entries.append(_type_entry(m, ref))
    arrays: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for ref in _refs(entry):
            if ref.startswith("[") and ref not in arrays:
                arrays[ref] = {"name": ref, "meta-type": "array", "element-type": ref[1:-1]}
    for ref in list(arrays):  # nested arrays: [[x]] also needs [x]
        inner = ref[1:-1]
        while inner.startswith("[") and inner not in arrays:
            arrays[inner] = {"name": inner, "meta-type": "array", "element-type": inner[1:-1]}
            inner = inner[1:-1]
    entries.extend(arrays.values())
    for name in sorted(m.builtins):
        entries.append({"name": name, "meta-type": "builtin", "json-type": BUILTINS[name]})
    return entries


def _refs(entry: dict[str, Any]) -> list[str]:
    refs = [entry[k] for k in ("arg-type", "ret-type", "element-type") if k in entry]
    refs += [member["type"] for member in entry.get("members", []) if "type" in member]
    refs += [variant["type"] for variant in entry.get("variants", [])]
    return refs
