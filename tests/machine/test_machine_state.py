"""save_state / load_state: round trips into fresh machines, a spinning guest, bad blobs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qmpd.machine import Machine, MachineStateError
from qmpd.machine.guest_check import verify_stream
from qmpd.machine.state import BLOB_SIZE

from .conftest import MachineFactory, MiB, read_records

W = 1024


def snapshot(m: Machine) -> tuple[bytes, str]:
    return m.save_state(), hashlib.sha256(m.pages.data).hexdigest()


def test_round_trip_into_a_fresh_machine(make_machine: MachineFactory) -> None:
    src = make_machine(pace=20000, check_every=10)
    before = read_records(src, 300)
    blob, _ = snapshot(src)
    assert len(blob) == BLOB_SIZE
    ram = src.pages.copy()
    original = read_records(src, 300)  # what the source emits after the snapshot
    dst = make_machine(pace=20000, check_every=10)
    dst.pages[:] = ram
    dst.load_state(blob)
    restored = read_records(dst, len(original))
    n = min(len(original), len(restored))
    assert restored[:n] == original[:n]
    report = verify_stream(before + restored, d=16, w=W, start=0)
    assert report.ok, report


def test_round_trip_into_another_process(make_machine: MachineFactory, accel: str,
                                         tmp_path: Path) -> None:
    src = make_machine(pace=20000)
    before = read_records(src, 200)
    blob, _ = snapshot(src)
    (tmp_path / "state").write_bytes(blob)
    src.pages.tofile(tmp_path / "ram")
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from qmpd.machine import Machine, MachineConfig, GuestConfig
        m = Machine(MachineConfig(mem_bytes={32 * MiB}, accel={accel!r},
                                  guest=GuestConfig(wss_bytes={4 * MiB}, pace=20000)))
        m.pages[:] = np.fromfile({str(tmp_path / 'ram')!r}, np.uint8).reshape(-1, 4096)
        m.load_state(open({str(tmp_path / 'state')!r}, 'rb').read())
        m.resume()
        out = b''
        while out.count(b'\\n') < 200:
            time.sleep(0.005)
            out += m.output.drain()
        m.pause()
        sys.stdout.buffer.write(out + m.output.drain())
        m.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          check=False, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    restored = proc.stdout.splitlines()
    assert len(restored) >= 200
    report = verify_stream(before + restored, d=16, w=W, start=0)
    assert report.ok, report


def test_pause_and_save_a_guest_that_never_exits(make_machine: MachineFactory) -> None:
    """pace=10^15: after record 0 the guest spins for days without a VM exit."""
    src = make_machine(pace=10**15, batch=1)
    src.resume()
    deadline = time.monotonic() + 10
    out = b""
    while not out and time.monotonic() < deadline:
        time.sleep(0.005)
        out += src.output.drain()
    time.sleep(0.05)
    t0 = time.monotonic()
    src.pause()
    assert time.monotonic() - t0 < 2
    assert out.startswith(b"seq=0 ")
    blob, ram_hash = snapshot(src)
    dst = make_machine(pace=10**15, batch=1)
    dst.pages[:] = src.pages
    dst.load_state(blob)
    dst.resume()
    time.sleep(0.05)
    dst.pause()
    assert dst.output.drain() == b""  # still spinning inside step 0
    assert snapshot(src) == (blob, ram_hash)


def _corruptions(blob: bytes) -> dict[str, bytes]:
    flipped = bytearray(blob)
    flipped[200] ^= 1
    version = bytearray(blob)
    version[8] = 99
    return {"empty": b"", "truncated": blob[:-1], "header only": blob[:24],
            "extended": blob + b"\0", "garbage": os.urandom(len(blob)),
            "bit flip": bytes(flipped), "version": bytes(version),
            "huge": b"\0" * (1 << 20)}


def test_load_state_rejects_bad_blobs_and_changes_nothing(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    read_records(m, 50)
    good = m.save_state()
    state_before = snapshot(m)
    for name, bad in _corruptions(good).items():
        with pytest.raises(MachineStateError) as info:
            m.load_state(bad)
        assert "\n" not in str(info.value), name
        assert snapshot(m) == state_before, name
    m.load_state(good)  # the good one still loads


def test_load_state_rejects_another_machine_shape(make_machine: MachineFactory) -> None:
    a = make_machine()
    blob = a.save_state()
    with pytest.raises(MachineStateError, match="RAM"):
        make_machine(mem=64 * MiB).load_state(blob)
    with pytest.raises(MachineStateError, match="guest configuration"):
        make_machine(dirty_pages=5).load_state(blob)


def test_state_calls_refused_while_running(make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    blob = m.save_state()
    m.resume()
    with pytest.raises(MachineStateError, match="paus"):
        m.save_state()
    with pytest.raises(MachineStateError, match="paus"):
        m.load_state(blob)
    m.pause()


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
@pytest.mark.parametrize(("src_accel", "dst_accel"), [("kvm", "tcg"), ("tcg", "kvm")])
def test_state_moves_between_accelerators(src_accel: str, dst_accel: str) -> None:
    from qmpd.machine import GuestConfig, MachineConfig

    def build(accel: str) -> Machine:
        return Machine(MachineConfig(mem_bytes=32 * MiB, accel=accel,
                                     guest=GuestConfig(wss_bytes=4 * MiB, pace=5000)))

    with build(src_accel) as src, build(dst_accel) as dst:
        before = read_records(src, 200)
        dst.pages[:] = src.pages
        dst.load_state(src.save_state())
        original = read_records(src, 100)
        restored = read_records(dst, 100)
        n = min(len(original), len(restored))
        assert n >= 100 and restored[:n] == original[:n]
        assert verify_stream(before + restored, d=16, w=W, start=0).ok
