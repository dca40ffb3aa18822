"""Byte layouts on the checkpoint path: the dirty-bitmap decoder and the state blob."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.machine import state
from qmpd.machine.dirty import WHOLE_UNPACK_WORDS, decode_bitmap
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.vcpu import SAVED_MSRS


def _reference(bitmap: np.ndarray) -> list[int]:
    return [w * 64 + b for w, word in enumerate(bitmap.tolist()) for b in range(64)
            if word >> b & 1]


@settings(max_examples=200, deadline=None)
@given(words=st.sampled_from([1, 7, WHOLE_UNPACK_WORDS, WHOLE_UNPACK_WORDS + 1, 4096]),
       seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0, 1e-4, 0.01, 0.5, 1.0]))
def test_decode_bitmap_gives_the_set_bits_in_order_on_both_paths(
        words: int, seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    bits = rng.random(words * 64) < density
    bitmap = np.packbits(bits, bitorder="little").view(np.uint64)
    got = decode_bitmap(bitmap)
    assert got.dtype == np.uint64
    assert got.tolist() == _reference(bitmap)


def _sample_state() -> state.MachineState:
    regs = k.KvmRegs()
    regs.rip, regs.rax, regs.rflags = 0x1234, 0xDEADBEEF, 0x202
    sregs = k.KvmSregs()
    sregs.cr3 = 0x5000
    xsave = k.KvmXsave()
    xsave.region[6] = 0x1F80
    xcrs = k.KvmXcrs(nr_xcrs=1)
    xcrs.xcrs[0].value = 7
    events = k.KvmVcpuEvents()
    msrs = [(index, i * 0x1111) for i, index in enumerate(SAVED_MSRS)]
    cpu = state.VcpuState(regs, sregs, xsave, xcrs, events, msrs)
    return state.MachineState(32 << 20, tuple(range(9)), cpu, 77)


def test_state_blob_layout_is_the_documented_one() -> None:
    st_ = _sample_state()
    blob = state.encode(st_)
    cpu = st_.cpu
    body = struct.pack("<Q9Q", st_.mem_bytes, *st_.config)
    body += b"".join(bytes(p) for p in (cpu.regs, cpu.sregs, cpu.xsave, cpu.xcrs, cpu.events))
    body += b"".join(struct.pack("<IIQ", i, 0, v) for i, v in cpu.msrs)
    body += struct.pack("<Q7Q", 77, *([0] * 7))
    header = struct.pack("<8sHHIII", b"QMPDVMST", 1, 0, state.BLOB_SIZE, zlib.crc32(body), 0)
    assert blob == header + body
    assert len(blob) == state.BLOB_SIZE == 5304


def test_a_writer_reused_gives_each_state_exactly() -> None:
    first, second = _sample_state(), _sample_state()
    second.cpu.regs.rip = 0x9999
    writer = state.StateWriter()
    writer.put(first.cpu)
    a = writer.finish(first.mem_bytes, first.config, first.ring_cons)
    writer.put(second.cpu)
    b = writer.finish(second.mem_bytes, second.config, second.ring_cons)
    assert a == state.encode(first) and b == state.encode(second) and a != b
