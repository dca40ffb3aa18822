"""Hostile streams sent over a real socket to a real destination: each is refused.

The destination must end ``failed`` with a clear ``error-desc``, send that text and
SHUT(1) on the return path, leave its guest paused in ``inmigrate`` (nothing
half-loaded runs), and never write a rejected section into RAM.
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from qmpd.machine.runstate import RunState
from qmpd.migration.stream import (
    FLAG_RETURN_PATH,
    HEADER,
    SECTION,
    StreamHeader,
    encode_end,
    encode_pass_end,
    encode_ram,
    encode_state,
)
from qmpd.migration.transport import RP_HEADER, RpMessage

from .conftest import MiB, Node, NodeFactory, wait_final
from .streams import join, ram_payload, section

MEM = 16 * MiB
NPAGES = MEM // 4096


def good_parts(state: bytes) -> list[bytes]:
    """header, RAM (pages 5..9 = 0x11, 10..19 zero), PASS_END 1, CPU, END."""
    idx = np.arange(5, 10)
    data = np.full((5, 4096), 0x11, dtype=np.uint8)
    return [StreamHeader(FLAG_RETURN_PATH, MEM, 4096).encode(),
            join(encode_ram(idx, np.arange(10, 20), data)),
            join(encode_pass_end(1)), join(encode_state(state)), join(encode_end())]


async def feed(dst: Node, path: str, data: bytes) -> list[tuple[int, bytes]]:
    """Send ``data``, half-close, collect return-path messages until EOF."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    msgs = []
    while True:
        try:
            hdr = await reader.readexactly(RP_HEADER.size)
        except asyncio.IncompleteReadError:
            break
        kind, length = RP_HEADER.unpack(hdr)
        msgs.append((kind, await reader.readexactly(length)))
    writer.close()
    return msgs


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0xFF
    return bytes(b)


CASES: dict[str, tuple[Callable[[list[bytes]], bytes], str]] = {
    "header-only": (lambda p: p[0], "connection closed"),
    "cut-after-ram": (lambda p: b"".join(p[:2]), "connection closed"),
    "cut-after-pass": (lambda p: b"".join(p[:3]), "connection closed"),
    "cut-after-cpu": (lambda p: b"".join(p[:4]), "connection closed"),
    "cut-mid-header": (lambda p: p[0][:10], "stream header"),
    "cut-mid-section-header": (lambda p: p[0] + p[1][:7], "connection closed"),
    "cut-mid-ram": (lambda p: p[0] + p[1][:5000], "section RAM: connection closed"),
    "flipped-page-byte": (lambda p: p[0] + flip(p[1], 200) + b"".join(p[2:]),
                          "crc32 mismatch"),
    "flipped-crc": (lambda p: p[0] + flip(p[1], 13) + b"".join(p[2:]), "crc32 mismatch"),
    "wrong-version": (lambda p: p[0][:8] + struct.pack(">I", 9) + p[0][12:],
                      "unsupported version 9"),
    "wrong-magic": (lambda p: b"X" + p[0][1:], "bad magic"),
    "index-out-of-range": (lambda p: p[0] + section(1, ram_payload([NPAGES], b"\1" * 4096)),
                           f"page index {NPAGES} out of range"),
    "absurd-length": (lambda p: p[0] + SECTION.pack(1, 1 << 62, 0),
                      "bad payload length 4611686018427387904"),
    "absurd-count": (lambda p: p[0] + section(1, struct.pack(">I", 1 << 31)),
                     "exceed the limit"),
    "no-cpu-state": (lambda p: b"".join(p[:3]) + p[4], "stream ended without CPU state"),
    "ram-after-cpu": (lambda p: b"".join(p[:4]) + p[1], "only END may follow"),
    "bad-cpu-blob": (lambda p: b"".join(p[:3]) + join(encode_state(b"junk" * 10)) + p[4],
                     ""),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_stream_is_refused(make_node: NodeFactory, tmp_path: object,
                                         case: str) -> None:
    src = make_node(MEM, running=False)      # only for a genuine state blob
    src.runstate.set(RunState.PAUSED)
    dst = make_node(MEM, incoming=True)
    before = dst.ram_hash()
    path = f"{tmp_path}/in.sock"
    dst.manager.incoming(f"unix:{path}")
    make, expect = CASES[case]
    tracemalloc.start()
    try:
        msgs = await feed(dst, path, make(good_parts(src.machine.save_state())))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert await wait_final(dst) == "failed"
    desc = str(dst.manager.query()["error-desc"])
    assert expect in desc, desc
    assert len(desc) < 300
    assert msgs == [(RpMessage.ERROR, desc.encode()), (RpMessage.SHUT, b"\0\0\0\1")]
    assert not dst.machine.running and dst.runstate.state is RunState.INMIGRATE
    assert dst.out == b""
    assert peak < 100 * MiB  # the one receive buffer (64 MiB) at most
    if case not in ("no-cpu-state", "ram-after-cpu", "bad-cpu-blob") \
            and not case.startswith("cut-after"):
        assert dst.ram_hash() == before  # the bad section never reached RAM


async def test_good_stream_loads_and_retry_after_failure(make_node: NodeFactory,
                                                         tmp_path: object) -> None:
    src = make_node(MEM, running=False)
    src.runstate.set(RunState.PAUSED)
    dst = make_node(MEM, incoming=True, autostart=False)
    path = f"{tmp_path}/in.sock"
    parts = good_parts(src.machine.save_state())
    dst.manager.incoming(f"unix:{path}")
    await feed(dst, path, parts[0] + b"garbage" * 10)
    assert await wait_final(dst) == "failed"
    dst.machine.pages[10:20] = 0x77  # stale content the zero pages must clear
    dst.manager.incoming(f"unix:{path}")  # a new attempt is allowed after a failure
    msgs = await feed(dst, path, b"".join(parts))
    assert msgs == [(RpMessage.SHUT, b"\0\0\0\0")]
    assert await wait_final(dst) == "completed"
    assert (dst.machine.pages[5:10] == 0x11).all() and not dst.machine.pages[10:20].any()
    assert dst.runstate.state is RunState.PAUSED
    assert HEADER.size == len(parts[0])
