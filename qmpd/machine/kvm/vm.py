"""A KVM VM fd: memory slots, dirty log (with manual protect where offered), vCPU creation."""

from __future__ import annotations

import errno as _errno
import fcntl
import os
from typing import TYPE_CHECKING

from qmpd.machine.errors import KvmError
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.vcpu import VcpuFd

if TYPE_CHECKING:
    from qmpd.machine.kvm.system import Kvm


class VmFd:
    """One VM. Made only by :meth:`Kvm.create_vm`."""

    def __init__(self, fd: int, kvm: Kvm) -> None:
        self.fd = fd
        self.kvm = kvm

    def _ioctl(self, name: str, req: int, arg: object) -> int:
        try:
            return fcntl.ioctl(self.fd, req, arg)  # type: ignore[call-overload, no-any-return]
        except OSError as err:
            raise KvmError(name, err.errno or _errno.EIO) from err

    def set_user_memory_region(self, slot: int, gpa: int, size: int, host_addr: int,
                               log_dirty: bool = False) -> None:
        """Map ``size`` bytes of host memory at ``host_addr`` as guest-physical ``gpa``.

        Ownership: ``host_addr`` is guest RAM owned by :class:`qmpd.machine.memory.GuestRam`;
        it must stay mapped until this slot is deleted (size 0) or the VM fd is closed.
        """
        region = k.KvmUserspaceMemoryRegion(
            slot=slot, flags=k.KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0,
            guest_phys_addr=gpa, memory_size=size, userspace_addr=host_addr)
        self._ioctl("KVM_SET_USER_MEMORY_REGION", k.KVM_SET_USER_MEMORY_REGION, region)

    def enable_manual_dirty_protect(self) -> bool:
        """Turn on KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 if offered; return whether it is on.

        Without KVM_DIRTY_LOG_INITIALLY_SET: enabling logging write-protects at once, and
        each harvest is GET (read bitmap) + CLEAR (re-protect only the pages reported).
        """
        if not self.kvm.check_extension(k.Cap.MANUAL_DIRTY_LOG_PROTECT2):
            return False
        cap = k.KvmEnableCap(cap=k.Cap.MANUAL_DIRTY_LOG_PROTECT2)
        cap.args[0] = k.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
        try:
            fcntl.ioctl(self.fd, k.KVM_ENABLE_CAP, cap)
        except OSError:
            return False
        return True

    def get_dirty_log(self, slot: int, bitmap_addr: int) -> None:
        """KVM_GET_DIRTY_LOG into the bitmap at ``bitmap_addr``.

        Ownership: the caller's bitmap (a numpy array of ceil(pages/64) u64 it keeps alive
        across the call); the kernel writes the whole bitmap during the ioctl only.
        """
        log = k.KvmDirtyLog(slot=slot, dirty_bitmap=bitmap_addr)
        self._ioctl("KVM_GET_DIRTY_LOG", k.KVM_GET_DIRTY_LOG, log)

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int,
                        bitmap_addr: int) -> None:
        """KVM_CLEAR_DIRTY_LOG: re-protect the pages whose bits are set in the bitmap.

        Ownership: as :meth:`get_dirty_log`; the kernel only reads the bitmap.
        """
        clear = k.KvmClearDirtyLog(slot=slot, num_pages=num_pages, first_page=first_page,
                                   dirty_bitmap=bitmap_addr)
        self._ioctl("KVM_CLEAR_DIRTY_LOG", k.KVM_CLEAR_DIRTY_LOG, clear)

    def create_vcpu(self, vcpu_id: int) -> VcpuFd:
        """KVM_CREATE_VCPU and map its kvm_run area."""
        fd = self._ioctl("KVM_CREATE_VCPU", k.KVM_CREATE_VCPU, vcpu_id)
        return VcpuFd(fd, self.kvm.vcpu_mmap_size)

    def close(self) -> None:
        """Close the VM fd. The kernel drops its reference to guest RAM when the last fd goes."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
