"""Guest-physical memory layout and the boot image the VMM writes before the first run.

Users: :class:`qmpd.machine.Machine` (boot, reset), the output device (ring addresses), the
TCG CPU and tests. The guest program (``guest/counter.S``) hard-codes ``CONFIG_GPA`` and
``RING_HDR_GPA``; everything else it reads from the config page.

::

    0x000000  unused
    0x001000  config page     (VMM writes at boot; guest only reads)
    0x002000  ring header     prod u64 @+0 (guest), cons u64 @+64 (VMM mirror of device state)
    0x003000  PML4, 0x004000 PDPT, 0x005000.. one PD per GiB (2 MiB pages, A/D preset)
    0x050000  TSS             I/O permission bitmap opening every port (CPL3 `out` → exit)
    0x080000  guest code      (entry at offset 0)
    0x100000  output ring     RING_SLOTS x 64-byte slots: byte 0 = length, text right-aligned
    0x200000  working set     W = wss/4K pages
"""

from __future__ import annotations

import struct

import numpy as np

from qmpd.machine.config import GuestConfig
from qmpd.machine.kvm import ioctls as k

PAGE = 4096
CONFIG_GPA = 0x1000
RING_HDR_GPA = 0x2000
RING_PROD_OFF, RING_CONS_OFF = 0, 64
PML4_GPA = 0x3000
PDPT_GPA = 0x4000
PD_GPA = 0x5000  # config.MAX_MEM_BYTES / 1 GiB page directories fit below TSS_GPA
TSS_GPA = 0x50000
TSS_IOMAP_OFF = 104
TSS_LIMIT = TSS_IOMAP_OFF + 8192  # bitmap for 65536 ports + the 0xff terminator byte
CODE_GPA = 0x80000
CODE_MAX = 0x80000
RING_GPA = 0x100000
SLOT_BYTES = 64
RING_SLOTS = 16384
WS_GPA = 0x200000

PTE_TABLE = 0x27  # P | RW | US | A
PTE_2M = 0xE7     # P | RW | US | A | D | PS
GUEST_MAGIC = 0x31544E4344504D51  # "QMPDCNT1"
PORT_DOORBELL = 0x510
PORT_ERROR = 0x511
DOORBELL_BATCH, DOORBELL_FULL = 0, 1

#: RFLAGS at entry: reserved bit 1 only. (IOPL=3 is not kept by kvm_pvm; CPL3 `out` is
#: allowed through the TSS I/O bitmap instead and reaches the VMM as port I/O.)
BOOT_RFLAGS = 0x2
CR0_PE, CR0_ET, CR0_WP, CR0_PG = 1, 1 << 4, 1 << 16, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


def config_words(guest: GuestConfig) -> list[int]:
    """The config page's u64 words, in the order counter.S reads them."""
    return [GUEST_MAGIC, WS_GPA, guest.ws_pages, guest.dirty_pages, guest.pace,
            guest.check_every, RING_GPA, RING_SLOTS, guest.effective_batch()]


CONFIG_BATCH_WORD = 8  # index of the batch word in config_words()


def set_batch(ram: np.ndarray, batch: int) -> None:
    """Change the guest's records-per-doorbell while it runs (it rereads the word every
    step; only the timing of doorbell exits changes, never the output)."""
    ram[CONFIG_GPA:CONFIG_GPA + PAGE].view(np.uint64)[CONFIG_BATCH_WORD] = batch


def get_batch(ram: np.ndarray) -> int:
    """The batch word currently in the config page."""
    return int(ram[CONFIG_GPA:CONFIG_GPA + PAGE].view(np.uint64)[CONFIG_BATCH_WORD])


def write_boot_image(ram: np.ndarray, mem_bytes: int, guest: GuestConfig,
                     image: bytes) -> None:
    """Write config page, ring header, page tables and code into zeroed guest RAM ``ram``
    (a flat uint8 view). Touches only the pages it writes."""
    words = config_words(guest)
    ram[CONFIG_GPA:CONFIG_GPA + 8 * len(words)] = np.frombuffer(
        struct.pack(f"<{len(words)}Q", *words), np.uint8)
    ram[RING_HDR_GPA:RING_HDR_GPA + PAGE] = 0
    npds = -(-mem_bytes // (1 << 30))
    tables = ram[PML4_GPA:PD_GPA + npds * PAGE].view(np.uint64)
    tables[:] = 0
    # Accessed (and, on 2 MiB pages, Dirty) bits are preset so the guest's MMU never
    # writes its page tables: no page-table page ever shows up in the dirty log.
    tables[0] = PDPT_GPA | PTE_TABLE
    pdpt = (PDPT_GPA - PML4_GPA) // 8
    tables[pdpt:pdpt + npds] = PD_GPA + PAGE * np.arange(npds, dtype=np.uint64) | PTE_TABLE
    pd = (PD_GPA - PML4_GPA) // 8
    tables[pd:pd + 512 * npds] = (np.arange(512 * npds, dtype=np.uint64) << 21) | PTE_2M
    ram[TSS_GPA:TSS_GPA + TSS_LIMIT + 1] = 0
    ram[TSS_GPA + 102:TSS_GPA + 104] = np.frombuffer(struct.pack("<H", TSS_IOMAP_OFF), np.uint8)
    ram[TSS_GPA + TSS_LIMIT] = 0xFF
    ram[CODE_GPA:CODE_GPA + len(image)] = np.frombuffer(image, np.uint8)


def boot_regs() -> k.KvmRegs:
    """General registers at entry: rip at the code, IOPL=3, everything else 0."""
    return k.KvmRegs(rip=CODE_GPA, rflags=BOOT_RFLAGS)


def boot_sregs(base: k.KvmSregs | None = None) -> k.KvmSregs:
    """Long mode at CPL3, paging on with our identity map; other fields kept from ``base``."""
    sregs = k.KvmSregs() if base is None else base
    code = k.KvmSegment(base=0, limit=0xFFFFFFFF, selector=0x1B, type=11, present=1,
                        dpl=3, db=0, s=1, l=1, g=1)
    data = k.KvmSegment(base=0, limit=0xFFFFFFFF, selector=0x23, type=3, present=1,
                        dpl=3, db=1, s=1, l=0, g=1)
    sregs.cs = code
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = k.KvmSegment(base=TSS_GPA, limit=TSS_LIMIT, selector=0x28, type=11, present=1, s=0)
    sregs.ldt = k.KvmSegment(base=0, limit=0xFFFF, selector=0, type=2, present=1, s=0)
    sregs.cr0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG
    sregs.cr3 = PML4_GPA
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    return sregs
