"""QEMU's JSON parser (qobject/json-parser.c): one balanced token run -> value or error.

Users: :mod:`qmpd.qmp.jsonstream`, which cuts tokens and decides when a run is complete.
Only the first error is reported, with QEMU's text (``JSON parse error, ...``).
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
    qemu_int,
)


class _Fail(Exception):
    """First parse error; QEMU keeps only the first one."""


_ESCAPES = {ord('"'): '"', ord("'"): "'", ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
            ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Parser:
    """QEMU's recursive-descent parser over one balanced token run (json-parser.c)."""

    def __init__(self, tokens: list[tuple[int, bytes]]) -> None:
        self.tokens = tokens
        self.i = 0

    def parse(self) -> object:
        try:
            return self.value()
        except _Fail as err:
            return ParseError(f"JSON parse error, {err}")

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
            raise _Fail(f"invalid keyword '{text.decode()}'")
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
    """Decode a string token (quotes included) as json-parser.c parse_string."""
    body = text[1:-1]
    if b"\\" not in body:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail("invalid UTF-8 sequence in string") from None
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        j = body.find(b"\\", i)
        if j < 0:
            j = n
        try:
            out.append(body[i:j].decode("utf-8"))
        except UnicodeDecodeError:
            raise _Fail("invalid UTF-8 sequence in string") from None
        if j == n:
            break
        esc = body[j + 1]
        if esc != 0x75:  # not 'u'
            if esc not in _ESCAPES:
                raise _Fail("invalid escape sequence in string")
            out.append(_ESCAPES[esc])
            i = j + 2
            continue
        hexdigits = body[j + 2:j + 6]
        if len(hexdigits) < 4 or not all(h in _HEX for h in hexdigits):
            raise _Fail("invalid hex escape sequence in string")
        cp = int(hexdigits, 16)
        i = j + 6
        if 0xD800 <= cp <= 0xDBFF and body[i:i + 2] == b"\\u":
            trail = body[i + 2:i + 6]
            tcp = int(trail, 16) if len(trail) == 4 and all(h in _HEX for h in trail) else -1
            if 0xDC00 <= tcp <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (tcp & 0x3FF)
                i += 6
            else:
                cp = 0xFFFD
        if 0xD800 <= cp <= 0xDFFF:
            raise _Fail(f"\\u{hexdigits.decode()} is not a valid Unicode character")
        out.append(chr(cp))
    return "".join(out)
