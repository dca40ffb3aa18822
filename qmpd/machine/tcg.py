"""The TCG accelerator: the same guest on the same mmap'd RAM, run by unicorn.

Users: :class:`qmpd.machine.Machine` for ``-accel tcg`` (and ``kvm:tcg`` without a usable
``/dev/kvm``). Guest RAM is mapped into unicorn with ``mem_map_ptr`` (no copy). The guest's
page tables are identity maps, so unicorn runs it with paging off (addresses = guest
physical); the state it saves uses the same KVM layouts and the same long-mode CPL3
segment setup KVM runs with, so blobs move between accelerators.

- ``run`` is ``emu_start`` until the guest's ``out`` (hooked: the hook records an
  :class:`~qmpd.machine.kvm.exits.IoOut` and stops) or a kick (``emu_stop`` from another
  thread; a kick that lands before ``emu_start`` is caught by a flag, and the requester
  re-kicks while it waits).
- Dirty tracking: while logging, a ``UC_HOOK_MEM_WRITE`` hook marks each written page in a
  bytearray; start, harvest and stop run on the vCPU thread between runs
  (``harvest_on_vcpu_thread``), so the hook needs no lock.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol, cast

import numpy as np
from unicorn import unicorn_const as uc_const
from unicorn import x86_const as x

from qmpd.machine import layout
from qmpd.machine.errors import KvmUnavailableError
from qmpd.machine.kvm import exits as ex
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.vcpu import SAVED_MSRS
from qmpd.machine.memory import GuestRam
from qmpd.machine.state import StateWriter, VcpuState

_GPRS = [("rax", x.UC_X86_REG_RAX), ("rbx", x.UC_X86_REG_RBX), ("rcx", x.UC_X86_REG_RCX),
         ("rdx", x.UC_X86_REG_RDX), ("rsi", x.UC_X86_REG_RSI), ("rdi", x.UC_X86_REG_RDI),
         ("rsp", x.UC_X86_REG_RSP), ("rbp", x.UC_X86_REG_RBP), ("r8", x.UC_X86_REG_R8),
         ("r9", x.UC_X86_REG_R9), ("r10", x.UC_X86_REG_R10), ("r11", x.UC_X86_REG_R11),
         ("r12", x.UC_X86_REG_R12), ("r13", x.UC_X86_REG_R13), ("r14", x.UC_X86_REG_R14),
         ("r15", x.UC_X86_REG_R15), ("rip", x.UC_X86_REG_RIP),
         ("rflags", x.UC_X86_REG_RFLAGS)]
_unicorn = importlib.import_module("unicorn")  # untyped package: used through UcLike
_UcError: type[Exception] = _unicorn.UcError


class UcLike(Protocol):
    """The part of ``unicorn.Uc`` this module uses, typed."""

    def reg_read(self, reg_id: int) -> int: ...
    def reg_write(self, reg_id: int, value: int) -> None: ...
    def emu_start(self, begin: int, until: int) -> None: ...
    def emu_stop(self) -> None: ...
    def mem_map_ptr(self, address: int, size: int, perms: int, ptr: int) -> None: ...
    def mem_unmap(self, address: int, size: int) -> None: ...
    def hook_add(self, htype: int, callback: Callable[..., None], user_data: object,
                 begin: int, end: int, aux1: int = 0) -> int: ...
    def hook_del(self, handle: int) -> None: ...
    def ctl_remove_cache(self, begin: int, end: int) -> None: ...


_MSR_DEFAULTS = {0x277: 0x0007040600070406}  # PAT power-on value; the rest are 0
_MXCSR_DEFAULT = 0x1F80


class TcgAccel:
    """unicorn over a :class:`GuestRam`."""

    accel = "tcg"
    #: The dirty bitmap is written by hooks on the vCPU thread: harvest there too.
    harvest_on_vcpu_thread = True

    def __init__(self, ram: GuestRam) -> None:
        self.ram = ram
        try:
            self.uc = cast(UcLike, _unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64))
            # Guest RAM is owned by `ram` (mapped until GuestRam.close(), which Machine
            # calls only after this emulator is closed); unicorn reads/writes it in place.
            self.uc.mem_map_ptr(0, ram.size, uc_const.UC_PROT_ALL, ram.host_addr)
        except _UcError as err:
            raise KvmUnavailableError(f"tcg: cannot start the emulator: {err}") from err
        self._out_hook = self.uc.hook_add(uc_const.UC_HOOK_INSN, self._on_out, None, 1, 0,
                                          x.UC_X86_INS_OUT)
        self._exit: ex.VcpuExit | None = None
        self._kicked = False
        self._dirty = bytearray(ram.npages)
        self._dirty_hook: int | None = None

    # ------------------------------------------------------------------ vCPU thread
    def boot(self) -> None:
        self.uc.ctl_remove_cache(0, self.ram.size)
        self._write_regs(layout.boot_regs())

    def arm(self) -> None:
        self._kicked = False

    def run(self) -> ex.VcpuExit:
        if self._kicked:
            return ex.Interrupted()
        self._exit = None
        rip = self.uc.reg_read(x.UC_X86_REG_RIP)
        try:
            self.uc.emu_start(rip, -1)
        except _UcError as err:
            return ex.InternalError(int(getattr(err, 'errno', 0) or 0))
        return self._exit or ex.Interrupted()

    def _on_out(self, uc: UcLike, port: int, size: int, value: int,
                user_data: object) -> None:
        self._exit = ex.IoOut(port, size, value)
        uc.emu_stop()

    def save(self) -> VcpuState:
        regs = k.KvmRegs()
        for name, reg in _GPRS:
            setattr(regs, name, self.uc.reg_read(reg))
        xsave = k.KvmXsave()
        xsave.region[6] = _MXCSR_DEFAULT  # byte 24: MXCSR; XSTATE_BV 0 = init state
        xcrs = k.KvmXcrs(nr_xcrs=1)
        xcrs.xcrs[0].value = 1  # XCR0 = x87
        msrs = [(index, _MSR_DEFAULTS.get(index, 0)) for index in SAVED_MSRS]
        return VcpuState(regs, layout.boot_sregs(), xsave, xcrs, k.KvmVcpuEvents(), msrs)

    def save_into(self, w: StateWriter) -> None:
        """:meth:`save`, copied into ``w``'s blob."""
        w.put(self.save())

    def load(self, st: VcpuState) -> None:
        """Only the general registers matter to the emulated guest (segments, paging and
        MSRs are fixed by the layout and were validated by the state decoder)."""
        self.uc.ctl_remove_cache(0, self.ram.size)
        self._write_regs(st.regs)

    def _write_regs(self, regs: k.KvmRegs) -> None:
        for name, reg in _GPRS:
            self.uc.reg_write(reg, int(getattr(regs, name)))

    # ------------------------------------------------------------------ any thread
    def kick(self, thread_ident: int | None) -> None:
        self._kicked = True
        self.uc.emu_stop()

    def dirty_log_start(self) -> None:
        """vCPU thread (Machine routes it there): unicorn cannot add hooks mid-run."""
        dirty = self._dirty
        dirty[:] = bytes(len(dirty))
        if self._dirty_hook is None:
            def on_write(uc: UcLike, access: int, address: int, size: int, value: int,
                         user_data: object) -> None:
                # Runs on the vCPU thread only; harvest runs there too (no lock needed).
                dirty[address >> 12] = 1
                if (address & 0xFFF) + size > 0x1000:
                    dirty[(address + size - 1) >> 12] = 1

            self._dirty_hook = self.uc.hook_add(uc_const.UC_HOOK_MEM_WRITE, on_write, None,
                                                0, self.ram.size - 1)

    def dirty_log_harvest(self) -> np.ndarray:
        """vCPU thread, between runs (Machine routes it there): read and clear the bits."""
        bits = np.frombuffer(self._dirty, np.uint8)
        pages = np.flatnonzero(bits)
        bits[pages] = 0
        return pages.astype(np.uint64)

    def dirty_log_stop(self) -> None:
        if self._dirty_hook is not None:
            self.uc.hook_del(self._dirty_hook)
            self._dirty_hook = None

    def close(self) -> None:
        self.dirty_log_stop()
        self.uc.hook_del(self._out_hook)
        self.uc.mem_unmap(0, self.ram.size)
        # unicorn keeps reference cycles of its own (freed by the GC, not by refcount):
        # drop ours to it and to RAM so the guest RAM goes as soon as the Machine does.
        del self.uc, self.ram


__all__ = ["TcgAccel"]
