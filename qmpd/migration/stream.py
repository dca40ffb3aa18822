"""The migration stream: one fixed-layout encoder and one decoder, every length bounded.

Users: the precopy source (encodes), the destination step function (decodes), tests.
All integers are big-endian. Layout::

    header   >8sIIQI   magic b"QMPDMIG\\0", version (1), flags, ram bytes, page size
             flags: bit 0 = COLO enabled (x-colo), bit 1 = return path; others must be 0
    section  >B3xQI    type, payload length, crc32(payload); then the payload:
      RAM       u32 count, count x u64 page index (bit 63 = zero page, bits 62..32
                reserved = 0), then the non-zero pages' bytes in index order
      CPU       the Machine.save_state() blob (vCPU + devices), <= MAX_STATE_BYTES
      DEVICE    reserved for a separate device blob (never sent; rejected)
      PASS_END  u32 pass number (1, 2, ...), strictly increasing
      END       the source's run state when it stopped (QEMU's "globalstate"): ASCII
                [a-z-], <= 32 bytes; empty = running

A section header is checked (known type, length within that type's limit) before its
payload is read, and a payload's crc, count, exact length and every page index are
checked before :class:`RamBatch` exists, so nothing from a bad section reaches guest
RAM and no allocation follows a length read from the wire. Errors are
:class:`MigrationStreamError` with a message that names the section and the fault.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qmpd.checksum import crc32
from qmpd.errors import MigrationError

MAGIC: Final = b"QMPDMIG\0"
VERSION: Final = 1
FLAG_COLO: Final = 1 << 0
FLAG_RETURN_PATH: Final = 1 << 1
KNOWN_FLAGS: Final = FLAG_COLO | FLAG_RETURN_PATH
HEADER: Final = struct.Struct(">8sIIQI")
SECTION: Final = struct.Struct(">B3xQI")
_U32: Final = struct.Struct(">I")

#: Most pages in one RAM section (64 MiB of page data at 4 KiB pages).
MAX_PAGES_PER_SECTION: Final = 16384
#: Largest CPU/device state blob accepted.
MAX_STATE_BYTES: Final = 16 << 20
ZERO_PAGE: Final = np.uint64(1 << 63)
_RESERVED: Final = np.uint64(((1 << 63) - 1) ^ ((1 << 32) - 1))
_INDEX: Final = np.uint64((1 << 32) - 1)
#: Longest run-state name END may carry.
MAX_RUNSTATE: Final = 32
_RUNSTATE: Final = re.compile(rb"[a-z-]*")

Buffer = bytes | bytearray | memoryview


class MigrationStreamError(MigrationError):
    """The incoming stream is malformed, damaged, truncated or does not fit this guest."""


class SectionType(enum.IntEnum):
    """Section types; 0 is reserved as invalid."""

    RAM = 1
    CPU = 2
    DEVICE = 3
    PASS_END = 4
    END = 5


@dataclass(frozen=True)
class StreamHeader:
    """The stream header: what the source migrates and how."""

    flags: int
    ram_bytes: int
    page_size: int
    version: int = VERSION

    @property
    def colo(self) -> bool:
        """True if the source has x-colo on: the destination enters COLO after load."""
        return bool(self.flags & FLAG_COLO)

    @property
    def return_path(self) -> bool:
        """True if the source reads a return path (not over a one-way ``exec:``)."""
        return bool(self.flags & FLAG_RETURN_PATH)

    def encode(self) -> bytes:
        """The header's bytes."""
        return HEADER.pack(MAGIC, self.version, self.flags, self.ram_bytes, self.page_size)


@dataclass(frozen=True)
class RamBatch:
    """A validated RAM section: page indices (all < npages) and their contents."""

    normal: npt.NDArray[np.intp]     # indices of the pages in ``data``, in order
    zero: npt.NDArray[np.intp]       # indices of all-zero pages
    data: npt.NDArray[np.uint8]      # shape (len(normal), page_size); a view on the payload


@dataclass(frozen=True)
class StateBlob:
    """A CPU (vCPU + device) state blob."""

    data: bytes


@dataclass(frozen=True)
class PassEnd:
    """End of precopy pass ``number``."""

    number: int


@dataclass(frozen=True)
class End:
    """End of the stream; ``runstate`` is the source's run state at the stop ("" = running)."""

    runstate: str = ""


Section = RamBatch | StateBlob | PassEnd | End


# -- encoder ------------------------------------------------------------------------

def encode_section(kind: SectionType, parts: Sequence[Buffer]) -> list[Buffer]:
    """Frame ``parts`` (the payload, in pieces) as one section: [header, *parts]."""
    crc = 0
    length = 0
    for part in parts:
        crc = crc32(part, crc)
        length += memoryview(part).nbytes
    return [SECTION.pack(int(kind), length, crc), *parts]


def encode_ram(normal: npt.NDArray[np.integer], zero: npt.NDArray[np.integer],
               data: npt.NDArray[np.uint8]) -> list[Buffer]:
    """A RAM section: ``data[i]`` is page ``normal[i]``; ``zero`` pages are all-zero.

    ``data`` must be C-contiguous with ``len(normal)`` rows; it is sent without a copy.
    """
    count = len(normal) + len(zero)
    if count > MAX_PAGES_PER_SECTION or len(data) != len(normal):
        raise ValueError("RAM section too large or data/index mismatch")
    idx = np.empty(count, dtype=">u8")
    idx[:len(normal)] = normal
    idx[len(normal):] = zero.astype(np.uint64) | ZERO_PAGE
    flat = np.ascontiguousarray(data).reshape(-1)
    return encode_section(SectionType.RAM, [_U32.pack(count) + idx.tobytes(),
                                            flat.data if flat.size else b""])


def encode_state(blob: bytes) -> list[Buffer]:
    """A CPU state section."""
    if len(blob) > MAX_STATE_BYTES:
        raise ValueError(f"state blob of {len(blob)} bytes exceeds {MAX_STATE_BYTES}")
    return encode_section(SectionType.CPU, [blob])


def encode_pass_end(number: int) -> list[Buffer]:
    """A PASS_END section."""
    return encode_section(SectionType.PASS_END, [_U32.pack(number)])


def encode_end(runstate: str = "") -> list[Buffer]:
    """The END section, carrying the source's run state at the stop."""
    raw = runstate.encode("ascii")
    if len(raw) > MAX_RUNSTATE or not _RUNSTATE.fullmatch(raw):
        raise ValueError(f"bad run state name {runstate!r}")
    return encode_section(SectionType.END, [raw])


# -- decoder ------------------------------------------------------------------------

class StreamDecoder:
    """Decodes and validates a stream for a guest of ``npages`` pages of ``page_size``."""

    def __init__(self, npages: int, page_size: int) -> None:
        self.npages = npages
        self.page_size = page_size
        self._limits = {
            SectionType.RAM: 4 + MAX_PAGES_PER_SECTION * (8 + page_size),
            SectionType.CPU: MAX_STATE_BYTES,
            SectionType.DEVICE: MAX_STATE_BYTES,
            SectionType.PASS_END: 4,
            SectionType.END: MAX_RUNSTATE,
        }

    @property
    def max_payload(self) -> int:
        """The largest payload any section may have: the receive buffer size."""
        return max(self._limits.values())

    def header(self, buf: Buffer) -> StreamHeader:
        """Validate the stream header against this guest."""
        if len(buf) != HEADER.size:
            raise MigrationStreamError(f"stream header: got {len(buf)} of {HEADER.size} bytes")
        magic, version, flags, ram_bytes, page_size = HEADER.unpack(buf)
        if magic != MAGIC:
            raise MigrationStreamError(f"stream header: bad magic {bytes(magic)!r} "
                                       f"(not a qmpd migration stream)")
        if version != VERSION:
            raise MigrationStreamError(f"stream header: unsupported version {version} "
                                       f"(this qmpd reads version {VERSION})")
        if flags & ~KNOWN_FLAGS:
            raise MigrationStreamError(f"stream header: unknown flags 0x{flags:x}")
        if page_size != self.page_size:
            raise MigrationStreamError(f"stream header: page size {page_size} does not "
                                       f"match this guest's {self.page_size}")
        if ram_bytes != self.npages * self.page_size:
            raise MigrationStreamError(f"stream header: source RAM is {ram_bytes} bytes, "
                                       f"this guest has {self.npages * self.page_size}")
        return StreamHeader(flags, ram_bytes, page_size, version)

    def section_header(self, buf: Buffer) -> tuple[SectionType, int, int]:
        """Validate a section header: ``(type, payload length, crc)``."""
        if len(buf) != SECTION.size:
            raise MigrationStreamError(f"section header: got {len(buf)} of "
                                       f"{SECTION.size} bytes")
        raw_type, length, crc = SECTION.unpack(buf)
        if bytes(buf[1:4]) != b"\0\0\0":
            raise MigrationStreamError("section header: reserved bytes are not zero")
        try:
            kind = SectionType(raw_type)
        except ValueError:
            raise MigrationStreamError(f"section header: unknown section type {raw_type}"
                                       ) from None
        if kind is SectionType.DEVICE:
            raise MigrationStreamError("section DEVICE: not supported by this qmpd")
        limit = self._limits[kind]
        if length > limit or (kind is SectionType.PASS_END and length != limit):
            raise MigrationStreamError(f"section {kind.name}: bad payload length {length} "
                                       f"(limit {limit})")
        return kind, length, crc

    def section(self, kind: SectionType, payload: memoryview, crc: int) -> Section:
        """Check ``payload``'s crc and contents; the result may view ``payload``."""
        actual = crc32(payload)
        if actual != crc:
            raise MigrationStreamError(f"section {kind.name}: crc32 mismatch (header "
                                       f"0x{crc:08x}, payload 0x{actual:08x}): damaged")
        if kind is SectionType.RAM:
            return self._ram(payload)
        if kind is SectionType.CPU:
            return StateBlob(bytes(payload))
        if kind is SectionType.PASS_END:
            return PassEnd(_U32.unpack(payload)[0])
        if not _RUNSTATE.fullmatch(bytes(payload)):
            raise MigrationStreamError("section END: run state is not a [a-z-] name")
        return End(bytes(payload).decode("ascii"))

    def _ram(self, payload: memoryview) -> RamBatch:
        if len(payload) < 4:
            raise MigrationStreamError("section RAM: payload shorter than its count")
        count = _U32.unpack(payload[:4])[0]
        if count > MAX_PAGES_PER_SECTION:
            raise MigrationStreamError(f"section RAM: {count} pages exceed the limit of "
                                       f"{MAX_PAGES_PER_SECTION}")
        end_idx = 4 + 8 * count
        if len(payload) < end_idx:
            raise MigrationStreamError(f"section RAM: {count} indices do not fit in "
                                       f"{len(payload)} bytes")
        raw = np.frombuffer(payload[4:end_idx], dtype=">u8").astype(np.uint64)
        if np.any(raw & _RESERVED):
            raise MigrationStreamError("section RAM: reserved bits set in a page index")
        is_zero = (raw & ZERO_PAGE) != 0
        index = (raw & _INDEX).astype(np.intp)
        if count and int(index.max()) >= self.npages:
            bad = int(index[index >= self.npages][0])
            raise MigrationStreamError(f"section RAM: page index {bad} out of range "
                                       f"(guest has {self.npages} pages)")
        normal = index[~is_zero]
        expect = end_idx + len(normal) * self.page_size
        if len(payload) != expect:
            raise MigrationStreamError(f"section RAM: payload is {len(payload)} bytes, "
                                       f"{len(normal)} pages need {expect}")
        data = np.frombuffer(payload[end_idx:], dtype=np.uint8)
        return RamBatch(normal, index[is_zero], data.reshape(len(normal), self.page_size))
