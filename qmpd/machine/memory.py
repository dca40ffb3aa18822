"""Host memory mappings: guest RAM, and the page-aligned buffers COLO stages checkpoints in.

Users: :class:`qmpd.machine.Machine` (registers :class:`GuestRam` as KVM slot 0 or maps it
into unicorn), migration/COLO through ``Machine.pages``; COLO's checkpoint blob
(:class:`AlignedBuffer`). Guest pages cost host memory only when touched; ``hugepages``
asks for THP (``MADV_HUGEPAGE``). Only the machine layer maps memory.
"""

from __future__ import annotations

import logging
import mmap

import numpy as np

from qmpd.machine.errors import MachineConfigError

log = logging.getLogger(__name__)

PAGE = 4096
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class GuestRam:
    """``size`` bytes of guest RAM at guest-physical 0."""

    def __init__(self, size: int, hugepages: bool = False) -> None:
        try:
            self._mm = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:
            raise MachineConfigError(
                "-m", f"cannot map {size >> 20}M of guest RAM: {err.strerror}") from err
        self.size = size
        self.hugepages = hugepages
        if hugepages:
            self._mm.madvise(mmap.MADV_HUGEPAGE)
        #: Flat uint8 view of all of RAM.
        self.flat: np.ndarray = np.frombuffer(self._mm, dtype=np.uint8)
        #: (npages, 4096) uint8 view.
        self.pages: np.ndarray = self.flat.reshape(-1, PAGE)
        #: Host virtual address of guest-physical 0. Owned by this object's mmap, valid
        #: until close(); handed to KVM (memory slot) and unicorn (mem_map_ptr).
        self.host_addr: int = int(self.flat.ctypes.data)

    @property
    def npages(self) -> int:
        return self.size // PAGE

    def zero(self) -> None:
        """Drop every page (reads back as zero; memory returned to the host)."""
        self._mm.madvise(mmap.MADV_DONTNEED)
        if self.hugepages:
            self._mm.madvise(mmap.MADV_HUGEPAGE)

    def close(self) -> None:
        """Unmap, unless someone still holds a view of ``pages`` (then the GC unmaps later)."""
        del self.flat, self.pages
        try:
            self._mm.close()
        except BufferError:
            log.debug("guest RAM still referenced; unmapped when the last view goes")


class AlignedBuffer:
    """A page-aligned, writable, pre-touched byte buffer of at least ``size`` bytes (an
    anonymous mapping; huge pages asked for from 2 MiB). ``mm`` is the mapping; every page
    is touched here, so that filling it later (during a COLO checkpoint) faults nothing."""

    def __init__(self, size: int) -> None:
        size = max(PAGE, -(-size // PAGE) * PAGE)
        self.mm = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        if size >= 2 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):
            self.mm.madvise(mmap.MADV_HUGEPAGE)
        np.frombuffer(self.mm, dtype=np.uint8)[::PAGE] = 0

    def __len__(self) -> int:
        return len(self.mm)
