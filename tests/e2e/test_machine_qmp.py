"""The machine over QMP: run states, events and the guest's output, as QEMU reports them.

A real qmpd with a real guest (KVM, and tcg), a qemu.qmp client and an outside reader on
the serial socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpd.testing.harness import QmpdProcess, SerialReader, check_stream

from .conftest import ACCELS

GUEST = "counter,wss=1M,dirty=4,pace=20000"


@pytest.fixture(params=ACCELS)
async def node(wd: Path, request: pytest.FixtureRequest) -> AsyncIterator[
        tuple[QmpdProcess, SerialReader]]:
    p = await QmpdProcess.start("vm", wd, mem="32M", guest=GUEST,
                                extra=["-accel", request.param])
    reader = SerialReader(p.serial_path)
    await reader.start()
    try:
        yield p, reader
    finally:
        await reader.close()
        await p.close()


async def test_stop_freezes_output_and_cont_continues_at_the_next_record(
        node: tuple[QmpdProcess, SerialReader]) -> None:
    p, out = node
    await out.wait_lines(20)
    await p.cmd("stop")
    await p.wait_event("STOP")
    assert await p.cmd("query-status") == {"running": False, "singlestep": False,
                                           "status": "paused"}
    await asyncio.sleep(0.1)
    frozen = len(out.data)
    await asyncio.sleep(0.5)
    assert len(out.data) == frozen, "a stopped guest must emit nothing"
    await p.cmd("cont")
    await p.wait_event("RESUME")
    assert (await p.cmd("query-status"))["status"] == "running"
    await out.wait_lines(len(out.lines()) + 20)
    report = check_stream(bytes(out.data), GUEST)
    assert report.ok, report


async def test_system_reset_restarts_the_guest_and_emits_reset(
        node: tuple[QmpdProcess, SerialReader]) -> None:
    p, out = node
    await out.wait_lines(20)
    await p.cmd("system_reset")
    ev = await p.wait_event("RESET")
    assert ev["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    await asyncio.sleep(0.3)
    after = bytes(out.data).split(b"seq=0 ")
    assert len(after) >= 2, "the guest starts again from seq 0 after a reset"
    report = check_stream(b"seq=0 " + after[-1], GUEST)
    assert report.ok and report.first_seq == 0, report


async def test_machine_queries(node: tuple[QmpdProcess, SerialReader]) -> None:
    p, _ = node
    cpus = await p.cmd("query-cpus-fast")
    assert len(cpus) == 1 and cpus[0]["cpu-index"] == 0 and cpus[0]["target"] == "x86_64"
    assert isinstance(cpus[0]["thread-id"], int)
    assert await p.cmd("query-memory-size-summary") == {"base-memory": 32 << 20,
                                                        "plugged-memory": 0}
    kvm = await p.cmd("query-kvm")
    assert kvm["enabled"] is ("-accel kvm" in " ".join(p.args))
    hmp = await p.cmd("human-monitor-command", **{"command-line": "info cpus"})
    assert hmp == f"* CPU #0: thread_id={cpus[0]['thread-id']}\r\n"
    status = await p.cmd("human-monitor-command", **{"command-line": "info status"})
    assert status == "VM status: running\r\n"
    info_kvm = await p.cmd("human-monitor-command", **{"command-line": "info kvm"})
    assert info_kvm == ("kvm support: enabled\r\n" if kvm["enabled"]
                        else "kvm support: disabled\r\n")


async def test_started_paused_with_S_runs_on_cont(wd: Path) -> None:
    p = await QmpdProcess.start("vm", wd, mem="32M", guest=GUEST,
                                extra=["-S", "-accel", ACCELS[0]])
    out = SerialReader(p.serial_path)
    await out.start()
    try:
        assert (await p.cmd("query-status"))["status"] == "prelaunch"
        await asyncio.sleep(0.3)
        assert out.data == b""
        await p.cmd("cont")
        await p.wait_event("RESUME")
        await out.wait_lines(10)
        report = check_stream(bytes(out.data), GUEST)
        assert report.ok and report.first_seq == 0, report
    finally:
        await out.close()
        await p.close()


async def test_cont_during_incoming_only_sets_autostart(wd: Path) -> None:
    p = await QmpdProcess.start("vm", wd, mem="32M", guest=GUEST,
                                extra=["-incoming", "defer", "-accel", ACCELS[0]])
    try:
        assert (await p.cmd("query-status"))["status"] == "inmigrate"
        await p.cmd("stop")
        await p.cmd("cont")
        assert (await p.cmd("query-status"))["status"] == "inmigrate"
        assert not [e for e in p.events if e["event"] in ("STOP", "RESUME")]
    finally:
        await p.close()


@pytest.mark.parametrize("device", ["/dev/kvm", "/nonexistent/kvm"])
async def test_query_kvm_is_the_machine_layers_answer(wd: Path, device: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """query-kvm over QMP equals Machine.query_kvm() for the same accelerator and KVM
    device ($QMPD_KVM_DEVICE, MachineConfig.kvm_device): no second implementation, no
    hard-coded /dev/kvm."""
    from qmpd.machine import Machine, MachineConfig

    monkeypatch.setenv("QMPD_KVM_DEVICE", device)
    for accel in ACCELS if device == "/dev/kvm" else ["tcg"]:
        p = await QmpdProcess.start("vm", wd, mem="32M", guest=GUEST,
                                    extra=["-S", "-accel", accel])
        try:
            over_qmp = await p.cmd("query-kvm")
        finally:
            await p.close()
        with Machine(MachineConfig(mem_bytes=32 << 20, accel=accel,
                                   kvm_device=device)) as machine:
            assert over_qmp == machine.query_kvm()
        if device != "/dev/kvm":
            assert over_qmp == {"enabled": False, "present": False}
