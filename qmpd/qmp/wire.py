"""Server-to-client message encoding, byte-compatible with QEMU 7.2's monitor output.

Users: the session (greeting, replies), the event bus (events), the dispatcher.

QEMU writes each message as one JSON object with ``", "``/``": "`` separators, ASCII
only (``\\u%04X`` escapes, upper-case hex), followed by CRLF. Member order is the
iteration order of QEMU's QDict hash table (512 buckets, tdb_hash, newest first within a
bucket); :func:`qdict_order` reproduces it, so ``{"return": {}, "id": 1}`` and the
greeting's ``{"micro": 0, "minor": 2, "major": 7}`` come out exactly as QEMU sends them.
"""

from __future__ import annotations

import json
import re
from typing import Any

_QDICT_BUCKETS = 512
_ORDER_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}
_ESCAPE_FIX = re.compile(r"\\(\\|u[0-9a-f]{4})")


def tdb_hash(name: str) -> int:
    """QEMU's qdict.c tdb_hash of a key (32-bit arithmetic)."""
    raw = name.encode("utf-8")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, byte in enumerate(raw):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The order QEMU iterates a QDict whose keys were inserted in ``keys`` order."""
    order = _ORDER_CACHE.get(keys)
    if order is None:
        index = {key: i for i, key in enumerate(keys)}
        order = tuple(sorted(keys, key=lambda k: (tdb_hash(k) % _QDICT_BUCKETS, -index[k])))
        if len(_ORDER_CACHE) < 4096:
            _ORDER_CACHE[keys] = order
    return order


class QemuFloat:
    """A double as QEMU prints it (``%.17g``: ``2.0`` -> ``2``, ``0.1`` ->
    ``0.10000000000000001``); placed by :func:`to_qobject_order`, written by :func:`dumps`."""

    __slots__ = ("text",)

    def __init__(self, value: float) -> None:
        self.text = f"{value:.17g}"


_FLOAT_MARK = "\x00\x01qmpd-float\x01"
_FLOAT_TEXT = re.compile(r'"\\u0000\\u0001qmpd-float\\u0001([^"\\]*)"')


def _float_default(value: Any) -> str:
    if isinstance(value, QemuFloat):
        return _FLOAT_MARK + value.text
    raise TypeError(f"cannot encode {type(value).__name__}")


_ENCODER = json.JSONEncoder(default=_float_default)  # ", " and ": ", ASCII: as QEMU


_SCALARS = frozenset({str, int, bool, type(None)})


def to_qobject_order(value: Any) -> Any:
    """Return ``value`` with every object's members in QDict iteration order
    (and floats wrapped as :class:`QemuFloat`)."""
    kind = type(value)
    if kind is dict:
        keys = tuple(value)
        order = _ORDER_CACHE.get(keys) or qdict_order(keys)
        return {k: v if type(v) in _SCALARS else to_qobject_order(v)
                for k in order for v in (value[k],)}
    if kind is list:
        return [v if type(v) in _SCALARS else to_qobject_order(v) for v in value]
    if kind is float:
        return QemuFloat(value)
    return value


def _fix_escape(match: re.Match[str]) -> str:
    text = match.group(0)
    return text if text == "\\\\" else text.upper().replace("\\U", "\\u")


def dumps(message: Any) -> bytes:
    """Encode one already-ordered message as QEMU's wire bytes (with CRLF)."""
    text = _ENCODER.encode(message)
    if "\\u" in text or "\x7f" in text:
        if "qmpd-float" in text:
            text = _FLOAT_TEXT.sub(r"\1", text)
        text = _ESCAPE_FIX.sub(_fix_escape, text.replace("\x7f", "\\u007F"))
    return text.encode("ascii") + b"\r\n"


def encode(message: dict[str, Any]) -> bytes:
    """Order (QDict) and encode one message."""
    return dumps(to_qobject_order(message))


def return_reply(value: Any, msg_id: Any = None, has_id: bool = False) -> bytes:
    """``{"return": value, "id": id}``; the id only if the request had one."""
    value = to_qobject_order(value)
    if has_id:
        return dumps({"return": value, "id": to_qobject_order(msg_id)})
    return dumps({"return": value})


def error_reply(error_class: str, desc: str, msg_id: Any = None, has_id: bool = False) -> bytes:
    """``{"id": id, "error": {"class": ..., "desc": ...}}`` in QEMU's member order."""
    error = {"class": error_class, "desc": desc}
    if has_id:
        return dumps({"id": to_qobject_order(msg_id), "error": error})
    return dumps({"error": error})


def greeting(version: dict[str, Any], capabilities: list[str]) -> bytes:
    """The greeting QEMU sends on connect."""
    return encode({"QMP": {"version": version, "capabilities": capabilities}})


def event_message(name: str, data: dict[str, Any] | None, seconds: int,
                  microseconds: int) -> bytes:
    """An event as QEMU writes it: ``timestamp``, ``event``, ``data`` (if any)."""
    message: dict[str, Any] = {"timestamp": {"seconds": seconds, "microseconds": microseconds},
                               "event": name}
    if data is not None:
        message["data"] = data
    return encode(message)
