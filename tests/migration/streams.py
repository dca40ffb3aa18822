"""Helpers building real migration streams with the one encoder (for stream tests)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qmpd.migration.stream import (
    FLAG_RETURN_PATH,
    SECTION,
    Buffer,
    End,
    MigrationStreamError,
    Section,
    StreamDecoder,
    StreamHeader,
    encode_end,
    encode_pass_end,
    encode_ram,
    encode_state,
)

PAGE = 4096


def join(parts: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in parts)


@dataclass
class Built:
    """A stream and where each section starts."""

    data: bytes
    boundaries: list[int]      # offsets where the header / each section starts, and the end
    pages: npt.NDArray[np.uint8]  # the RAM content the stream describes
    state: bytes


def build_stream(npages: int = 64, seed: int = 1, state: bytes = b"S" * 300) -> Built:
    """header, RAM (pass 1), PASS_END 1, RAM (pass 2 redirties), CPU, END."""
    rng = np.random.default_rng(seed)
    pages = np.zeros((npages, PAGE), dtype=np.uint8)
    nonzero = rng.choice(npages, npages // 2, replace=False)
    pages[nonzero] = rng.integers(1, 255, (len(nonzero), PAGE), dtype=np.uint8)
    chunks: list[bytes] = [StreamHeader(FLAG_RETURN_PATH, npages * PAGE, PAGE).encode()]
    idx = np.arange(npages)
    nz_mask = pages.any(axis=1)
    chunks.append(join(encode_ram(idx[nz_mask], idx[~nz_mask], pages[nz_mask])))
    chunks.append(join(encode_pass_end(1)))
    again = np.sort(nonzero[:4])
    pages[again, :8] = 7
    chunks.append(join(encode_ram(again, np.zeros(0, np.intp), pages[again])))
    chunks.append(join(encode_state(state)))
    chunks.append(join(encode_end()))
    bounds = [0]
    for c in chunks:
        bounds.append(bounds[-1] + len(c))
    return Built(b"".join(chunks), bounds, pages, state)


def section(kind: int, payload: bytes, crc: int | None = None) -> bytes:
    """A raw section with a correct (or given) crc."""
    import zlib
    return SECTION.pack(kind, len(payload), zlib.crc32(payload) if crc is None else crc) \
        + payload


def ram_payload(indices: list[int], pages: bytes = b"") -> bytes:
    return struct.pack(">I", len(indices)) + b"".join(struct.pack(">Q", i) for i in indices) \
        + pages


def decode_all(dec: StreamDecoder, buf: Buffer) -> list[Section]:
    """Decode a whole in-memory sequence of sections ending with END (tests only).

    Everything is validated before the list is returned.
    """
    view = memoryview(buf).cast("B")
    out: list[Section] = []
    pos = 0
    while True:
        if len(view) - pos < SECTION.size:
            raise MigrationStreamError(f"truncated: {len(view) - pos} bytes left where "
                                       f"a {SECTION.size}-byte section header belongs")
        kind, length, crc = dec.section_header(view[pos:pos + SECTION.size])
        pos += SECTION.size
        if len(view) - pos < length:
            raise MigrationStreamError(f"section {kind.name}: truncated, {len(view) - pos}"
                                       f" of {length} payload bytes")
        sec = dec.section(kind, view[pos:pos + length], crc)
        pos += length
        out.append(sec)
        if isinstance(sec, End):
            if pos != len(view):
                raise MigrationStreamError(f"{len(view) - pos} bytes after END")
            return out
