"""Token types and small helpers shared by the JSON lexer/streamer and parser."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ParseError:
    """A JSON parse error; the session answers it with a GenericError without id."""

    desc: str


# Token types (json-lexer.h JSONTokenType).
LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA = range(6)
INTEGER, FLOAT, KEYWORD, STRING, ERROR = range(6, 11)


def qemu_int(text: str) -> int | float:
    """QEMU keeps integers in int64 or uint64 and falls back to a double."""
    value = int(text)
    if -(1 << 63) <= value < (1 << 64):
        return value
    return float(text)
