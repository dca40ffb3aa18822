"""The checkpoint payload: round trip, and every kind of damage rejected before apply."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.colo.blob import (
    HEADER,
    MAGIC,
    PAGE_SIZE,
    STATE_LIMIT,
    Staging,
    blob_limit,
    pages_offset,
    parse,
)
from qmpd.colo.messages import ColoProtocolError

NPAGES = 64


def _ram(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(NPAGES, PAGE_SIZE), dtype=np.uint8)


def _blob(index: list[int], state: bytes = b"cpu-and-devices") -> tuple[bytes, np.ndarray]:
    ram = _ram()
    blob = Staging(initial_pages=1).build(7, ram, np.array(index, dtype=np.uint64), state)
    return bytes(blob), ram


def test_round_trip_gives_the_pages_and_state() -> None:
    data, ram = _blob([3, 0, 63])
    ckpt = parse(memoryview(data), NPAGES)
    assert ckpt.seq == 7
    assert list(ckpt.index) == [3, 0, 63]
    assert np.array_equal(ckpt.pages, ram[[3, 0, 63]])
    assert ckpt.state == b"cpu-and-devices"


def test_empty_checkpoint_round_trips() -> None:
    data, _ = _blob([])
    ckpt = parse(memoryview(data), NPAGES)
    assert ckpt.index.size == 0 and ckpt.state == b"cpu-and-devices"


def test_staging_is_reused_across_checkpoints() -> None:
    staging = Staging(initial_pages=4)
    ram = _ram()
    first = staging.build(1, ram, np.array([1, 2], dtype=np.uint64), b"s")
    base = first.obj
    second = staging.build(2, ram, np.array([5], dtype=np.uint64), b"s")
    assert second.obj is base


@pytest.mark.parametrize("cut", [0, 1, HEADER.size - 1, HEADER.size, HEADER.size + 8,
                                 HEADER.size + 8 * 3 + 100, -5, -1])
def test_truncated_payload_is_rejected(cut: int) -> None:
    data, _ = _blob([1, 2, 3])
    with pytest.raises(ColoProtocolError):
        parse(memoryview(data[:cut]), NPAGES)


def test_flipped_byte_anywhere_fails_the_checksum_or_header() -> None:
    data, _ = _blob([1, 2])
    for pos in range(0, len(data), 97):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(ColoProtocolError):
            parse(memoryview(bytes(bad)), NPAGES)


def _forge(n: int, state_len: int, index: list[int], version: int = 2,
           magic: bytes = MAGIC, pad: bytes | None = None) -> bytes:
    body = HEADER.pack(magic, version, 0, 1, n, state_len)
    body += struct.pack(f"<{len(index)}Q", *index)
    body += pad if pad is not None else bytes(pages_offset(len(index)) - len(body))
    body += bytes(PAGE_SIZE * len(index)) + bytes(state_len)
    return body + struct.pack("<I", zlib.crc32(body))


def test_page_index_out_of_range_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ColoProtocolError, match="page index 64 out of range"):
        parse(memoryview(_forge(1, 0, [NPAGES])), NPAGES)


def test_absurd_page_count_is_rejected_before_any_allocation() -> None:
    with pytest.raises(ColoProtocolError, match="claims 18446744073709551615 pages"):
        parse(memoryview(_forge(2**64 - 1, 0, [])), NPAGES)


def test_oversized_state_is_rejected() -> None:
    with pytest.raises(ColoProtocolError, match="too large"):
        parse(memoryview(_forge(0, STATE_LIMIT + 1, [])), NPAGES)


def test_wrong_version_and_magic_are_rejected() -> None:
    with pytest.raises(ColoProtocolError, match=r"version 1 is not supported \(expected 2\)"):
        parse(memoryview(_forge(0, 0, [], version=1)), NPAGES)
    with pytest.raises(ColoProtocolError, match="bad magic"):
        parse(memoryview(_forge(0, 0, [], magic=b"XXXXXXXX")), NPAGES)


def test_pages_start_page_aligned_in_the_buffer() -> None:
    staging = Staging(initial_pages=4)
    ram = np.zeros((4096, PAGE_SIZE), dtype=np.uint8)
    for n in (0, 1, 3, 500, 506, 507, 512, 2000):
        blob = staging.build(1, ram, np.arange(n, dtype=np.uint64), b"s")
        start = pages_offset(n)
        assert start % PAGE_SIZE == 0 and start >= HEADER.size + 8 * n
        base = np.frombuffer(blob, dtype=np.uint8).ctypes.data
        assert (base + start) % PAGE_SIZE == 0
        assert parse(blob, ram.shape[0]).index.size == n


def test_non_zero_padding_is_rejected_even_with_a_good_checksum() -> None:
    pad = b"\x01" + bytes(pages_offset(1) - HEADER.size - 8 - 1)
    with pytest.raises(ColoProtocolError, match=r"^COLO checkpoint has non-zero padding$"):
        parse(memoryview(_forge(1, 0, [0], pad=pad)), NPAGES)


def test_limit_covers_a_full_guest() -> None:
    data, _ = _blob(list(range(NPAGES)))
    assert len(data) <= blob_limit(NPAGES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_parse_into_something_out_of_bounds(raw: bytes) -> None:
    try:
        ckpt = parse(memoryview(raw), NPAGES)
    except ColoProtocolError:
        return
    assert ckpt.index.size == 0 or int(ckpt.index.max()) < NPAGES


def test_warming_the_buffer_changes_nothing() -> None:
    staging = Staging(initial_pages=4)
    first = bytes(staging.build(1, _ram(), np.array([1, 2], dtype=np.uint64), b"s"))
    for nbytes in (0, 100, len(first), 1 << 40):
        staging.warm(nbytes)
    assert bytes(staging.seal()) == first
