"""Pydantic validators built from the schema: command arguments, returns, event data.

Users: the dispatcher validates every handler's return value with
:meth:`ModelBuilder.adapter` (cached ``TypeAdapter``, strict, unknown members
forbidden), so a handler that drifts from schema.json fails loudly in tests instead of
confusing a client; the event bus validates event data the same way. Objects become
``TypedDict`` classes (validation returns the dict itself, which is cheap); enums
become ``Literal``; QAPI integer types carry their ranges.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Union

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter
from pydantic.functional_validators import PlainValidator
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from qmpd.schema.loader import SchemaIndex

_STRICT = ConfigDict(strict=True, extra="forbid")


def _int(low: int, high: int) -> Any:
    return Annotated[StrictInt, Field(ge=low, le=high)]


_BUILTIN_TYPES: dict[str, Any] = {
    "str": StrictStr, "bool": StrictBool, "number": Union[StrictInt, StrictFloat],  # noqa: UP007
    "null": None, "any": Any,
    "int": _int(-(1 << 63), (1 << 63) - 1), "int64": _int(-(1 << 63), (1 << 63) - 1),
    "int8": _int(-(1 << 7), (1 << 7) - 1), "int16": _int(-(1 << 15), (1 << 15) - 1),
    "int32": _int(-(1 << 31), (1 << 31) - 1), "uint8": _int(0, (1 << 8) - 1),
    "uint16": _int(0, (1 << 16) - 1), "uint32": _int(0, (1 << 32) - 1),
    "uint64": _int(0, (1 << 64) - 1), "size": _int(0, (1 << 64) - 1),
}


class ModelBuilder:
    """Turns schema type references into Python types and cached TypeAdapters."""

    def __init__(self, index: SchemaIndex) -> None:
        self._index = index
        self._types: dict[str, Any] = {}
        self._adapters: dict[str, TypeAdapter[Any]] = {}

    def python_type(self, ref: str) -> Any:
        """The (pydantic-validatable) Python type for a type reference."""
        if ref in self._types:
            return self._types[ref]
        if ref.startswith("["):
            result: Any = list[self.python_type(ref[1:-1])]  # type: ignore[misc]
        elif ref in _BUILTIN_TYPES:
            result = _BUILTIN_TYPES[ref]
        else:
            d = self._index.types[ref]
            if d.kind == "enum":
                result = Literal[tuple(d.values)]
            elif d.kind == "struct":
                result = self._typed_dict(ref, d.members)
            elif d.kind == "union":
                result = self._union(ref)
            else:
                result = Union[tuple(self.python_type(a) for a in d.alternatives)]  # noqa: UP007
        self._types[ref] = result
        return result

    def _typed_dict(self, name: str, members: list[Any]) -> Any:
        fields: dict[str, Any] = {}
        for m in members:
            t = self.python_type(m.type)
            fields[m.name] = NotRequired[t] if m.optional else t
        make: Any = TypedDict
        cls: Any = make(name.replace("-", "_"), fields)
        cls.__pydantic_config__ = _STRICT
        return cls

    def _union(self, ref: str) -> Any:
        d = self._index.types[ref]
        merged = {case: TypeAdapter(self._typed_dict(
            f"{ref}_{case}", d.base + self._index.types[struct].members))
            for case, struct in d.variants.items()}
        bare = TypeAdapter(self._typed_dict(f"{ref}_base", d.base))
        tag = d.discriminator

        def validate(value: Any) -> Any:
            if isinstance(value, dict) and value.get(tag) in merged:
                return merged[value[tag]].validate_python(value)
            return bare.validate_python(value)
        return Annotated[dict[str, Any], PlainValidator(validate)]

    def adapter(self, ref: str) -> TypeAdapter[Any]:
        """A cached strict TypeAdapter for a type reference."""
        adapter = self._adapters.get(ref)
        if adapter is None:
            adapter = TypeAdapter(self.python_type(ref))
            self._adapters[ref] = adapter
        return adapter
