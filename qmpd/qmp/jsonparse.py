"""QEMU's JSON parser (qobject/json-parser.c): one balanced token run -> value or error.

Users: :mod:`qmpd.qmp.jsonstream`, which cuts tokens and decides when a run is complete.
Only the first error is reported, with QEMU's text (``JSON parse error, ...``), cut as
QEMU's ``parse_error`` cuts it (a 1024-byte buffer: at most 1023 bytes after the prefix).
Strings are modified UTF-8 as in QEMU 7.2: invalid sequences, surrogates and
noncharacters are errors (raw or ``\\u``-escaped), ``C0 80`` is U+0000.
"""

from __future__ import annotations

from qmpd.qmp.jsontokens import (
    COLON,
    COMMA,
    FLOAT,
    INTEGER,
    KEYWORD,
    LCURLY,
    LSQUARE,
    RCURLY,
    RSQUARE,
    STRING,
    ParseError,
    decode_lossy,
    decode_strict,
    qemu_int,
    valid_codepoint,
)

#: QEMU's parse_error formats into ``char message[1024]``.
_MESSAGE_MAX = 1023


class _Fail(Exception):
    """First parse error; QEMU keeps only the first one. Its argument is a str or bytes."""


_ESCAPES = {ord('"'): '"', ord("'"): "'", ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
            ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_BAD_UTF8 = "invalid UTF-8 sequence in string"


class Parser:
    """QEMU's recursive-descent parser over one balanced token run (json-parser.c)."""

    def __init__(self, tokens: list[tuple[int, bytes]]) -> None:
        self.tokens = tokens
        self.i = 0

    def parse(self) -> object:
        try:
            return self.value()
        except _Fail as err:
            msg = err.args[0]
            raw = msg if isinstance(msg, bytes) else msg.encode()
            return ParseError(f"JSON parse error, {decode_lossy(raw[:_MESSAGE_MAX])}")

    def peek(self) -> tuple[int, bytes]:
        if self.i >= len(self.tokens):
            raise _Fail("premature EOI")
        return self.tokens[self.i]

    def pop(self) -> tuple[int, bytes]:
        token = self.peek()
        self.i += 1
        return token

    def value(self) -> object:
        kind, text = self.peek()
        if kind == LCURLY:
            return self.obj()
        if kind == LSQUARE:
            return self.array()
        self.i += 1
        if kind == STRING:
            return _string(text)
        if kind == INTEGER:
            return _integer(text)
        if kind == FLOAT:
            return float(text)
        if kind == KEYWORD:
            if text == b"true":
                return True
            if text == b"false":
                return False
            if text == b"null":
                return None
            raise _Fail(b"invalid keyword '" + text[:_MESSAGE_MAX] + b"'")
        raise _Fail("expecting value")

    def obj(self) -> dict[str, object]:
        self.i += 1
        result: dict[str, object] = {}
        if self.peek()[0] == RCURLY:
            self.i += 1
            return result
        self.pair(result)
        kind = self.pop()[0]
        while kind != RCURLY:
            if kind != COMMA:
                raise _Fail("expected separator in dict")
            self.pair(result)
            kind = self.pop()[0]
        return result

    def pair(self, result: dict[str, object]) -> None:
        self.peek()
        key = self.value()
        if not isinstance(key, str):
            raise _Fail("key is not a string in object")
        if self.pop()[0] != COLON:
            raise _Fail("missing : in object pair")
        value = self.value()
        if key in result:
            raise _Fail("duplicate key")
        result[key] = value

    def array(self) -> list[object]:
        self.i += 1
        result: list[object] = []
        if self.peek()[0] == RSQUARE:
            self.i += 1
            return result
        result.append(self.value())
        kind = self.pop()[0]
        while kind != RSQUARE:
            if kind != COMMA:
                raise _Fail("expected separator in list")
            result.append(self.value())
            kind = self.pop()[0]
        return result


def _integer(text: bytes) -> int | float:
    return qemu_int(text.decode())


def _string(text: bytes) -> str:
    """Decode a string token (quotes included) as json-parser.c parse_string (QEMU 7.2)."""
    body = text[1:-1]
    if b"\\" not in body:
        plain = decode_strict(body)
        if plain is None:
            raise _Fail(_BAD_UTF8)
        return plain
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        j = body.find(b"\\", i)
        if j < 0:
            j = n
        chunk = decode_strict(body[i:j])
        if chunk is None:
            raise _Fail(_BAD_UTF8)
        out.append(chunk)
        if j == n:
            break
        esc = body[j + 1]
        if esc != 0x75:  # not 'u'
            if esc not in _ESCAPES:
                raise _Fail("invalid escape sequence in string")
            out.append(_ESCAPES[esc])
            i = j + 2
            continue
        cp = _hex4(body[j + 2:j + 6])
        i = j + 6
        if 0xD800 <= cp <= 0xDBFF and body[i:i + 2] == b"\\u":
            trail = _hex4(body[i + 2:i + 6])
            if 0xDC00 <= trail <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (trail & 0x3FF)
                i += 6
            else:
                cp = -1
        if not valid_codepoint(cp):
            # QEMU prints the escape with "%.*s" from the backslash over the token,
            # closing quote included: a short escape shows the quote.
            raise _Fail((body + text[-1:])[j:i] + b" is not a valid Unicode character")
        out.append(chr(cp))
    return "".join(out)


def _hex4(digits: bytes) -> int:
    """QEMU's cvt4hex: four hex digits, else -1."""
    if len(digits) < 4 or not all(h in _HEX for h in digits):
        return -1
    return int(digits, 16)
