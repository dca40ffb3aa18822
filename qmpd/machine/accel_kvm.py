"""The KVM accelerator: one VM, one memory slot over guest RAM, one vCPU, its dirty log.

Users: :class:`qmpd.machine.Machine` (built for ``-accel kvm`` and ``kvm:tcg``) and the
vCPU thread (``run``/``arm``/``save``/``load`` are called on it; ``kick`` and the dirty
log from the loop thread).
"""

from __future__ import annotations

import numpy as np

from qmpd.machine import layout
from qmpd.machine.dirty import bitmap_words, decode_bitmap
from qmpd.machine.errors import KvmError, KvmUnavailableError
from qmpd.machine.kick import kick_signal, kick_thread
from qmpd.machine.kvm import Kvm
from qmpd.machine.kvm import exits as ex
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.system import KVM_DEVICE
from qmpd.machine.kvm.vcpu import SAVED_MSRS
from qmpd.machine.memory import GuestRam
from qmpd.machine.state import StateWriter, VcpuState

RAM_SLOT = 0


class KvmAccel:
    """KVM for a :class:`GuestRam`. ``manual_protect=False`` keeps KVM's classic dirty log
    (GET = get + clear + re-protect) even where manual protect is offered.

    :raise KvmUnavailableError: if ``/dev/kvm`` cannot be used.
    """

    accel = "kvm"
    #: KVM_GET_DIRTY_LOG is safe from any thread while the vCPU runs.
    harvest_on_vcpu_thread = False

    def __init__(self, ram: GuestRam, manual_protect: bool = True,
                 device: str = KVM_DEVICE) -> None:
        self.ram = ram
        self.kvm = Kvm(device)
        try:
            for cap in (k.Cap.USER_MEMORY, k.Cap.IMMEDIATE_EXIT, k.Cap.XSAVE, k.Cap.XCRS,
                        k.Cap.VCPU_EVENTS):
                if not self.kvm.check_extension(cap):
                    raise KvmUnavailableError(f"KVM lacks capability {cap.name}")
            self.vm = self.kvm.create_vm()
            self.manual_protect = manual_protect and self.vm.enable_manual_dirty_protect()
            # Guest RAM is owned by `ram` (GuestRam keeps the mmap until close(), which
            # Machine calls only after this VM fd is closed).
            self.vm.set_user_memory_region(RAM_SLOT, 0, ram.size, ram.host_addr)
            self.vcpu = self.vm.create_vcpu(0)
            self.vcpu.set_cpuid2(self.kvm.supported_cpuid())
            kick_signal()
        except KvmError as err:
            self._close_partial()
            raise KvmUnavailableError(f"KVM is not usable: {err}") from err
        except BaseException:
            self._close_partial()
            raise
        self._bitmap = np.zeros(bitmap_words(ram.npages), dtype=np.uint64)
        self.dirty_logging = False

    # ------------------------------------------------------------------ vCPU thread
    def boot(self) -> None:
        """Put the vCPU at the guest's entry (long mode, CPL3)."""
        self.vcpu.set_sregs(layout.boot_sregs(self.vcpu.get_sregs()))
        self.vcpu.set_regs(layout.boot_regs())

    def arm(self) -> None:
        """Clear a pending kick; call before looking for requests."""
        self.vcpu.set_immediate_exit(False)

    def run(self) -> ex.VcpuExit:
        return self.vcpu.run()

    def save(self) -> VcpuState:
        msrs = self.vcpu.get_msrs()
        return VcpuState(self.vcpu.get_regs(), self.vcpu.get_sregs(), self.vcpu.get_xsave(),
                         self.vcpu.get_xcrs(), self.vcpu.get_events(),
                         [(msrs.entries[i].index, msrs.entries[i].data)
                          for i in range(len(SAVED_MSRS))])

    def save_into(self, w: StateWriter) -> None:
        """The vCPU's state, read by the ioctls straight into ``w``'s blob."""
        vcpu = self.vcpu
        vcpu.get_msrs(w.msrs)
        vcpu.get_regs(w.regs)
        vcpu.get_sregs(w.sregs)
        vcpu.get_xsave(w.xsave)
        vcpu.get_xcrs(w.xcrs)
        vcpu.get_events(w.events)

    def load(self, st: VcpuState) -> None:
        """Apply ``st``; on a kernel refusal, put the previous state back and re-raise."""
        before = self.save()
        try:
            self._apply(st)
        except BaseException:
            self._apply(before)
            raise

    def _apply(self, st: VcpuState) -> None:
        msrs = k.KvmMsrs(nmsrs=len(st.msrs))
        for i, (index, value) in enumerate(st.msrs):
            msrs.entries[i].index, msrs.entries[i].data = index, value
        self.vcpu.set_sregs(st.sregs)
        self.vcpu.set_xcrs(st.xcrs)
        self.vcpu.set_xsave(st.xsave)
        self.vcpu.set_msrs(msrs)
        self.vcpu.set_regs(st.regs)
        self.vcpu.set_events(st.events)

    # ------------------------------------------------------------------ any thread
    def kick(self, thread_ident: int | None) -> None:
        """Make the vCPU leave (or not enter) KVM_RUN."""
        self.vcpu.set_immediate_exit(True)
        if thread_ident is not None:
            kick_thread(thread_ident)

    def dirty_log_start(self) -> None:
        self.vm.set_user_memory_region(RAM_SLOT, 0, self.ram.size, self.ram.host_addr,
                                       log_dirty=True)
        self.dirty_logging = True

    def dirty_log_harvest(self) -> np.ndarray:
        """Pages dirtied since the last harvest/start (get + clear)."""
        # `_bitmap` is owned by this object and outlives both ioctls.
        addr = int(self._bitmap.ctypes.data)
        self.vm.get_dirty_log(RAM_SLOT, addr)
        if self.manual_protect:
            self.vm.clear_dirty_log(RAM_SLOT, 0, self.ram.npages, addr)
        return decode_bitmap(self._bitmap)

    def dirty_log_stop(self) -> None:
        self.vm.set_user_memory_region(RAM_SLOT, 0, self.ram.size, self.ram.host_addr)
        self.dirty_logging = False

    def _close_partial(self) -> None:
        for name in ("vcpu", "vm", "kvm"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()

    def close(self) -> None:
        self.vcpu.close()
        self.vm.close()
        self.kvm.close()
