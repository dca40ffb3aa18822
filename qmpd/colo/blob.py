"""One COLO checkpoint's payload: the bytes that follow ``vmstate-size``.

Fixed little-endian layout, version 2, one encoder (:class:`Staging`: ``gather`` while
the guest is stopped, then ``add_state`` and ``seal``) and one decoder (:func:`parse`)::

    offset  size       field
    0       8          magic  b"QMPDCKP\0"
    8       4          version (2)
    12      4          flags (0)
    16      8          checkpoint number
    24      8          n = number of dirty pages
    32      8          s = length of the machine state blob
    40      8*n        page indices (u64, each < guest pages)
    ..      p          zeros, so that the pages start at a multiple of 4096 (p < 4096)
    P       4096*n     page contents, in index order (P = pages_offset(n))
    ..      s          Machine.save_state() blob (vCPU + devices)
    ..      4          crc32 of everything before it

Version 2 differs from 1 only by the padding: with the buffers page-aligned, every page is
copied to and from a page-aligned slot, which makes the gather done while the guest is
stopped faster than into misaligned slots (bench/results/design-figures.md).

The decoder checks magic, version, that the total length is exactly what the header
announces, the padding, every page index, the state size limit and the crc *before*
anything is applied; the caller then writes pages and state (invariant 1: whole or
nothing). Buffers are :class:`qmpd.machine.memory.AlignedBuffer` (page-aligned anonymous
mappings, transparent huge pages asked for), allocated once, touched up front, and grown
only when a larger checkpoint needs it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qmpd.checksum import crc32
from qmpd.colo.messages import ColoProtocolError
from qmpd.machine.memory import AlignedBuffer

MAGIC = b"QMPDCKP\0"
VERSION = 2
PAGE_SIZE = 4096
HEADER = struct.Struct("<8sIIQQQ")
TRAILER = struct.Struct("<I")
#: Largest machine-state blob accepted.
STATE_LIMIT = 1 << 20
#: Most of the staging buffer worth warming before a pause (more than the last-level
#: cache holds is evicted again before it is used).
WARM_LIMIT = 8 << 20


def pages_offset(n: int) -> int:
    """Where the page contents of an ``n``-page checkpoint start (a multiple of 4096)."""
    return -(-(HEADER.size + 8 * n) // PAGE_SIZE) * PAGE_SIZE


def blob_size(n: int, state_len: int) -> int:
    """The payload size of an ``n``-page checkpoint with a ``state_len``-byte state."""
    return pages_offset(n) + n * PAGE_SIZE + state_len + TRAILER.size


def blob_limit(npages: int) -> int:
    """The largest payload a guest of ``npages`` pages can need."""
    return blob_size(npages, STATE_LIMIT)


class Staging:
    """A reusable buffer a checkpoint is gathered into, grown on demand."""

    def __init__(self, initial_pages: int = 1024) -> None:
        self._buf = AlignedBuffer(0)
        self._body = 0
        self._seq = self._n = 0
        self._grow(initial_pages, STATE_LIMIT)

    def _grow(self, pages: int, state_len: int) -> None:
        need = blob_size(pages, state_len)
        if len(self._buf) < need:
            # Round up generously so steady state never reallocates.
            self._buf = AlignedBuffer(max(need, 2 * len(self._buf)))

    def warm(self, nbytes: int) -> None:
        """Read one byte per cache line of the first ``nbytes`` of the buffer (at most
        :data:`WARM_LIMIT`), so that the next gather writes into lines already in the
        shared cache rather than in memory. Called shortly before a pause, the guest
        running; it changes nothing."""
        n = min(nbytes, WARM_LIMIT, len(self._buf))
        if n > 0:
            np.frombuffer(self._buf.mm, dtype=np.uint8, count=n)[::64].sum()

    def build(self, seq: int, pages: npt.NDArray[np.uint8], index: npt.NDArray[np.uint64],
              state: bytes) -> memoryview:
        """Gather, add the state and seal in one go (see the three steps)."""
        self.gather(seq, pages, index)
        self.add_state(state)
        return self.seal()

    def gather(self, seq: int, pages: npt.NDArray[np.uint8],
               index: npt.NDArray[np.uint64]) -> None:
        """Copy ``pages[index]`` into the buffer (the guest must be stopped).

        ``pages`` is the guest RAM as an (npages, 4096) view. This is the only part of a
        checkpoint that needs the guest stopped; :meth:`add_state` and :meth:`seal` may
        run after it resumed.
        """
        n = int(index.size)
        self._grow(n, STATE_LIMIT)
        buf = self._buf.mm
        self._seq, self._n = seq, n
        idx_view = np.frombuffer(buf, dtype="<u8", count=n, offset=HEADER.size)
        idx_view[:] = index
        off = pages_offset(n)
        buf[HEADER.size + 8 * n:off] = bytes(off - HEADER.size - 8 * n)
        if n:
            page_view = np.frombuffer(buf, dtype=np.uint8, count=n * PAGE_SIZE,
                                      offset=off).reshape(n, PAGE_SIZE)
            rows = index.view(np.intp) if index.dtype == np.uint64 else index.astype(np.intp)
            np.take(pages, rows, axis=0, out=page_view, mode="clip")
        self._body = off + n * PAGE_SIZE

    def add_state(self, state: bytes) -> None:
        """Append the machine state (saved at the same pause) and write the header."""
        if len(state) > STATE_LIMIT:
            raise ValueError(f"machine state of {len(state)} bytes is over {STATE_LIMIT}")
        buf = self._buf.mm
        off = pages_offset(self._n) + self._n * PAGE_SIZE
        buf[off:off + len(state)] = state
        HEADER.pack_into(buf, 0, MAGIC, VERSION, 0, self._seq, self._n, len(state))
        self._body = off + len(state)

    def seal(self) -> memoryview:
        """Append the checksum to what :meth:`gather` and :meth:`add_state` wrote; return
        the payload. The returned view stays valid until the next :meth:`gather`.
        """
        body = self._body
        mv = memoryview(self._buf.mm)
        TRAILER.pack_into(self._buf.mm, body, crc32(mv[:body]))
        return mv[:body + TRAILER.size]


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint, views into the receive buffer."""

    seq: int
    index: npt.NDArray[np.intp]
    pages: npt.NDArray[np.uint8]
    state: bytes


def parse(data: memoryview, guest_pages: int) -> Checkpoint:
    """Decode and verify a whole checkpoint payload.

    :raise ColoProtocolError: on any inconsistency; nothing has been applied.
    """
    size = len(data)
    if size < HEADER.size + TRAILER.size:
        raise ColoProtocolError(f"COLO checkpoint truncated: {size} bytes")
    magic, version, flags, seq, n, state_len = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ColoProtocolError("COLO checkpoint has a bad magic")
    if version != VERSION:
        raise ColoProtocolError(f"COLO checkpoint version {version} is not supported "
                                f"(expected {VERSION})")
    if flags != 0:
        raise ColoProtocolError(f"COLO checkpoint has unknown flags {flags:#x}")
    if n > guest_pages:
        raise ColoProtocolError(f"COLO checkpoint claims {n} pages, guest has {guest_pages}")
    if state_len > STATE_LIMIT:
        raise ColoProtocolError(f"COLO checkpoint state of {state_len} bytes is too large")
    expected = blob_size(n, state_len)
    if size != expected:
        raise ColoProtocolError(f"COLO checkpoint is {size} bytes, header says {expected}")
    body = size - TRAILER.size
    (crc,) = TRAILER.unpack_from(data, body)
    if crc32(data[:body]) != crc:
        raise ColoProtocolError("COLO checkpoint checksum mismatch")
    index = np.frombuffer(data, dtype="<u8", count=n, offset=HEADER.size)
    if n and int(index.max()) >= guest_pages:
        raise ColoProtocolError(
            f"COLO checkpoint page index {int(index.max())} out of range "
            f"(guest has {guest_pages} pages)")
    off = pages_offset(n)
    if data[HEADER.size + 8 * n:off].tobytes() != bytes(off - HEADER.size - 8 * n):
        raise ColoProtocolError("COLO checkpoint has non-zero padding")
    pages = np.frombuffer(data, dtype=np.uint8, count=n * PAGE_SIZE,
                          offset=off).reshape(n, PAGE_SIZE)
    off += n * PAGE_SIZE
    state = bytes(data[off:off + state_len])
    return Checkpoint(seq=seq, index=index.astype(np.intp), pages=pages, state=state)
