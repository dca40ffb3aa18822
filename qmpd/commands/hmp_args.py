"""HMP argument parsing and value conversion as QEMU 7.2's monitor does it.

Users: :mod:`qmpd.commands.hmp` parses every command line with :func:`parse_args`
against the command's ``args_type`` (QEMU's hmp-commands.hx notation, the subset qmpd
uses: ``key:s`` a word or a double-quoted string, ``key:S`` the rest of the line,
``key:b`` ``on``/``off``,
``key:-c`` a flag ``-c``, a trailing ``?`` for optional); ``migrate_set_parameter``
converts its value with :func:`string_visit` (QEMU's string input visitor) and
:func:`strtosz` (``qemu_strtosz``). Failures raise :class:`HmpArgError` carrying the
monitor text (monitor/hmp.c ``monitor_parse_arguments``, qapi/string-input-visitor.c,
util/cutils.c); the caller adds QEMU's ``Try "help CMD" ...`` line for parse errors.
"""

from __future__ import annotations

import re
from typing import Any

from qmpd.errors import QmpdError


class HmpArgError(QmpdError):
    """A monitor message (without the trailing newline)."""


_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r"}


def _get_str(line: str, pos: int) -> tuple[str, int] | None:
    """QEMU ``get_str``: a word up to white space, or a double-quoted string."""
    while pos < len(line) and line[pos].isspace():
        pos += 1
    if pos >= len(line):
        return None
    if line[pos] != '"':
        end = pos
        while end < len(line) and not line[end].isspace():
            end += 1
        return line[pos:end], end
    out, pos = [], pos + 1
    while pos < len(line) and line[pos] != '"':
        if line[pos] == "\\":
            pos += 1
            if pos >= len(line) or line[pos] not in _ESCAPES:
                return None  # QEMU prints "unsupported escape code" to stdout only
            out.append(_ESCAPES[line[pos]])
        else:
            out.append(line[pos])
        pos += 1
    if pos >= len(line):
        return None  # "unterminated string", likewise
    return "".join(out), pos + 1


def parse_args(names: str, args_type: str, line: str) -> dict[str, Any]:
    """Parse ``line`` (what follows the command name) against ``args_type``.

    :raise HmpArgError: with QEMU's text (``names`` is the command's ``name|alias``).
    """
    args: dict[str, Any] = {}
    pos = 0
    for spec in filter(None, args_type.split(",")):
        key, _, typ = spec.partition(":")
        optional = typ.endswith("?")
        typ = typ.rstrip("?")
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if typ.startswith("-"):
            flag = typ[1]
            if line[pos:pos + 1] == "-":
                opt = line[pos + 1:pos + 2]
                if opt == flag:
                    args[key] = True
                    pos += 2
                elif opt not in _later_flags(args_type, key):
                    raise HmpArgError(f"{names}: unsupported option -{opt}")
            continue
        if optional and pos >= len(line):
            continue
        if typ == "S":  # the rest of the line
            args[key], pos = line[pos:].rstrip(), len(line)
        elif typ == "b":
            word = re.match(r"[!-~]*", line[pos:])
            text = word.group(0) if word else ""
            if text not in ("on", "off"):
                raise HmpArgError("Expected 'on' or 'off'")
            args[key] = text == "on"
            pos += len(text)
        else:
            got = _get_str(line, pos)
            if got is None:
                raise HmpArgError(f"{names}: string expected")
            args[key], pos = got
    if line[pos:].strip():
        raise HmpArgError(f"{names}: extraneous characters at the end of line")
    return args


def _later_flags(args_type: str, key: str) -> list[str]:
    """The flag letters declared after ``key`` (QEMU ``is_valid_option``)."""
    specs = [s.split(":") for s in args_type.split(",")]
    later = specs[[k for k, _ in specs].index(key) + 1:]
    return [t[1:2] for _, t in later if t.startswith("-")]


# -- values (QEMU's string input visitor and qemu_strtosz) ---------------------------

_SUFFIX = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
              "peta-\nand exabytes, respectively.")


class SizeRangeError(ValueError):
    """``qemu_strtosz`` -ERANGE."""


def strtosz(text: str, default_suffix: str = "b") -> int:
    """QEMU 7.2 ``qemu_strtosz`` (``default_suffix`` "m": ``qemu_strtosz_MiB``).

    :raise SizeRangeError: the value does not fit 64 bits; ValueError: not a size.
    """
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)(\.[0-9]*)?([bBkKmMgGtTpPeE]?)", text)
    if m is None:
        raise ValueError(text)
    whole, frac, suffix = m.groups()
    hexa = whole[:2].lower() == "0x"
    if hexa and frac is not None:
        raise ValueError(text)
    val = int(whole, 16 if hexa else 10)
    if val >= 1 << 64:
        raise SizeRangeError(text)
    mul = 1 << (10 * _SUFFIX[(suffix or default_suffix).lower()])
    fraction = float(frac) if frac and frac != "." else 0.0
    if mul == 1:
        if fraction:
            raise ValueError(text)
        return val
    fixed = int(fraction * (1 << 64))  # QEMU: 64.64 fixed point, 0.5 rounds up
    total = val * mul + ((fixed * mul) >> 64) + (((fixed * mul) >> 63) & 1)
    if total >= 1 << 64:
        raise SizeRangeError(text)
    return total


def _strtou64(text: str) -> int:
    """QEMU ``qemu_strtou64(..., base 0)``: C integer syntax, a '-' wraps."""
    m = re.fullmatch(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if m is None:
        raise ValueError(text)
    sign, digits = m.groups()
    base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
    val = int(digits, base)
    if val >= 1 << 64:
        raise ValueError(text)
    return (-val) % (1 << 64) if sign == "-" else val


_UINT_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}


def string_visit(name: str, kind: str, text: str, enum: tuple[str, ...] = ()) -> Any:
    """Convert ``text`` as QEMU's string input visitor visits a ``kind`` member.

    ``kind`` is a schema builtin (``uintN``, ``size``, ``bool``, ``str``) or ``enum``.
    :raise HmpArgError: with QEMU's text.
    """
    if kind in _UINT_BITS:
        try:
            value = _strtou64(text)
        except ValueError:
            raise HmpArgError(f"Parameter '{name}' expects uint64") from None
        if value >> _UINT_BITS[kind]:
            raise HmpArgError(f"Parameter '{name}' expects {kind}_t")
        return value
    if kind == "size":
        try:
            return strtosz(text)
        except SizeRangeError:
            raise HmpArgError(f"Value '{text}' is out of range for parameter "
                              f"'{name}'") from None
        except ValueError:
            raise HmpArgError(f"Parameter '{name}' expects a non-negative number below "
                              f"2^64\n{_SIZE_HINT}") from None
    if kind == "bool":
        if text in ("on", "yes", "true"):
            return True
        if text in ("off", "no", "false"):
            return False
        raise HmpArgError(f"Parameter '{name}' expects 'on' or 'off'")
    if kind == "enum":
        if text not in enum:
            raise HmpArgError(f"Parameter '{name}' does not accept value '{text}'")
        return text
    return text
