"""schema.json: the single source of truth for every QMP command, event and type.

Users: the daemon loads it once (:func:`load`); the dispatcher checks arguments with
its compiled visitors and returns with its pydantic adapters; ``query-qmp-schema`` and
``query-commands`` are derived from it; the event bus validates event data; tests run
every example in it.

File format (``qmpd/schema/schema.json``, shipped as package data)::

    {"qmpd-schema": 1, "doc": "...", "definitions": [ENTRY, ...]}

Each ENTRY has exactly one kind key naming it, plus ``doc`` (text), ``since``
(QEMU release that introduced it, "qmpd X" for our own) and optional ``features``
(list of strings; ``unstable`` is required for ``x-`` names):

- ``{"command": "name", "data": MEMBERS, "returns": TYPE, "allow-oob": true,
  "examples": [[{"->": REQUEST}, {"<-": REPLY}], ...]}``. ``data``/``returns``
  are optional (no ``returns`` means ``{}`` is returned). Every command needs at
  least one example; tests send each ``->`` and compare the next ``<-`` exactly,
  except that a value ``"$any"`` matches anything.
- ``{"event": "NAME", "data": MEMBERS}``
- ``{"struct": "Name", "data": MEMBERS, "base": "OtherStruct"}``
- ``{"enum": "Name", "data": ["value", {"name": "value2", "features": [...]}]}``
- ``{"union": "Name", "base": MEMBERS or "Struct", "discriminator": "member",
  "data": {"enum-value": "VariantStruct", ...}}`` (a flat union)
- ``{"alternate": "Name", "data": {"case": TYPE, ...}}``

MEMBERS is an object ``{"name": TYPE, "*optional": TYPE, "m": {"type": TYPE,
"doc": "...", "features": [...]}}``. TYPE is a builtin (``str``, ``bool``,
``number``, ``null``, ``any``, ``int``, ``int8``..``int64``, ``uint8``..``uint64``,
``size``), a defined type name, or ``["Element"]`` for an array. An optional member
of a struct may carry ``"default": VALUE``, the value it has until set (every
``MigrationParameters`` member has one: :mod:`qmpd.migration.config` takes its
defaults from there); loading checks the value against the member's type, as an
argument would be, and refuses a ``default`` anywhere else.

Adding a command: add its entry (with an example) here AND a handler with
``@command("name")`` in a module listed in :mod:`qmpd.commands`; the daemon refuses
to start if either side is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmpd.errors import ArgumentError
from qmpd.schema.introspect import build_schema_info
from qmpd.schema.loader import DEFAULT_SCHEMA, Definition, SchemaError, SchemaIndex, load_schema
from qmpd.schema.models import ModelBuilder
from qmpd.schema.visitor import VisitorCompiler, compile_arguments

__all__ = ["ArgumentError", "Definition", "Schema", "SchemaError", "load"]


class Schema:
    """A loaded schema with everything derived from it, built once."""

    def __init__(self, index: SchemaIndex) -> None:
        self.index = index
        self.models = ModelBuilder(index)
        compiler = VisitorCompiler(index)
        _check_defaults(index, compiler)
        #: command name -> ``check(arguments) -> dict`` (QEMU texts on error)
        self.arg_checkers: dict[str, Callable[[Any], Any]] = {
            name: compile_arguments(compiler, d.args_type)
            for name, d in index.commands.items()}
        #: the ``query-qmp-schema`` return value
        self.schema_info = build_schema_info(index)

    def return_model(self, command: str) -> Any:
        """Pydantic TypeAdapter of a command's return value (None: returns ``{}``)."""
        ref = self.index.commands[command].returns
        return None if ref is None else self.models.adapter(ref)

    def validate_event(self, name: str, data: dict[str, Any] | None) -> None:
        """Check an event against its schema entry.

        :raise SchemaError: unknown event or data that does not match.
        """
        d = self.index.events.get(name)
        if d is None:
            raise SchemaError(f"event {name} is not in schema.json")
        try:
            self.models.adapter(d.args_type).validate_python(data or {})
        except ValueError as err:
            raise SchemaError(f"event {name}: bad data: {err}") from err


def _check_defaults(index: SchemaIndex, compiler: VisitorCompiler) -> None:
    """Every member ``default`` passes its type's check unchanged.

    :raise SchemaError: naming the member and the check's text.
    """
    for d in index.types.values():
        for m in d.members:
            if m.default is None:
                continue
            try:
                value = compiler.compile(m.type)(m.default, m.name, m.name)
            except ArgumentError as err:
                raise SchemaError(f"{d.name}.{m.name}: bad default {m.default!r}: "
                                  f"{err}") from err
            if value != m.default:
                raise SchemaError(f"{d.name}.{m.name}: bad default {m.default!r}: it "
                                  f"reads as {value!r}")


def load(path: Path | str = DEFAULT_SCHEMA) -> Schema:
    """Load, check and compile a schema file.

    :raise SchemaError: if the file is malformed or inconsistent.
    """
    return Schema(load_schema(path))
