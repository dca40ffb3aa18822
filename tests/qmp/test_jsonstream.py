"""The streaming splitter: fast path == faithful path, any chunking gives the same messages."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.qmp.jsonstream import NEED_MORE, JSONStreamer, ParseError
from qmpd.qmp.jsontokens import valid_codepoint


def split(data: bytes, chunk: int | None = None) -> list[Any]:
    """All messages of ``data`` fed whole (chunk None) or in ``chunk``-byte pieces."""
    stream = JSONStreamer()
    out: list[Any] = []
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        stream.feed(piece)
        while (msg := stream.next()) is not NEED_MORE:
            out.append(msg)
    return out


# QEMU refuses noncharacters (U+FFFF, U+FDD0, ...) in strings: generate only valid text
qemu_chars = st.characters().filter(lambda c: valid_codepoint(ord(c)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(qemu_chars, max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(qemu_chars, max_size=6),
                                                                inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.text(qemu_chars, max_size=6), json_values, max_size=4),
                min_size=1, max_size=4),
       st.sampled_from(["", "\n", "\r\n", " \t"]), st.booleans())
def test_chunking_and_paths_agree(values: list[dict[str, Any]], sep: str, ascii_only: bool) -> None:
    data = sep.join(json.dumps(v, ensure_ascii=ascii_only) for v in values).encode()
    assert split(data) == values
    assert split(data, 1) == values
    assert split(data, 7) == values


def test_back_to_back_without_separator() -> None:
    assert split(b'{"a":1}{"b":[2]}{}') == [{"a": 1}, {"b": [2]}, {}]


def test_numbers_follow_qemu() -> None:
    big = str(1 << 64).encode()
    assert split(b'{"a": ' + big + b', "b": -9223372036854775808, "c": 18446744073709551615}') \
        == [{"a": float(1 << 64), "b": -(1 << 63), "c": (1 << 64) - 1}]


def test_scalars_need_a_terminating_byte() -> None:
    stream = JSONStreamer()
    stream.feed(b"123")
    assert stream.next() is NEED_MORE
    stream.feed(b" ")
    assert stream.next() == 123


def test_incomplete_message_waits() -> None:
    stream = JSONStreamer()
    stream.feed(b'{"execute": "qu')
    assert stream.next() is NEED_MORE
    stream.feed(b'it"}')
    assert stream.next() == {"execute": "quit"}


def test_recovery_resumes_at_structural_char() -> None:
    assert split(b'@@@ garbage {"a": 1}') == [
        ParseError("JSON parse error, stray '@'"), {"a": 1}]


def test_surrogate_pair_and_escapes() -> None:
    assert split(b'{"a": "\\ud83d\\ude00 \\/ \\n \\u00e9"}') == [{"a": "\U0001f600 / \n \xe9"}]


def test_control_char_resyncs_half_message() -> None:
    assert split(b'{"a": [1, \x01 {"b": 2}') == [
        ParseError("JSON parse error, stray '\x01'"), {"b": 2}]


def test_token_count_limit() -> None:
    stream = JSONStreamer(max_tokens=10)
    stream.feed(b'[1,2,3,4,5,6]{"a": 1}')
    assert stream.next() == ParseError("JSON token count limit exceeded")


def test_every_token_kind_is_cut_after_the_limit_plus_one_byte() -> None:
    """json-lexer.c: a token longer than MAX_TOKEN_SIZE is reported and lexing restarts
    at the next byte (the byte that overflowed is dropped with the token)."""
    limit = 8
    for kind, body in (("keyword", b"a" * 20), ("number", b"1" * 20),
                       ("string", b'"' + b"x" * 19)):
        for chunk in (None, 1, 3):
            stream = JSONStreamer(max_bytes=limit)
            pieces = [body + b"\n"] if chunk is None else \
                [(body + b"\n")[i:i + chunk] for i in range(0, len(body) + 1, chunk)]
            out: list[Any] = []
            for piece in pieces:
                stream.feed(piece)
                while (msg := stream.next()) is not NEED_MORE:
                    out.append(msg)
            size = ParseError("JSON token size limit exceeded")
            rest = body[2 * (limit + 1):]  # 2 bytes left after two cuts
            if kind == "keyword":
                expected: list[Any] = [size, size, ParseError(
                    f"JSON parse error, invalid keyword '{rest.decode()}'")]
            elif kind == "number":
                expected = [size, size, int(rest)]
            else:
                expected = [size, size, ParseError("JSON parse error, invalid keyword 'xx'")]
            assert out == expected, (kind, chunk)


def test_huge_number_is_a_double() -> None:
    assert split(b"[" + b"9" * 5000 + b"]") == [[float("inf")]]
