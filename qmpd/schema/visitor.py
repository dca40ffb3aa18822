"""Argument checking with QEMU's input-visitor semantics and texts, compiled once.

Users: the dispatcher, once per request. For every command the schema's argument
object is compiled into a closure tree at start-up, so a request costs a few dict
look-ups (an argument-less command with ``{}`` costs one truth test).

Texts and rules follow qapi/qobject-input-visitor.c and qapi/qapi-visit-core.c (7.2):
members are visited in schema order (so a missing member is reported before an
unexpected one), names are full dotted paths (``a.b[0].c``) except the range and
enum errors, which QEMU reports with the bare member name (``null`` for list
elements). ``uint64`` accepts negative integers modulo 2^64, as QEMU does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qmpd.errors import (
    ArgumentError,
    ArgumentRangeError,
    ArgumentTypeError,
    ArgumentValueError,
    MissingArgumentError,
    UnexpectedArgumentError,
)
from qmpd.schema.loader import SchemaIndex

#: (value, full name, short name) -> checked value
Check = Callable[[Any, str, str], Any]

_INT_RANGES: dict[str, tuple[int, int, str]] = {
    "int8": (-(1 << 7), (1 << 7) - 1, "int8_t"),
    "int16": (-(1 << 15), (1 << 15) - 1, "int16_t"),
    "int32": (-(1 << 31), (1 << 31) - 1, "int32_t"),
    "uint8": (0, (1 << 8) - 1, "uint8_t"),
    "uint16": (0, (1 << 16) - 1, "uint16_t"),
    "uint32": (0, (1 << 32) - 1, "uint32_t"),
}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _is_int(v: Any) -> bool:
    return type(v) is int and _INT64[0] <= v <= _INT64[1]


def _check_str(v: Any, full: str, short: str) -> Any:
    if type(v) is not str:
        raise ArgumentTypeError(full, "string")
    return v


def _check_bool(v: Any, full: str, short: str) -> Any:
    if type(v) is not bool:
        raise ArgumentTypeError(full, "boolean")
    return v


def _check_int(v: Any, full: str, short: str) -> Any:
    if not _is_int(v):
        raise ArgumentTypeError(full, "integer")
    return v


def _check_uint64(v: Any, full: str, short: str) -> Any:
    if type(v) is int and _INT64[0] <= v < (1 << 64):
        return v & ((1 << 64) - 1)
    raise ArgumentRangeError(full, "uint64")


def _check_size(v: Any, full: str, short: str) -> Any:
    if type(v) is int and 0 <= v < (1 << 64):
        return v
    raise ArgumentTypeError(full, "size")


def _check_number(v: Any, full: str, short: str) -> Any:
    if type(v) not in (int, float):
        raise ArgumentTypeError(full, "number")
    return float(v)


def _check_null(v: Any, full: str, short: str) -> Any:
    if v is not None:
        raise ArgumentTypeError(full, "null")
    return v


def _check_any(v: Any, full: str, short: str) -> Any:
    return v


def _ranged(builtin: str) -> Check:
    low, high, ctype = _INT_RANGES[builtin]
    base = _check_uint64 if builtin.startswith("u") else _check_int

    def check(v: Any, full: str, short: str) -> Any:
        value = base(v, full, short)
        if not low <= value <= high:
            raise ArgumentRangeError(short, ctype)
        return value
    return check


_BUILTIN_CHECKS: dict[str, Check] = {
    "str": _check_str, "bool": _check_bool, "int": _check_int, "int64": _check_int,
    "uint64": _check_uint64, "size": _check_size, "number": _check_number,
    "null": _check_null, "any": _check_any,
}


def _member_name(full: str, member: str) -> str:
    return f"{full}.{member}" if full else member


class VisitorCompiler:
    """Builds (and caches) a checker per type reference of one schema."""

    def __init__(self, index: SchemaIndex) -> None:
        self._index = index
        self._cache: dict[str, Check] = {}

    def compile(self, ref: str) -> Check:
        """The checker for a type reference (builtin, named type or ``[T]``)."""
        check = self._cache.get(ref)
        if check is None:
            self._cache[ref] = self._late(ref)  # allows recursive types
            check = self._build(ref)
            self._cache[ref] = check
        return check

    def _late(self, ref: str) -> Check:
        return lambda v, full, short: self._cache[ref](v, full, short)

    def _build(self, ref: str) -> Check:
        if ref.startswith("["):
            return self._array(self.compile(ref[1:-1]))
        if ref in _BUILTIN_CHECKS:
            return _BUILTIN_CHECKS[ref]
        if ref in _INT_RANGES:
            return _ranged(ref)
        d = self._index.types[ref]
        if d.kind == "enum":
            return self._enum(frozenset(d.values))
        if d.kind == "struct":
            return self._struct([(m.name, m.optional, self.compile(m.type)) for m in d.members])
        if d.kind == "union":
            return self._union(ref)
        return self._alternate(ref, [(self._index, alt) for alt in d.alternatives])

    @staticmethod
    def _array(element: Check) -> Check:
        def check(v: Any, full: str, short: str) -> Any:
            if type(v) is not list:
                raise ArgumentTypeError(full, "array")
            return [element(item, f"{full}[{i}]", "null") for i, item in enumerate(v)]
        return check

    @staticmethod
    def _enum(values: frozenset[str]) -> Check:
        def check(v: Any, full: str, short: str) -> Any:
            if type(v) is not str:
                raise ArgumentTypeError(full, "string")
            if v not in values:
                raise ArgumentValueError(short, v)
            return v
        return check

    @staticmethod
    def _visit_members(v: dict[str, Any], full: str, out: dict[str, Any],
                       members: list[tuple[str, bool, Check]]) -> None:
        for name, optional, member_check in members:
            if name in v:
                out[name] = member_check(v[name], _member_name(full, name), name)
            elif not optional:
                raise MissingArgumentError(_member_name(full, name))

    @staticmethod
    def _unexpected(v: dict[str, Any], out: dict[str, Any], full: str) -> None:
        for key in v:
            if key not in out:
                raise UnexpectedArgumentError(_member_name(full, key))

    def _struct(self, members: list[tuple[str, bool, Check]]) -> Check:
        visit, unexpected = self._visit_members, self._unexpected

        def check(v: Any, full: str, short: str) -> Any:
            if type(v) is not dict:
                raise ArgumentTypeError(full or "null", "object")
            if not v and not members:
                return v
            out: dict[str, Any] = {}
            visit(v, full, out, members)
            if len(out) != len(v):
                unexpected(v, out, full)
            return out
        return check

    def _union(self, ref: str) -> Check:
        d = self._index.types[ref]
        base = [(m.name, m.optional, self.compile(m.type)) for m in d.base]
        variants = {case: [(m.name, m.optional, self.compile(m.type))
                           for m in self._index.types[struct].members]
                    for case, struct in d.variants.items()}
        visit, unexpected, tag = self._visit_members, self._unexpected, d.discriminator

        def check(v: Any, full: str, short: str) -> Any:
            if type(v) is not dict:
                raise ArgumentTypeError(full or "null", "object")
            out: dict[str, Any] = {}
            visit(v, full, out, base)
            visit(v, full, out, variants.get(out[tag], []))
            if len(out) != len(v):
                unexpected(v, out, full)
            return out
        return check

    def _alternate(self, ref: str, alts: list[tuple[SchemaIndex, str]]) -> Check:
        checks = [self.compile(alt) for _, alt in alts]

        def check(v: Any, full: str, short: str) -> Any:
            for alt_check in checks:
                try:
                    return alt_check(v, full, short)
                except ArgumentError:
                    continue
            raise ArgumentTypeError(full, ref)
        return check


def compile_arguments(compiler: VisitorCompiler, args_type: str) -> Callable[[Any], Any]:
    """The argument checker of one command: ``check(arguments) -> dict``.

    :raise ArgumentError: with QEMU's text for the first problem found.
    """
    check = compiler.compile(args_type)
    return lambda args: check(args, "", "null")
