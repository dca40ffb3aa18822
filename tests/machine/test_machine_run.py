"""Boot, output order and checksums, pause/resume, reset, info — on every accelerator."""

from __future__ import annotations

import hashlib
import time

from qmpd.machine import Machine
from qmpd.machine.guest_check import verify_stream

from .conftest import MachineFactory, read_records

W = 1024  # 4 MiB working set


def ram_hash(m: Machine) -> str:
    return hashlib.sha256(m.pages.data).hexdigest()


def test_boots_paused_and_emits_nothing(make_machine: MachineFactory) -> None:
    m = make_machine()
    assert not m.running
    time.sleep(0.05)
    assert m.output.drain() == b""


def test_output_advances_in_order_with_valid_sums(make_machine: MachineFactory) -> None:
    m = make_machine(dirty_pages=7, check_every=5)
    lines = read_records(m, 3000)
    report = verify_stream(lines, d=7, w=W, start=0)
    assert report.ok, report
    assert report.records >= 3000


def test_pause_freezes_output_and_memory_then_resume_continues(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=2000)
    first = read_records(m, 200)
    h = ram_hash(m)
    for _ in range(5):
        time.sleep(0.02)
        assert m.output.drain() == b""
        assert ram_hash(m) == h
    second = read_records(m, 200)
    report = verify_stream(first + second, d=16, w=W, start=0)
    assert report.ok, report
    assert second[0].startswith(b"seq=%d " % len(first))


def test_reset_restarts_from_seq_zero(make_machine: MachineFactory) -> None:
    m = make_machine(pace=1000)
    read_records(m, 100)
    m.reset()
    assert not m.running
    lines = read_records(m, 50)
    assert verify_stream(lines, d=16, w=W, start=0).ok


def test_reset_while_running_keeps_running(make_machine: MachineFactory) -> None:
    m = make_machine(pace=1000)
    m.resume()
    time.sleep(0.02)
    m.reset()
    assert m.running
    m.output.drain()  # output from before the reset
    m.pause()
    m.output.drain()
    m.reset()
    assert verify_stream(read_records(m, 20), d=16, w=W, start=0).ok


def test_notify_called_when_output_appears(make_machine: MachineFactory) -> None:
    m = make_machine(pace=100000)
    calls: list[int] = []
    m.output.set_notify(lambda: calls.append(1))
    read_records(m, 5)
    assert calls


def test_vcpu_info_and_accel(make_machine: MachineFactory, accel: str) -> None:
    m = make_machine()
    assert m.accel == accel
    (info,) = m.vcpu_info()
    assert info["cpu-index"] == 0 and isinstance(info["thread-id"], int)
    assert info["thread-id"] > 0
    with open(f"/proc/self/task/{info['thread-id']}/comm") as f:
        assert f.read().strip() == f"CPU 0/{accel.upper()}"
    assert m.pages.shape == (m.npages, 4096) and m.npages * 4096 == m.mem_bytes


def test_close_is_idempotent(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.resume()
    m.close()
    m.close()


def test_backpressure_blocks_the_guest_and_loses_nothing(make_machine: MachineFactory) -> None:
    """Nobody drains: the guest blocks on its full ring; pause still hands over all."""
    m = make_machine(check_every=3)
    m.output.soft_cap = 1000
    m.resume()
    time.sleep(0.2)
    assert m.running
    first = m.output.drain()  # up to the cap, then the guest waited
    m.output.soft_cap = 1 << 24
    lines = first.splitlines() + read_records(m, 20000)
    report = verify_stream(lines, d=16, w=W, start=0)
    assert report.ok, report
    assert report.records >= 20000


def test_close_returns_guest_ram_at_once(accel: str) -> None:
    """No reference cycle keeps RAM mapped after close() until the next GC."""
    import gc

    from qmpd.machine import GuestConfig, MachineConfig

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / (1 << 20)

    gc.disable()
    try:
        rss0 = rss_mib()
        m = Machine(MachineConfig(mem_bytes=72 << 20, accel=accel,
                                  guest=GuestConfig(wss_bytes=64 << 20, dirty_pages=16384)))
        read_records(m, 2)
        grown = rss_mib() - rss0
        assert grown > 50
        m.close()
        del m
        assert rss_mib() - rss0 < grown / 4
    finally:
        gc.enable()


def test_hugepage_backed_ram(accel: str) -> None:
    from qmpd.machine import GuestConfig, MachineConfig

    config = MachineConfig(mem_bytes=32 << 20, accel=accel, hugepages=True,
                           guest=GuestConfig(wss_bytes=4 << 20))
    with Machine(config) as m:
        assert verify_stream(read_records(m, 100), d=16, w=W, start=0).ok
        m.reset()
        assert verify_stream(read_records(m, 100), d=16, w=W, start=0).ok
