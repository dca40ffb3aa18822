"""KVM ioctl numbers, exit reasons, capabilities and ctypes structs (x86-64). Data only.

Users: :mod:`qmpd.machine.kvm.system`, :mod:`.vm`, :mod:`.vcpu`. Grouped by the fd the
ioctl is issued on, as ``linux/kvm.h`` does. Nothing here performs I/O.
"""

from __future__ import annotations

import ctypes
import enum

KVMIO = 0xAE
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def _iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# --------------------------------------------------------------------------- structs
class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class KvmDirtyLog(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                ("dirty_bitmap", ctypes.c_uint64)]


class KvmClearDirtyLog(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("num_pages", ctypes.c_uint32),
                ("first_page", ctypes.c_uint64), ("dirty_bitmap", ctypes.c_uint64)]


class KvmEnableCap(ctypes.Structure):
    _fields_ = [("cap", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("args", ctypes.c_uint64 * 4), ("pad", ctypes.c_uint8 * 64)]


class KvmRegs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class KvmSegment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
                ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8),
                ("padding", ctypes.c_uint8)]


class KvmDtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class KvmSregs(ctypes.Structure):
    _fields_ = [("cs", KvmSegment), ("ds", KvmSegment), ("es", KvmSegment),
                ("fs", KvmSegment), ("gs", KvmSegment), ("ss", KvmSegment),
                ("tr", KvmSegment), ("ldt", KvmSegment), ("gdt", KvmDtable),
                ("idt", KvmDtable), ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64),
                ("cr3", ctypes.c_uint64), ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64),
                ("efer", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("interrupt_bitmap", ctypes.c_uint64 * 4)]


class KvmFpu(ctypes.Structure):
    _fields_ = [("fpr", ctypes.c_uint8 * 128), ("fcw", ctypes.c_uint16),
                ("fsw", ctypes.c_uint16), ("ftwx", ctypes.c_uint8), ("pad1", ctypes.c_uint8),
                ("last_opcode", ctypes.c_uint16), ("last_ip", ctypes.c_uint64),
                ("last_dp", ctypes.c_uint64), ("xmm", ctypes.c_uint8 * 256),
                ("mxcsr", ctypes.c_uint32), ("pad2", ctypes.c_uint32)]


class KvmXsave(ctypes.Structure):
    _fields_ = [("region", ctypes.c_uint32 * 1024)]


class KvmXcr(ctypes.Structure):
    _fields_ = [("xcr", ctypes.c_uint32), ("reserved", ctypes.c_uint32),
                ("value", ctypes.c_uint64)]


class KvmXcrs(ctypes.Structure):
    _fields_ = [("nr_xcrs", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("xcrs", KvmXcr * 16), ("padding", ctypes.c_uint64 * 16)]


class KvmVcpuEvents(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * 64)]


class KvmMsrEntry(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("reserved", ctypes.c_uint32),
                ("data", ctypes.c_uint64)]


#: Fixed number of MSR entries our kvm_msrs buffers carry (see vcpu.SAVED_MSRS).
MSR_SLOTS = 8


class KvmMsrs(ctypes.Structure):
    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("entries", KvmMsrEntry * MSR_SLOTS)]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32),
                ("ecx", ctypes.c_uint32), ("edx", ctypes.c_uint32),
                ("padding", ctypes.c_uint32 * 3)]


#: Capacity of our kvm_cpuid2 buffer.
CPUID_ENTRIES = 256


class KvmCpuid2(ctypes.Structure):
    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                ("entries", KvmCpuidEntry2 * CPUID_ENTRIES)]


# kvm_run (the shared page mmap'd from the vCPU fd): field offsets.
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_IO_DIRECTION = 32
RUN_IO_SIZE = 33
RUN_IO_PORT = 34
RUN_IO_COUNT = 36
RUN_IO_DATA_OFFSET = 40
RUN_MMIO_PHYS_ADDR = 32
RUN_MMIO_LEN = 48
RUN_MMIO_IS_WRITE = 52
RUN_FAIL_REASON = 32
RUN_INTERNAL_SUBERROR = 32
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1

# --------------------------------------------------------------------------- /dev/kvm
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, 8)

# --------------------------------------------------------------------------- VM fd
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, ctypes.sizeof(KvmDirtyLog))
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))
KVM_ENABLE_CAP = _iow(0xA3, ctypes.sizeof(KvmEnableCap))
KVM_CLEAR_DIRTY_LOG = _iowr(0xC0, ctypes.sizeof(KvmClearDirtyLog))

# --------------------------------------------------------------------------- vCPU fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(KvmSregs))
KVM_GET_MSRS = _iowr(0x88, 8)
KVM_SET_MSRS = _iow(0x89, 8)
KVM_GET_FPU = _ior(0x8C, ctypes.sizeof(KvmFpu))
KVM_SET_FPU = _iow(0x8D, ctypes.sizeof(KvmFpu))
KVM_SET_CPUID2 = _iow(0x90, 8)
KVM_GET_VCPU_EVENTS = _ior(0x9F, ctypes.sizeof(KvmVcpuEvents))
KVM_SET_VCPU_EVENTS = _iow(0xA0, ctypes.sizeof(KvmVcpuEvents))
KVM_GET_XSAVE = _ior(0xA4, ctypes.sizeof(KvmXsave))
KVM_SET_XSAVE = _iow(0xA5, ctypes.sizeof(KvmXsave))
KVM_GET_XCRS = _ior(0xA6, ctypes.sizeof(KvmXcrs))
KVM_SET_XCRS = _iow(0xA7, ctypes.sizeof(KvmXcrs))

# --------------------------------------------------------------------------- flags
KVM_API_VERSION = 12
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0


class Cap(enum.IntEnum):
    """KVM_CAP_* numbers for KVM_CHECK_EXTENSION / KVM_ENABLE_CAP."""

    USER_MEMORY = 3
    NR_MEMSLOTS = 10
    VCPU_EVENTS = 41
    XSAVE = 55
    XCRS = 56
    IMMEDIATE_EXIT = 136
    MANUAL_DIRTY_LOG_PROTECT2 = 168


class ExitReason(enum.IntEnum):
    """kvm_run.exit_reason values."""

    UNKNOWN = 0
    EXCEPTION = 1
    IO = 2
    HYPERCALL = 3
    DEBUG = 4
    HLT = 5
    MMIO = 6
    IRQ_WINDOW_OPEN = 7
    SHUTDOWN = 8
    FAIL_ENTRY = 9
    INTR = 10
    INTERNAL_ERROR = 17
    SYSTEM_EVENT = 24
