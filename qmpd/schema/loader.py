"""Load and check ``schema.json`` into a :class:`SchemaIndex` (format: see the package doc).

Users: the daemon at start-up; the dispatcher, introspection, event bus and tests read
the index. Loading fails with :class:`SchemaError` on any inconsistency: duplicate
names, dangling type references, missing doc/since, an ``x-`` name without the
``unstable`` feature, a command without an example, a bad union.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmpd.errors import QmpdError

#: Builtin types: name -> (JSON type class for introspection, C type for range errors).
BUILTINS: dict[str, str] = {
    "str": "string", "int": "int", "int8": "int", "int16": "int", "int32": "int",
    "int64": "int", "uint8": "int", "uint16": "int", "uint32": "int", "uint64": "int",
    "size": "int", "number": "number", "bool": "boolean", "null": "null", "any": "value",
}

KINDS = ("command", "event", "struct", "enum", "union", "alternate")

#: The schema shipped inside the package (package data, so a wheel carries it).
DEFAULT_SCHEMA = Path(__file__).resolve().with_name("schema.json")


class SchemaError(QmpdError):
    """schema.json is malformed or inconsistent, or does not match the handlers."""


@dataclass(frozen=True)
class Member:
    """One member of an object type: QMP name, type reference ("[T]" for arrays).

    ``default``: the value an optional struct member has when nobody set it (schema key
    ``"default"``; None when the schema gives none). The Schema checks it against the
    member's type.
    """

    name: str
    type: str
    optional: bool = False
    doc: str = ""
    features: tuple[str, ...] = ()
    default: Any = None


@dataclass
class Definition:
    """One schema.json entry (any kind)."""

    kind: str
    name: str
    doc: str
    since: str
    features: tuple[str, ...] = ()
    members: list[Member] = field(default_factory=list)   # struct/event/command args
    base: list[Member] = field(default_factory=list)      # union base members
    values: list[str] = field(default_factory=list)       # enum
    value_features: dict[str, tuple[str, ...]] = field(default_factory=dict)
    discriminator: str = ""                               # union
    variants: dict[str, str] = field(default_factory=dict)  # union case -> struct
    alternatives: list[str] = field(default_factory=list)  # alternate
    returns: str | None = None                            # command
    allow_oob: bool = False                               # command
    examples: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def args_type(self) -> str:
        """Name of the implicit argument object of a command or event."""
        return f"q_obj_{self.name}-arg"


@dataclass
class SchemaIndex:
    """Every definition by kind and name."""

    commands: dict[str, Definition]
    events: dict[str, Definition]
    types: dict[str, Definition]


def _typeref(raw: Any, where: str) -> str:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        return f"[{raw[0]}]"
    if isinstance(raw, str) and raw:
        return raw
    raise SchemaError(f"{where}: bad type reference {raw!r}")


def _members(raw: Any, where: str, defaults: bool = False) -> list[Member]:
    """Parse MEMBERS; ``defaults``: a ``"default"`` is allowed (optional struct members)."""
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: 'data' must be an object of members")
    members = []
    for key, spec in raw.items():
        optional = key.startswith("*")
        name = key[1:] if optional else key
        if isinstance(spec, dict):
            default = spec.get("default")
            if "default" in spec and (default is None or not (defaults and optional)):
                raise SchemaError(f"{where}.{name}: a 'default' must be a value, on an "
                                  "optional member of a struct")
            members.append(Member(name, _typeref(spec.get("type"), f"{where}.{name}"),
                                  optional, str(spec.get("doc", "")),
                                  tuple(spec.get("features", ())), default))
        else:
            members.append(Member(name, _typeref(spec, f"{where}.{name}"), optional))
    return members


def _parse(entry: dict[str, Any]) -> Definition:
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise SchemaError(f"entry {entry!r:.80}: needs exactly one of {KINDS}")
    kind = kinds[0]
    name = entry[kind]
    where = f"{kind} {name}"
    if not isinstance(entry.get("doc"), str) or not entry["doc"].strip():
        raise SchemaError(f"{where}: missing 'doc'")
    if not isinstance(entry.get("since"), str):
        raise SchemaError(f"{where}: missing 'since'")
    features = tuple(entry.get("features", ()))
    if name.startswith("x-") and "unstable" not in features:
        raise SchemaError(f"{where}: x- names need feature 'unstable'")
    d = Definition(kind, name, entry["doc"], entry["since"], features)
    data = entry.get("data")
    if kind in ("command", "event", "struct"):
        d.members = _members(data or {}, where, defaults=kind == "struct")
        if kind == "struct" and "base" in entry:
            d.base = [Member("*base", str(entry["base"]))]  # resolved in _resolve_bases
    if kind == "command":
        d.returns = _typeref(entry["returns"], where) if "returns" in entry else None
        d.allow_oob = bool(entry.get("allow-oob", False))
        d.examples = entry.get("examples", [])
        if not d.examples:
            raise SchemaError(f"{where}: needs at least one example")
    elif kind == "enum":
        for value in data or ():
            vname = value if isinstance(value, str) else value["name"]
            d.values.append(vname)
            if isinstance(value, dict) and value.get("features"):
                d.value_features[vname] = tuple(value["features"])
    elif kind == "union":
        base = entry.get("base")
        d.base = _members(base, where) if isinstance(base, dict) else \
            [Member("*base", str(base))]
        d.discriminator = str(entry.get("discriminator", ""))
        d.variants = {str(k): str(v) for k, v in (data or {}).items()}
    elif kind == "alternate":
        d.alternatives = [_typeref(v, where) for v in (data or {}).values()]
    return d


def load_schema(path: Path | str = DEFAULT_SCHEMA) -> SchemaIndex:
    """Read, parse and check a schema file.

    :raise SchemaError: on any malformed or inconsistent entry.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SchemaError(f"cannot read schema {path}: {err}") from err
    if not isinstance(raw, dict) or raw.get("qmpd-schema") != 1:
        raise SchemaError(f"{path}: not a qmpd schema (need \"qmpd-schema\": 1)")
    index = SchemaIndex({}, {}, {})
    seen: set[str] = set()
    for entry in raw.get("definitions", []):
        d = _parse(entry)
        if d.name in seen:
            raise SchemaError(f"duplicate definition '{d.name}'")
        seen.add(d.name)
        table = {"command": index.commands, "event": index.events}.get(d.kind, index.types)
        table[d.name] = d
    for d in [*index.commands.values(), *index.events.values()]:
        implicit = Definition("struct", d.args_type, d.doc, d.since, members=d.members)
        index.types[implicit.name] = implicit
    _resolve_bases(index)
    _check_refs(index)
    return index


def _base_members(index: SchemaIndex, d: Definition) -> list[Member]:
    if d.base and d.base[0].name == "*base":
        base = index.types.get(d.base[0].type)
        if base is None or base.kind != "struct" or base is d:
            raise SchemaError(f"{d.kind} {d.name}: base '{d.base[0].type}' is not a struct")
        _resolve(index, base)
        return list(base.members)
    return d.base


def _resolve(index: SchemaIndex, d: Definition) -> None:
    if d.kind == "struct" and d.base:
        base = _base_members(index, d)
        d.members = base + d.members
        d.base = []
    elif d.kind == "union" and d.base and d.base[0].name == "*base":
        d.base = _base_members(index, d)


def _resolve_bases(index: SchemaIndex) -> None:
    for d in list(index.types.values()):
        _resolve(index, d)


def _check_ref(index: SchemaIndex, ref: str, where: str) -> None:
    inner = ref[1:-1] if ref.startswith("[") else ref
    if inner not in BUILTINS and inner not in index.types:
        raise SchemaError(f"{where}: unknown type '{inner}'")


def _check_refs(index: SchemaIndex) -> None:
    for d in index.commands.values():
        if d.returns:
            _check_ref(index, d.returns, f"command {d.name}")
    for d in index.types.values():
        for m in d.members + d.base:
            _check_ref(index, m.type, f"{d.name}.{m.name}")
        for alt in d.alternatives:
            _check_ref(index, alt, d.name)
        if d.kind == "union":
            tag = next((m for m in d.base if m.name == d.discriminator), None)
            enum = index.types.get(tag.type) if tag else None
            if enum is None or enum.kind != "enum":
                raise SchemaError(f"union {d.name}: discriminator must be an enum member")
            for case, variant in d.variants.items():
                if case not in enum.values:
                    raise SchemaError(f"union {d.name}: '{case}' is not a value of {enum.name}")
                if index.types.get(variant) is None or index.types[variant].kind != "struct":
                    raise SchemaError(f"union {d.name}: variant '{variant}' is not a struct")
