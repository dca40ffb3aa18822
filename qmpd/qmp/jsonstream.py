"""Streaming JSON splitter with QEMU 7.2's lexer, streamer and parser semantics.

Users: :mod:`qmpd.qmp.session` feeds it the bytes of one connection and pulls complete
messages one at a time, so it can stop pulling when its request queue is full.

QEMU's three stages (qobject/json-lexer.c, json-streamer.c, json-parser.c) are
reproduced: the lexer cuts bytes into tokens (with QEMU's single-quote extension and
its error recovery), the streamer counts braces/brackets and hands a token run to the
parser when both counts are back to zero (or one went negative), the parser builds
the value. Errors carry QEMU's texts (``JSON parse error, ...``), never an id, and
parsing continues after them exactly where QEMU would continue::

    bytes ──► lexer ──tokens──► streamer ──token run──► parser ──► value | ParseError
               │ bad byte: "stray '%s'", then skip to a resync char ({ } [ ] or control)

Every token is capped as in QEMU: the lexer cuts any token (string, keyword, number)
that grows past ``max_bytes`` (QEMU's MAX_TOKEN_SIZE, 64 MiB) with ``JSON token size
limit exceeded`` and starts afresh with the next byte, so a huge bare token without a
newline costs at most that much memory; the streamer caps a message's summed token
size, token count (2 Mi) and nesting (1024).

A fast path hands a complete ``{...}`` message from an ASCII buffer to the C JSON
decoder; it is used only where its result is provably the same as QEMU's (no
``\\u`` escapes, no duplicate keys, no NaN/Infinity, short enough that the nesting
and size limits cannot apply). Everything else goes through the faithful slow path.
"""

from __future__ import annotations

import json
import re

from qmpd.qmp.jsonparse import Parser
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
    qemu_int,
)

__all__ = ["NEED_MORE", "JSONStreamer", "NeedMore", "ParseError"]

#: QEMU's MAX_NESTING (json-streamer.c).
MAX_NESTING = 1024
#: QEMU's MAX_TOKEN_SIZE (json-lexer.c and json-streamer.c).
MAX_TOKEN_SIZE = 64 << 20
#: QEMU's MAX_TOKEN_COUNT (json-streamer.c).
MAX_TOKEN_COUNT = 2 << 20


class NeedMore:
    """Sentinel type: no complete message in the buffer yet."""


NEED_MORE = NeedMore()

#: internal: a token was consumed without completing a message (JSON null is None)
_CONTINUE = object()


# Lexer states (json-lexer.c).
(S_START, S_RECOVERY, S_DQ, S_DQ_ESC, S_SQ, S_SQ_ESC, S_ZERO, S_DIGITS, S_SIGN,
 S_MANTISSA, S_MANTISSA_DIGITS, S_EXP_E, S_EXP_SIGN, S_EXP_DIGITS, S_KEYWORD) = range(15)

_PUNCT = {ord("{"): LCURLY, ord("}"): RCURLY, ord("["): LSQUARE, ord("]"): RSQUARE,
          ord(":"): COLON, ord(","): COMMA}
_WS = frozenset(b" \t\r\n")
_DIGIT = frozenset(b"0123456789")
_LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz")
#: The state a token's first byte opens (punctuation is a whole token, see _PUNCT).
_OPENS = {ord('"'): S_DQ, ord("'"): S_SQ, ord("-"): S_SIGN,
          **{c: S_DIGITS for c in _DIGIT}, ord("0"): S_ZERO,
          **{c: S_KEYWORD for c in _LOWER}}
_WS_RUN = re.compile(rb"[ \t\r\n]+")
_DQ_RUN = re.compile(rb'[^"\\\x00-\x1f\xfe\xff]+')
_SQ_RUN = re.compile(rb"[^'\\\x00-\x1f\xfe\xff]+")
_RECOVERY_RUN = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}]+")
_DIGITS_RUN = re.compile(rb"[0-9]+")
_KEYWORD_RUN = re.compile(rb"[a-z]+")
_FAST_WS = re.compile(r"[ \t\r\n]*")
_FAST_LIMIT = 2048  # below this a message cannot reach MAX_NESTING


class _Reject(Exception):
    """Raised inside the fast decoder: let the faithful path decide."""


def _reject_constant(name: str) -> object:
    raise _Reject(name)


def _fast_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Reject("duplicate key")
    return result


_FAST_DECODER = json.JSONDecoder(object_pairs_hook=_fast_pairs,
                                 parse_constant=_reject_constant, parse_int=qemu_int)


class JSONStreamer:
    """Incremental QMP input splitter for one connection.

    :param max_bytes: limit on one token's size and on the summed token size of one
        message (QEMU: 64 MiB); exceeding it gives ``JSON token size limit exceeded``.
    :param max_tokens: limit on the token count of one message (QEMU: 2 Mi);
        exceeding it gives ``JSON token count limit exceeded``.
    """

    def __init__(self, max_bytes: int = MAX_TOKEN_SIZE,
                 max_tokens: int = MAX_TOKEN_COUNT) -> None:
        self.max_bytes = max_bytes
        self.max_tokens = max_tokens
        self._buf = b""
        self._pos = 0
        self._text: str | None = None  # self._buf decoded, if it is all ASCII
        self._non_ascii = False        # self._buf is known not to be all ASCII
        self._state = S_START
        self._tok = bytearray()
        self._tokens: list[tuple[int, bytes]] = []
        self._braces = 0
        self._brackets = 0
        self._token_size = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos:
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        else:
            self._buf += data
        self._text = None
        self._non_ascii = False

    def next(self) -> object:
        """Return the next message (a JSON value or :class:`ParseError`) or NEED_MORE."""
        if self._state == S_START and not self._tokens and not self._tok:
            fast = self._fast()
            if fast is not None:
                return fast
        return self._lex()

    # -- fast path ---------------------------------------------------------------

    def _fast(self) -> object | None:
        text = self._text
        if text is None:
            if self._non_ascii or not self._buf.isascii():
                self._non_ascii = True
                return None
            text = self._text = self._buf.decode("ascii")
        start = _FAST_WS.match(text, self._pos).end()  # type: ignore[union-attr]
        if start == len(text):
            self._buf, self._pos, self._text = b"", 0, None
            return NEED_MORE
        if text[start] != "{":
            return None
        try:
            value, end = _FAST_DECODER.raw_decode(text, start)
        except (ValueError, RecursionError, _Reject):
            return None
        if end - start > _FAST_LIMIT or text.find("\\u", start, end) >= 0:
            return None
        self._pos = end
        result: object = value
        return result

    # -- lexer (json-lexer.c) ------------------------------------------------------

    def _lex(self) -> object:
        buf = self._buf
        n = len(buf)
        i = self._pos
        tok = self._tok
        while i < n:
            st = self._state
            c = buf[i]
            result: object = _CONTINUE
            if st == S_START:
                if c in _WS:
                    i = _WS_RUN.match(buf, i).end()  # type: ignore[union-attr]
                    continue
                i += 1
                kind = _PUNCT.get(c)
                if kind is not None:
                    result = self._token(kind, bytes((c,)))
                else:
                    tok.append(c)
                    opens = _OPENS.get(c)
                    if opens is None:
                        result = self._error()
                    else:
                        self._state = opens
            elif st == S_RECOVERY:
                m = _RECOVERY_RUN.match(buf, i)
                if m is not None:
                    i = m.end()
                else:
                    self._state = S_START
            elif st in (S_DQ, S_SQ):
                m = (_DQ_RUN if st == S_DQ else _SQ_RUN).match(buf, i)
                if m is not None:
                    i = self._extend(buf, i, m.end())
                else:
                    i += 1
                    tok.append(c)
                    if c == 0x5C:
                        self._state = S_DQ_ESC if st == S_DQ else S_SQ_ESC
                    elif c == (0x22 if st == S_DQ else 0x27):
                        result = self._token(STRING, bytes(tok))
                    else:
                        result = self._error()
            elif st in (S_DQ_ESC, S_SQ_ESC):
                i += 1
                tok.append(c)
                if 0x20 <= c <= 0xFD:
                    self._state = S_DQ if st == S_DQ_ESC else S_SQ
                else:
                    result = self._error()
            elif st == S_KEYWORD:
                m = _KEYWORD_RUN.match(buf, i)
                if m is not None:
                    i = self._extend(buf, i, m.end())
                else:  # any other byte ends a keyword (lookahead)
                    result = self._token(KEYWORD, bytes(tok))
            else:
                i, result = self._lex_number(buf, i, st, c)
            if result is _CONTINUE and len(tok) > self.max_bytes:
                result = self._oversized()
            if result is not _CONTINUE:
                self._pos = i
                return result
        self._pos = i
        return NEED_MORE

    def _lex_number(self, buf: bytes, i: int, st: int, c: int) -> tuple[int, object]:
        """One step of the number states; returns the new index and a result or _CONTINUE."""
        tok = self._tok
        if c in _DIGIT and st in (S_DIGITS, S_MANTISSA_DIGITS, S_EXP_DIGITS):
            end = _DIGITS_RUN.match(buf, i).end()  # type: ignore[union-attr]
            return self._extend(buf, i, end), _CONTINUE
        nxt: int | None = None
        terminal: int | None = None
        if st == S_SIGN:
            nxt = S_ZERO if c == 0x30 else (S_DIGITS if c in _DIGIT else None)
        elif st == S_ZERO:
            nxt = S_MANTISSA if c == 0x2E else None
            terminal = None if c in _DIGIT else INTEGER
        elif st == S_DIGITS:
            nxt = S_EXP_E if c in (0x65, 0x45) else (S_MANTISSA if c == 0x2E else None)
            terminal = INTEGER
        elif st == S_MANTISSA:
            nxt = S_MANTISSA_DIGITS if c in _DIGIT else None
        elif st == S_MANTISSA_DIGITS:
            nxt = S_EXP_E if c in (0x65, 0x45) else None
            terminal = FLOAT
        elif st == S_EXP_E:
            nxt = S_EXP_SIGN if c in (0x2B, 0x2D) else (S_EXP_DIGITS if c in _DIGIT else None)
        elif st == S_EXP_SIGN:
            nxt = S_EXP_DIGITS if c in _DIGIT else None
        else:  # S_EXP_DIGITS
            terminal = FLOAT
        if nxt is not None:
            tok.append(c)
            self._state = nxt
            return i + 1, _CONTINUE
        if terminal is not None:  # any other byte ends the number (lookahead)
            return i, self._token(terminal, bytes(tok))
        tok.append(c)
        return i + 1, self._error()

    def _extend(self, buf: bytes, i: int, end: int) -> int:
        """Append ``buf[i:end]`` to the token, but no byte past the size limit + 1
        (QEMU checks after every byte); return the index after what was taken."""
        tok = self._tok
        end = min(end, i + self.max_bytes + 1 - len(tok))
        tok += buf[i:end]
        return end

    def _error(self) -> ParseError:
        text = decode_lossy(bytes(self._tok))
        self._tok.clear()
        self._state = S_RECOVERY
        return self._emit_error(f"JSON parse error, stray '{text}'")

    def _oversized(self) -> ParseError:
        self._tok.clear()
        self._state = S_START
        return self._emit_error("JSON token size limit exceeded")

    # -- streamer (json-streamer.c) ------------------------------------------------

    def _token(self, kind: int, text: bytes) -> object:
        self._tok.clear()
        self._state = S_START
        if kind == LCURLY:
            self._braces += 1
        elif kind == RCURLY:
            self._braces -= 1
        elif kind == LSQUARE:
            self._brackets += 1
        elif kind == RSQUARE:
            self._brackets -= 1
        if self._token_size + len(text) + 1 > self.max_bytes:
            return self._emit_error("JSON token size limit exceeded")
        if len(self._tokens) + 1 > self.max_tokens:
            return self._emit_error("JSON token count limit exceeded")
        if self._braces + self._brackets > MAX_NESTING:
            return self._emit_error("JSON nesting depth limit exceeded")
        self._tokens.append((kind, text))
        self._token_size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 \
                and self._brackets >= 0:
            return _CONTINUE
        tokens = self._tokens
        self._reset()
        return Parser(tokens).parse()

    def _emit_error(self, desc: str) -> ParseError:
        self._reset()
        return ParseError(desc)

    def _reset(self) -> None:
        self._tokens = []
        self._braces = self._brackets = 0
        self._token_size = 0
