"""A KVM vCPU fd: the mmap'd kvm_run area, ``run()`` → typed exits, register/state ioctls."""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import mmap
import os
import struct

from qmpd.machine.errors import KvmError
from qmpd.machine.kvm import exits as ex
from qmpd.machine.kvm import ioctls as k

#: MSRs saved with the vCPU (the guest runs at CPL3 and touches none of them, but they are
#: architectural state a continuing guest must see unchanged). Order is part of the blob.
SAVED_MSRS = (
    0xC0000081,  # STAR
    0xC0000082,  # LSTAR
    0xC0000083,  # CSTAR
    0xC0000084,  # SFMASK
    0xC0000102,  # KERNEL_GS_BASE
    0x00000277,  # PAT
    0x00000174,  # SYSENTER_CS
    0x00000175,  # SYSENTER_ESP
)
if len(SAVED_MSRS) != k.MSR_SLOTS:  # a data error in this module, caught at import
    raise ImportError("SAVED_MSRS must have ioctls.MSR_SLOTS entries")


class VcpuFd:
    """One vCPU. Made only by :meth:`VmFd.create_vcpu`."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        self.fd = fd
        # kvm_run: a kernel-owned shared page, mapped here until close().
        self._run = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)

    # ------------------------------------------------------------------ run
    def set_immediate_exit(self, value: bool) -> None:
        """Set kvm_run.immediate_exit (safe from any thread: one byte store)."""
        self._run[k.RUN_IMMEDIATE_EXIT] = 1 if value else 0

    def run(self) -> ex.VcpuExit:
        """KVM_RUN once; return why it came back. Releases the GIL while in the guest."""
        try:
            fcntl.ioctl(self.fd, k.KVM_RUN, 0)
        except InterruptedError:
            return ex.Interrupted()
        except OSError as err:
            raise KvmError("KVM_RUN", err.errno or _errno.EIO) from err
        run = self._run
        reason = struct.unpack_from("<I", run, k.RUN_EXIT_REASON)[0]
        if reason == k.ExitReason.IO:
            direction, size, port = struct.unpack_from("<BBH", run, k.RUN_IO_DIRECTION)
            if direction == k.KVM_EXIT_IO_OUT:
                offset = struct.unpack_from("<Q", run, k.RUN_IO_DATA_OFFSET)[0]
                value = int.from_bytes(run[offset:offset + size], "little")
                return ex.IoOut(port, size, value)
            return ex.IoIn(port, size)
        if reason == k.ExitReason.INTR:
            return ex.Interrupted()
        if reason == k.ExitReason.HLT:
            return ex.Hlt()
        if reason == k.ExitReason.SHUTDOWN:
            return ex.Shutdown()
        if reason == k.ExitReason.MMIO:
            addr = struct.unpack_from("<Q", run, k.RUN_MMIO_PHYS_ADDR)[0]
            return ex.Mmio(addr, bool(run[k.RUN_MMIO_IS_WRITE]))
        if reason == k.ExitReason.FAIL_ENTRY:
            return ex.FailEntry(struct.unpack_from("<Q", run, k.RUN_FAIL_REASON)[0])
        if reason == k.ExitReason.INTERNAL_ERROR:
            return ex.InternalError(struct.unpack_from("<I", run, k.RUN_INTERNAL_SUBERROR)[0])
        return ex.Unknown(reason)

    # ------------------------------------------------------------------ state
    def _ioctl(self, name: str, req: int, arg: ctypes.Structure) -> None:
        # `arg` is a ctypes struct owned by the caller; the kernel reads/writes it only
        # during this call.
        try:
            fcntl.ioctl(self.fd, req, arg)
        except OSError as err:
            raise KvmError(name, err.errno or _errno.EIO) from err

    def get_regs(self, out: k.KvmRegs | None = None) -> k.KvmRegs:
        regs = k.KvmRegs() if out is None else out
        self._ioctl("KVM_GET_REGS", k.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: k.KvmRegs) -> None:
        self._ioctl("KVM_SET_REGS", k.KVM_SET_REGS, regs)

    def get_sregs(self, out: k.KvmSregs | None = None) -> k.KvmSregs:
        sregs = k.KvmSregs() if out is None else out
        self._ioctl("KVM_GET_SREGS", k.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: k.KvmSregs) -> None:
        self._ioctl("KVM_SET_SREGS", k.KVM_SET_SREGS, sregs)

    def get_xsave(self, out: k.KvmXsave | None = None) -> k.KvmXsave:
        xsave = k.KvmXsave() if out is None else out
        self._ioctl("KVM_GET_XSAVE", k.KVM_GET_XSAVE, xsave)
        return xsave

    def set_xsave(self, xsave: k.KvmXsave) -> None:
        self._ioctl("KVM_SET_XSAVE", k.KVM_SET_XSAVE, xsave)

    def get_xcrs(self, out: k.KvmXcrs | None = None) -> k.KvmXcrs:
        xcrs = k.KvmXcrs() if out is None else out
        self._ioctl("KVM_GET_XCRS", k.KVM_GET_XCRS, xcrs)
        return xcrs

    def set_xcrs(self, xcrs: k.KvmXcrs) -> None:
        self._ioctl("KVM_SET_XCRS", k.KVM_SET_XCRS, xcrs)

    def get_events(self, out: k.KvmVcpuEvents | None = None) -> k.KvmVcpuEvents:
        events = k.KvmVcpuEvents() if out is None else out
        self._ioctl("KVM_GET_VCPU_EVENTS", k.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_events(self, events: k.KvmVcpuEvents) -> None:
        self._ioctl("KVM_SET_VCPU_EVENTS", k.KVM_SET_VCPU_EVENTS, events)

    def get_msrs(self, out: k.KvmMsrs | None = None) -> k.KvmMsrs:
        """KVM_GET_MSRS for :data:`SAVED_MSRS` (all must be readable); ``out`` must have
        them as its indices already."""
        msrs = out
        if msrs is None:
            msrs = k.KvmMsrs(nmsrs=len(SAVED_MSRS))
            for i, index in enumerate(SAVED_MSRS):
                msrs.entries[i].index = index
        n = self._msr_ioctl("KVM_GET_MSRS", k.KVM_GET_MSRS, msrs)
        if n != len(SAVED_MSRS):
            raise KvmError("KVM_GET_MSRS", _errno.EINVAL,
                           f"MSR {SAVED_MSRS[n]:#x} not readable")
        return msrs

    def set_msrs(self, msrs: k.KvmMsrs) -> None:
        n = self._msr_ioctl("KVM_SET_MSRS", k.KVM_SET_MSRS, msrs)
        if n != msrs.nmsrs:
            raise KvmError("KVM_SET_MSRS", _errno.EINVAL,
                           f"MSR {msrs.entries[n].index:#x} rejected")

    def _msr_ioctl(self, name: str, req: int, msrs: k.KvmMsrs) -> int:
        try:
            # `msrs` is ours for the call; its size is fixed (MSR_SLOTS entries).
            return int(fcntl.ioctl(self.fd, req, msrs))
        except OSError as err:
            raise KvmError(name, err.errno or _errno.EIO) from err

    def set_cpuid2(self, cpuid: k.KvmCpuid2) -> None:
        self._ioctl("KVM_SET_CPUID2", k.KVM_SET_CPUID2, cpuid)

    def close(self) -> None:
        """Unmap kvm_run and close the vCPU fd."""
        if self.fd >= 0:
            self._run.close()
            os.close(self.fd)
            self.fd = -1
