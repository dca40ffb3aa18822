"""The stream format: round trips, and hostile input rejected with a clear error."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.migration.stream import (
    HEADER,
    MAX_PAGES_PER_SECTION,
    SECTION,
    End,
    MigrationStreamError,
    PassEnd,
    RamBatch,
    StateBlob,
    StreamDecoder,
    StreamHeader,
    encode_ram,
)

from .streams import PAGE, build_stream, decode_all, join, ram_payload, section

NPAGES = 64


def decode(data: bytes, npages: int = NPAGES) -> tuple[StreamHeader, list[object]]:
    dec = StreamDecoder(npages, PAGE)
    header = dec.header(data[:HEADER.size])
    return header, list(decode_all(dec, data[HEADER.size:]))


def apply(sections: list[object], npages: int = NPAGES) -> np.ndarray:
    ram = np.full((npages, PAGE), 0xAA, dtype=np.uint8)
    for s in sections:
        if isinstance(s, RamBatch):
            ram[s.normal] = s.data
            ram[s.zero] = 0
    return ram


def test_round_trip_reproduces_ram_and_state() -> None:
    b = build_stream(NPAGES)
    header, sections = decode(b.data)
    assert header.page_size == PAGE and header.ram_bytes == NPAGES * PAGE
    assert not header.colo
    kinds = [type(s) for s in sections]
    assert kinds == [RamBatch, PassEnd, RamBatch, StateBlob, End]
    assert np.array_equal(apply(sections), b.pages)
    state = sections[3]
    assert isinstance(state, StateBlob) and state.data == b.state


def test_zero_pages_are_elided() -> None:
    normal = np.array([3], dtype=np.intp)
    zero = np.arange(10, 20, dtype=np.intp)
    data = np.ones((1, PAGE), dtype=np.uint8)
    wire = join(encode_ram(normal, zero, data))
    assert len(wire) == SECTION.size + 4 + 11 * 8 + PAGE
    sec = decode_all(StreamDecoder(NPAGES, PAGE), wire + join_end())[0]
    assert isinstance(sec, RamBatch)
    assert sec.normal.tolist() == [3] and sec.zero.tolist() == list(range(10, 20))


def join_end() -> bytes:
    from qmpd.migration.stream import encode_end
    return join(encode_end())


@pytest.mark.parametrize("cut", range(1, 6))
def test_truncated_at_every_section_boundary(cut: int) -> None:
    b = build_stream(NPAGES)
    with pytest.raises(MigrationStreamError, match="truncated"):
        decode(b.data[:b.boundaries[cut]])


def test_truncated_mid_section_everywhere() -> None:
    b = build_stream(8)
    for end in range(HEADER.size + 1, len(b.data), 97):
        if end in b.boundaries:
            continue
        with pytest.raises(MigrationStreamError, match="truncated"):
            decode(b.data[:end], 8)


def test_every_flipped_byte_is_rejected() -> None:
    b = build_stream(4, state=b"x" * 40)
    for pos in range(len(b.data)):
        bad = bytearray(b.data)
        bad[pos] ^= 0x41
        with pytest.raises(MigrationStreamError):
            decode(bytes(bad), 4)


@pytest.mark.parametrize(("field", "value", "match"), [
    (0, b"QEMU\0\0\0\0", "bad magic"),
    (1, 2, "unsupported version 2"),
    (2, 1 << 7, "unknown flags"),
    (3, NPAGES * PAGE * 2, "source RAM is"),
    (4, 8192, "page size 8192"),
])
def test_bad_header(field: int, value: object, match: str) -> None:
    fields: list[object] = list(HEADER.unpack(StreamHeader(0, NPAGES * PAGE, PAGE).encode()))
    fields[field] = value
    with pytest.raises(MigrationStreamError, match=match):
        StreamDecoder(NPAGES, PAGE).header(HEADER.pack(*fields))


@pytest.mark.parametrize(("raw", "match"), [
    (section(1, ram_payload([NPAGES], b"\1" * PAGE)), f"page index {NPAGES} out of range"),
    (section(1, ram_payload([(1 << 63) | 10**9])), "out of range"),
    (section(1, ram_payload([1 << 40])), "reserved bits"),
    (section(1, ram_payload([1, 2], b"\1" * PAGE)), "2 pages need"),
    (section(1, ram_payload([1], b"\1" * (PAGE + 1))), "1 pages need"),
    (section(1, struct.pack(">I", MAX_PAGES_PER_SECTION + 1)), "exceed the limit"),
    (section(1, struct.pack(">I", 1000)), "do not fit"),
    (section(1, b"\0\0"), "shorter than its count"),
    (SECTION.pack(1, 1 << 62, 0), "bad payload length"),
    (SECTION.pack(2, (16 << 20) + 1, 0), "bad payload length"),
    (SECTION.pack(4, 3, 0), "bad payload length"),
    (SECTION.pack(5, 33, 0), "bad payload length"),
    (section(5, b"Running"), "run state is not"),
    (section(5, b"run\0"), "run state is not"),
    (SECTION.pack(0, 0, 0), "unknown section type 0"),
    (SECTION.pack(99, 0, 0), "unknown section type 99"),
    (section(3, b"dev"), "DEVICE: not supported"),
    (section(5, b"", crc=1), "crc32 mismatch"),
])
def test_hostile_sections(raw: bytes, match: str) -> None:
    with pytest.raises(MigrationStreamError, match=match):
        decode_all(StreamDecoder(NPAGES, PAGE), raw + join_end())


def test_absurd_length_allocates_nothing() -> None:
    dec = StreamDecoder(NPAGES, PAGE)
    tracemalloc.start()
    try:
        for length in (1 << 40, (1 << 64) - 1, MAX_PAGES_PER_SECTION * (PAGE + 8) + 5):
            with pytest.raises(MigrationStreamError):
                decode_all(dec, SECTION.pack(1, length, 0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations_never_escape(data: st.DataObject) -> None:
    """Random damage: a MigrationStreamError, or a stream whose every index is in range."""
    b = build_stream(8, seed=data.draw(st.integers(0, 5)))
    buf = bytearray(b.data)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos:pos + data.draw(st.integers(1, 64))]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=32))
    try:
        _, sections = decode(bytes(buf), 8)
    except MigrationStreamError as err:
        assert str(err)
        return
    for s in sections:
        if isinstance(s, RamBatch):
            assert (s.normal < 8).all() and (s.zero < 8).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    with contextlib.suppress(MigrationStreamError):
        decode_all(StreamDecoder(8, PAGE), raw)


def test_end_carries_the_source_run_state() -> None:
    from qmpd.migration.stream import encode_end
    secs = decode_all(StreamDecoder(NPAGES, PAGE), join(encode_end("paused")))
    assert secs == [End("paused")]
    with pytest.raises(ValueError):
        encode_end("x" * 33)
