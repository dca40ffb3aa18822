"""Token types and small helpers shared by the JSON lexer/streamer and parser.

Users: :mod:`qmpd.qmp.jsonstream` and :mod:`qmpd.qmp.jsonparse`. The text helpers
reproduce QEMU's modified UTF-8 (util/unicode.c ``mod_utf8_codepoint``): what a JSON
string may hold, and how QEMU's JSON writer shows bytes that are not valid (one
U+FFFD per invalid sequence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ParseError:
    """A JSON parse error; the session answers it with a GenericError without id."""

    desc: str


# Token types (json-lexer.h JSONTokenType).
LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA = range(6)
INTEGER, FLOAT, KEYWORD, STRING, ERROR = range(6, 11)

#: Unicode's 66 noncharacters, which QEMU refuses (U+FDD0..U+FDEF, U+xxFFFE/U+xxFFFF).
_NONCHARS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + \
    [chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)]
_NONCHAR = re.compile("[" + "".join(re.escape(c) for c in _NONCHARS) + "]")
_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def qemu_int(text: str) -> int | float:
    """QEMU keeps integers in int64 or uint64 and falls back to a double.

    More than 20 digits cannot fit (the lexer allows no leading zeros): those go
    straight to the double, as QEMU's strtod, and never through ``int()``, which
    refuses over 4300 digits.
    """
    if len(text) > 21:
        return float(text)
    value = int(text)
    if -(1 << 63) <= value < (1 << 64):
        return value
    return float(text)


def valid_codepoint(cp: int) -> bool:
    """QEMU's ``is_valid_codepoint``: in range, no surrogate, no noncharacter."""
    return 0 <= cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF \
        and not 0xFDD0 <= cp <= 0xFDEF and cp & 0xFFFE != 0xFFFE


def decode_strict(data: bytes) -> str | None:
    """Decode modified UTF-8 as QEMU's JSON parser does; None if any sequence is invalid.

    Same as strict UTF-8 except that ``C0 80`` is U+0000 and noncharacters are invalid.
    (``C0`` can only start a sequence, so replacing ``C0 80`` first is exact.)
    """
    if data.isascii():
        return data.decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if b"\xc0\x80" not in data:
            return None
        try:
            text = data.replace(b"\xc0\x80", b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if _NONCHAR.search(text) else text


def decode_lossy(data: bytes) -> str:
    """Bytes as QEMU's JSON writer shows them: each invalid sequence becomes one U+FFFD."""
    text = decode_strict(data)
    if text is not None:
        return text
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        cp, i = _codepoint(data, i)
        out.append(chr(cp) if cp >= 0 else "\ufffd")
    return "".join(out)


def _codepoint(data: bytes, i: int) -> tuple[int, int]:
    """``mod_utf8_codepoint`` at ``data[i]``: (code point or -1, index after the sequence)."""
    byte = data[i]
    i += 1
    if byte < 0x80:
        return byte, i
    if byte >= 0xFE or not byte & 0x40:
        return -1, i  # impossible byte, or a continuation byte
    length, mask = 0, 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for _ in range(1, length):
        if i >= len(data) or data[i] & 0xC0 != 0x80:
            return -1, i  # continuation byte missing
        cp = cp << 6 | data[i] & 0x3F
        i += 1
    if not valid_codepoint(cp) or (cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2)):
        return -1, i
    return cp, i
