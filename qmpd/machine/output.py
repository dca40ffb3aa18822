"""Guest output: the ring device the vCPU thread drains, and :class:`GuestOutput`, the
thread-safe buffer the daemon (or COLO's output commit) drains.

Users: the vCPU thread (:meth:`OutputRing.drain` on every doorbell and every pause),
``Machine.output`` readers on the event loop, ``save_state``/``load_state`` (the consumer
index ``cons`` is device state; its copy in the ring header in RAM is only a mailbox the
guest reads to see free slots).

Ring (see :mod:`qmpd.machine.layout`): the guest fills slot ``prod mod RING_SLOTS`` and
bumps ``prod``; each 64-byte slot holds the record's length in byte 0 and the text
right-aligned at its end. The drain copies slots ``cons..prod`` out with numpy and
publishes the new ``cons``.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

import numpy as np

from qmpd.machine import layout

_U64 = struct.Struct("<Q")
#: Up to this many records a drain copies slot by slot; above, with numpy (where the two
#: cross on the benchmark host: bench/results/design-figures.md).
SMALL_BATCH = 32
#: GuestOutput's soft cap: above it the vCPU thread stops draining the ring, so the guest
#: blocks on a full ring (backpressure) instead of host memory growing without bound.
OUTPUT_SOFT_CAP = 16 << 20


class GuestOutput:
    """Bytes the guest has emitted and nobody has drained yet. Thread-safe."""

    def __init__(self, soft_cap: int = OUTPUT_SOFT_CAP) -> None:
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._buf = bytearray()
        self._notify: Callable[[], None] | None = None
        self.soft_cap = soft_cap
        #: Total bytes ever appended (for metrics/benchmarks).
        self.total = 0

    def drain(self) -> bytes:
        """Take every byte emitted so far."""
        with self._lock:
            data = bytes(self._buf)
            self._buf.clear()
            self._space.notify_all()
        return data

    def take(self) -> bytearray:
        """Take every byte emitted so far without copying it: the buffer itself is handed
        over and replaced by an empty one (a checkpoint's pause pays no copy)."""
        with self._lock:
            data, self._buf = self._buf, bytearray()
            self._space.notify_all()
        return data

    def set_notify(self, cb: Callable[[], None] | None) -> None:
        """``cb()`` is called from the vCPU thread when the buffer goes empty → non-empty."""
        with self._lock:
            self._notify = cb
            pending = bool(self._buf)
        if cb is not None and pending:
            cb()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buf)

    # -------------------------------------------------------------- vCPU-thread side
    def append(self, data: bytes) -> None:
        """Add guest output (vCPU thread)."""
        if not data:
            return
        with self._lock:
            was_empty = not self._buf
            self._buf += data
            self.total += len(data)
            cb = self._notify
        if was_empty and cb is not None:
            cb()

    def full(self) -> bool:
        """True above the soft cap."""
        with self._lock:
            return len(self._buf) >= self.soft_cap

    def wait_space(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the buffer to drop below the soft cap."""
        with self._lock:
            return self._space.wait_for(lambda: len(self._buf) < self.soft_cap, timeout)


class OutputRing:
    """The guest-RAM output ring as a device; owns the consumer index."""

    def __init__(self, ram: np.ndarray, output: GuestOutput) -> None:
        self._ram = ram
        self._slots = ram[layout.RING_GPA:layout.RING_GPA
                          + layout.RING_SLOTS * layout.SLOT_BYTES].reshape(
                              layout.RING_SLOTS, layout.SLOT_BYTES)
        hdr = ram[layout.RING_HDR_GPA:layout.RING_HDR_GPA + layout.PAGE].view(np.uint64)
        # Byte views for the small-batch path (SMALL_BATCH: plain Python beats numpy there).
        self._ring_mv = self._slots.reshape(-1).data
        self._hdr_mv = hdr.view(np.uint8).data
        self._cols = np.arange(layout.SLOT_BYTES, dtype=np.int64)[None, :]
        self.output = output
        #: Records consumed so far (device state; saved by save_state).
        self.cons = 0

    @property
    def prod(self) -> int:
        """The guest's producer index, read from RAM."""
        return int(_U64.unpack_from(self._hdr_mv, layout.RING_PROD_OFF)[0])

    def set_cons(self, cons: int) -> None:
        """Set the consumer index and its mirror in the ring header (load_state, reset)."""
        self.cons = cons
        _U64.pack_into(self._hdr_mv, layout.RING_CONS_OFF, cons & 0xFFFFFFFFFFFFFFFF)

    def drain(self, force: bool = False) -> int:
        """Move every completed record into :attr:`output`; return how many. vCPU thread,
        guest not running. Above the soft cap nothing moves (the guest then blocks on its
        full ring) unless ``force`` (pause: at most one ring, 1 MiB, beyond the cap)."""
        if not force and self.output.full():
            return 0
        prod, cons = self.prod, self.cons
        count = prod - cons
        if count <= 0:
            return 0
        count = min(count, layout.RING_SLOTS)  # a corrupt prod cannot make us read more
        start = cons % layout.RING_SLOTS
        if count <= SMALL_BATCH:
            mv, size, parts = self._ring_mv, layout.SLOT_BYTES, []
            for i in range(count):
                end = ((start + i) % layout.RING_SLOTS + 1) * size
                parts.append(mv[end - min(mv[end - size], size - 1):end])
            data = b"".join(parts)
        else:
            idx = (start + np.arange(count)) % layout.RING_SLOTS
            slots = self._slots[idx]
            lens = np.minimum(slots[:, 0], layout.SLOT_BYTES - 1).astype(np.int64)
            mask = self._cols >= (layout.SLOT_BYTES - lens)[:, None]
            data = slots[mask].tobytes()
        self.output.append(data)
        self.set_cons(cons + count)
        return count
