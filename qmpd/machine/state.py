"""The machine-state blob of ``Machine.save_state`` / ``load_state``: versioned, fixed layout.

Users: migration (CPU/DEVICE section payload), COLO checkpoints, tests. The same format is
produced and accepted by the KVM and the TCG CPU, so a state moves between them.

::

    offset size  field
    0      8     magic  b"QMPDVMST"
    8      2     version (1)
    10     2     flags (0)
    12     4     total size (== BLOB_SIZE)
    16     4     crc32 of bytes [24:]
    20     4     reserved (0)
    24     8     mem_bytes of the machine that saved it
    32     72    the guest's 9 config words (layout.config_words)
    104    144   kvm_regs
    248    312   kvm_sregs
    560    4096  kvm_xsave
    4656   392   kvm_xcrs
    5048   64    kvm_vcpu_events
    5112   128   8 x kvm_msr_entry (vcpu.SAVED_MSRS, in order)
    5240   64    devices: ring cons u64, 7 x u64 reserved (0)
    5304         end

:func:`decode` checks everything (size, magic, version, crc, machine identity, CPU mode,
MSR list) before returning; nothing is applied by this module.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from qmpd.checksum import crc32
from qmpd.machine import layout
from qmpd.machine.errors import MachineStateError
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.vcpu import SAVED_MSRS

MAGIC = b"QMPDVMST"
VERSION = 1
_HEADER = struct.Struct("<8sHHIII")
_IDENT = struct.Struct("<Q9Q")
_DEVICE = struct.Struct("<Q7Q")
_MSR = struct.Struct("<IIQ")
_PARTS = (k.KvmRegs, k.KvmSregs, k.KvmXsave, k.KvmXcrs, k.KvmVcpuEvents)
BLOB_SIZE = (_HEADER.size + _IDENT.size + sum(ctypes.sizeof(p) for p in _PARTS)
             + _MSR.size * len(SAVED_MSRS) + _DEVICE.size)
#: Hard limit checked before anything else is parsed.
MAX_BLOB_BYTES = 64 * 1024


@dataclass
class VcpuState:
    """One vCPU's architectural state, in KVM's struct layouts."""

    regs: k.KvmRegs
    sregs: k.KvmSregs
    xsave: k.KvmXsave
    xcrs: k.KvmXcrs
    events: k.KvmVcpuEvents
    msrs: list[tuple[int, int]]


@dataclass
class MachineState:
    """Everything ``save_state`` captures besides RAM."""

    mem_bytes: int
    config: tuple[int, ...]
    cpu: VcpuState
    ring_cons: int


class StateWriter:
    """The one encoder: a preallocated blob whose CPU parts are ctypes structs laid over
    its bytes, so that KVM's GET ioctls write straight into it (a checkpoint's save is a
    handful of ioctls and one copy, no per-part objects). One per machine, used by one
    thread at a time.
    """

    def __init__(self) -> None:
        self._buf = bytearray(BLOB_SIZE)
        off = _HEADER.size + _IDENT.size
        # Views into `_buf`, which is never resized (ctypes holds an export on it).
        self.regs = k.KvmRegs.from_buffer(self._buf, off)
        off += ctypes.sizeof(k.KvmRegs)
        self.sregs = k.KvmSregs.from_buffer(self._buf, off)
        off += ctypes.sizeof(k.KvmSregs)
        self.xsave = k.KvmXsave.from_buffer(self._buf, off)
        off += ctypes.sizeof(k.KvmXsave)
        self.xcrs = k.KvmXcrs.from_buffer(self._buf, off)
        off += ctypes.sizeof(k.KvmXcrs)
        self.events = k.KvmVcpuEvents.from_buffer(self._buf, off)
        off += ctypes.sizeof(k.KvmVcpuEvents)
        self._msr_off = off
        self._device_off = off + _MSR.size * len(SAVED_MSRS)
        #: KVM_GET_MSRS argument, indices preset; its entries are copied in by finish().
        self.msrs = k.KvmMsrs(nmsrs=len(SAVED_MSRS))
        for i, index in enumerate(SAVED_MSRS):
            self.msrs.entries[i].index = index

    def put(self, cpu: VcpuState) -> None:
        """Copy a :class:`VcpuState` in (TCG, and states built in Python)."""
        for dst, src in ((self.regs, cpu.regs), (self.sregs, cpu.sregs),
                         (self.xsave, cpu.xsave), (self.xcrs, cpu.xcrs),
                         (self.events, cpu.events)):
            ctypes.memmove(ctypes.addressof(dst), ctypes.addressof(src), ctypes.sizeof(dst))
        for i, (index, value) in enumerate(cpu.msrs):
            self.msrs.entries[i].index, self.msrs.entries[i].data = index, value

    def finish(self, mem_bytes: int, config: tuple[int, ...], ring_cons: int) -> bytes:
        """Add identity, MSRs, devices, header and checksum; return the blob."""
        buf = self._buf
        _IDENT.pack_into(buf, _HEADER.size, mem_bytes, *config)
        n = len(SAVED_MSRS)
        # kvm_msr_entry is the blob's MSR record (u32 index, u32 reserved, u64 value).
        buf[self._msr_off:self._device_off] = memoryview(self.msrs).cast("B")[8:8 + 16 * n]
        _DEVICE.pack_into(buf, self._device_off, ring_cons, *([0] * 7))
        crc = crc32(memoryview(buf)[_HEADER.size:])
        _HEADER.pack_into(buf, 0, MAGIC, VERSION, 0, BLOB_SIZE, crc, 0)
        return bytes(buf)


def encode(state: MachineState) -> bytes:
    """Serialise ``state`` into a blob of exactly :data:`BLOB_SIZE` bytes."""
    writer = StateWriter()
    writer.put(state.cpu)
    return writer.finish(state.mem_bytes, state.config, state.ring_cons)


def decode(blob: bytes, mem_bytes: int, config: tuple[int, ...]) -> MachineState:
    """Parse and validate a blob for a machine of ``mem_bytes`` running guest ``config``.

    :raise MachineStateError: with a one-line reason, on any mismatch.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise MachineStateError("machine state must be bytes")
    blob = bytes(blob)
    if len(blob) > MAX_BLOB_BYTES:
        raise MachineStateError(f"machine state too large: {len(blob)} bytes")
    if len(blob) < _HEADER.size:
        raise MachineStateError(f"machine state truncated: {len(blob)} bytes")
    magic, version, flags, size, crc, _ = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise MachineStateError("machine state: bad magic")
    if version != VERSION:
        raise MachineStateError(f"machine state: unsupported version {version}")
    if size != BLOB_SIZE or len(blob) != BLOB_SIZE or flags:
        raise MachineStateError(
            f"machine state: size {len(blob)} (header says {size}), expected {BLOB_SIZE}")
    if crc32(blob[_HEADER.size:]) != crc:
        raise MachineStateError("machine state: checksum mismatch")
    off = _HEADER.size
    ident = _IDENT.unpack_from(blob, off)
    off += _IDENT.size
    if ident[0] != mem_bytes:
        raise MachineStateError(
            f"machine state is for {ident[0] >> 20}M of RAM, this machine has {mem_bytes >> 20}M")
    if tuple(ident[1:]) != tuple(config):
        raise MachineStateError("machine state is for a different guest configuration")
    regs = k.KvmRegs.from_buffer_copy(blob, off)
    off += ctypes.sizeof(k.KvmRegs)
    sregs = k.KvmSregs.from_buffer_copy(blob, off)
    off += ctypes.sizeof(k.KvmSregs)
    xsave = k.KvmXsave.from_buffer_copy(blob, off)
    off += ctypes.sizeof(k.KvmXsave)
    xcrs = k.KvmXcrs.from_buffer_copy(blob, off)
    off += ctypes.sizeof(k.KvmXcrs)
    events = k.KvmVcpuEvents.from_buffer_copy(blob, off)
    off += ctypes.sizeof(k.KvmVcpuEvents)
    msrs = [(_MSR.unpack_from(blob, off + i * _MSR.size)[0],
             _MSR.unpack_from(blob, off + i * _MSR.size)[2]) for i in range(len(SAVED_MSRS))]
    off += _MSR.size * len(SAVED_MSRS)
    if tuple(i for i, _ in msrs) != SAVED_MSRS:
        raise MachineStateError("machine state: unexpected MSR list")
    ring_cons = _DEVICE.unpack_from(blob, off)[0]
    _check_cpu(regs, sregs, xcrs, mem_bytes)
    if ring_cons >= 1 << 62:
        raise MachineStateError(f"machine state: ring index {ring_cons} out of range")
    return MachineState(mem_bytes, tuple(ident[1:]),
                        VcpuState(regs, sregs, xsave, xcrs, events, msrs), ring_cons)


def _check_cpu(regs: k.KvmRegs, sregs: k.KvmSregs, xcrs: k.KvmXcrs, mem_bytes: int) -> None:
    if not layout.CODE_GPA <= regs.rip < layout.CODE_GPA + layout.CODE_MAX:
        raise MachineStateError(f"machine state: rip {regs.rip:#x} outside the guest code")
    if sregs.efer & layout.EFER_LMA == 0 or not sregs.cs.l or sregs.cs.dpl != 3:
        raise MachineStateError("machine state: vCPU not in 64-bit user mode")
    if sregs.cr3 != layout.PML4_GPA or sregs.cr0 & layout.CR0_PG == 0:
        raise MachineStateError(f"machine state: unexpected paging setup (cr3={sregs.cr3:#x})")
    if xcrs.nr_xcrs > 16:
        raise MachineStateError(f"machine state: {xcrs.nr_xcrs} XCRs")
    del mem_bytes
