"""End to end: two real qmpd processes, driven through qemu.qmp like libvirt would.

The guest's serial output is read from outside (the source's socket until switch-over,
then the destination's) and must be one stream with no gap, repeat or bad checksum.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from qmpd.testing.harness import (
    QmpdProcess,
    SerialReader,
    check_stream,
    free_tcp_port,
    joined_stream,
    workdir,
)

from .test_migrate import libvirt_parse

GUEST = "counter,wss=16M,dirty=64,pace=20000"


class Observer(SerialReader):
    """SerialReader that keeps its StreamWriter alive (dropping it closes the socket)."""

    async def start(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                    break
                except OSError:
                    await asyncio.sleep(0.02)
        self._task = asyncio.create_task(self._read(reader))


@pytest.fixture
def wd() -> Iterator[Path]:
    """A fresh directory; at the end, any qmpd we started there (found by its unique
    path in the command line) is killed by pid, even one whose start-up failed."""
    path = workdir("qmpd-mig-")
    yield path
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(path).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def statuses(proc: QmpdProcess) -> list[str]:
    return [e["data"]["status"] for e in proc.events if e["event"] == "MIGRATION"]


async def source_runs_on_destination_waits(src: QmpdProcess, dst: QmpdProcess,
                                           reader: Observer, guest: str) -> None:
    """After a migration broke off: the source's guest runs on, its stream intact; the
    destination's incoming migration failed and it waits in ``inmigrate``."""
    assert (await src.cmd("query-status"))["status"] == "running"
    async with asyncio.timeout(10):  # dst has no events on: poll
        while (await dst.cmd("query-migrate"))["status"] != "failed":
            await asyncio.sleep(0.02)
    assert (await dst.cmd("query-status"))["status"] == "inmigrate"
    n = len(reader.lines())
    await reader.wait_lines(n + 200)
    assert check_stream(bytes(reader.data), guest).ok


async def test_migrate_between_two_qmpd_processes(wd: Path) -> None:
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    dst = await QmpdProcess.start("dst", wd, guest=GUEST, extra=["-incoming", "defer"])
    readers = [Observer(src.serial_path), Observer(dst.serial_path)]
    try:
        for r in readers:
            await r.start()
        assert await src.cmd("query-migrate") == {}
        caps = await src.cmd("query-migrate-capabilities")
        assert [c["capability"] for c in caps][:6] == [
            "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events"]
        for p in (src, dst):
            await p.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": "events", "state": True}])
        assert (await dst.cmd("query-status"))["status"] == "inmigrate"
        uri = f"unix:{wd}/mig.sock"
        await dst.cmd("migrate-incoming", uri=uri)
        # listening only: no status, as QEMU 7.2 (its MIGRATION event says "setup")
        assert await dst.cmd("query-migrate") == {
            "socket-address": [{"type": "unix", "path": f"{wd}/mig.sock"}]}
        await readers[0].wait_lines(200)
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
        await src.cmd("migrate", uri=uri, detach=True)
        await src.wait_event("MIGRATION", status="active")
        info = await src.cmd("query-migrate")
        libvirt_parse(info)
        with pytest.raises(ExecuteError, match="There's a migration process in progress"):
            await src.cmd("migrate-set-capabilities",
                          capabilities=[{"capability": "events", "state": False}])
        hmp = await src.cmd("human-monitor-command", **{"command-line": "info migrate"})
        assert "Migration status: active" in hmp and "transferred ram:" in hmp
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        await src.wait_event("MIGRATION", timeout=30, status="completed")
        await dst.wait_event("MIGRATION", timeout=30, status="completed")
        assert statuses(src) == ["setup", "active", "completed"]
        assert statuses(dst) == ["setup", "active", "completed"]
        assert any(e["event"] == "MIGRATION_PASS" for e in src.events)
        info = await src.cmd("query-migrate")
        libvirt_parse(info)
        assert info["status"] == "completed" and "downtime" in info
        assert (await src.cmd("query-status"))["status"] == "postmigrate"
        assert (await dst.cmd("query-status"))["status"] == "running"
        # the postmigrate gate (the full table: tests/qmp/test_gating.py)
        with pytest.raises(ExecuteError, match=r"^Can't migrate the vm that was paused due "
                                               r"to previous migration$"):
            await src.cmd("migrate", uri=uri)
        with pytest.raises(ExecuteError, match=r"^'-incoming' was not specified on the "):
            await dst.cmd("migrate-incoming", uri=uri)
        n = len(readers[1].lines())
        await readers[1].wait_lines(n + 200)
        report = check_stream(joined_stream(*readers), GUEST)
        assert report.ok, str(report)
        assert report.records > 400
        text = await dst.cmd("human-monitor-command",
                             **{"command-line": "info migrate_capabilities"})
        assert "events: on\r\n" in text and text.startswith("xbzrle: off")
        params = await dst.cmd("query-migrate-parameters")
        assert params["x-checkpoint-delay"] == 200 and params["downtime-limit"] == 300
        text = await dst.cmd("human-monitor-command",
                             **{"command-line": "info migrate_parameters"})
        assert text.startswith("announce-initial: 50 ms\r\n")
        assert "downtime-limit: 300 ms\r\n" in text and "tls-creds: ''\r\n" in text
        assert "x-checkpoint-delay: 200 ms\r\n" in text
        text = await dst.cmd("human-monitor-command", **{"command-line": "info migrate"})
        assert "Migration status: completed\r\n" in text
    finally:
        for r in readers:
            await r.close()
        for p in (src, dst):
            await p.close()


async def test_destination_killed_source_keeps_running(wd: Path) -> None:
    src = await QmpdProcess.start("src", wd, guest="counter,wss=32M,dirty=64,pace=20000")
    dst = await QmpdProcess.start("dst", wd, guest="counter,wss=32M,dirty=64,pace=20000",
                                  extra=["-incoming", f"unix:{wd}/mig.sock"])
    reader = Observer(src.serial_path)
    try:
        await reader.start()
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
        await reader.wait_lines(100)
        await asyncio.sleep(0.3)
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
        await src.cmd("migrate", uri=f"unix:{wd}/mig.sock")
        await src.wait_event("MIGRATION", status="active")
        await asyncio.sleep(0.3)
        dst.kill()
        await src.wait_event("MIGRATION", timeout=20, status="failed")
        info = await src.cmd("query-migrate")
        libvirt_parse(info)
        assert info["error-desc"]
        assert (await src.cmd("query-status"))["status"] == "running"
        n = len(reader.lines())
        await reader.wait_lines(n + 200)
        report = check_stream(bytes(reader.data), "counter,wss=32M,dirty=64,pace=20000")
        assert report.ok, str(report)
    finally:
        await reader.close()
        for p in (src, dst):
            await p.close()


async def test_migrate_cancel_through_qmp(wd: Path) -> None:
    guest = "counter,wss=32M,dirty=64,pace=20000"
    src = await QmpdProcess.start("src", wd, guest=guest)
    dst = await QmpdProcess.start("dst", wd, guest=guest,
                                  extra=["-incoming", f"tcp:127.0.0.1:{free_tcp_port()}"])
    reader = Observer(src.serial_path)
    try:
        await reader.start()
        info = await dst.cmd("query-migrate")
        assert "status" not in info
        (addr,) = info["socket-address"]
        assert addr["type"] == "inet" and addr["host"] == "127.0.0.1" and addr["ipv4"]
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
        await asyncio.sleep(0.3)
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
        await src.cmd("migrate", uri=f"tcp:127.0.0.1:{addr['port']}")
        await src.wait_event("MIGRATION", status="active")
        await src.cmd("migrate_cancel")
        await src.wait_event("MIGRATION", status="cancelled")
        assert statuses(src) == ["setup", "active", "cancelling", "cancelled"]
        assert (await src.cmd("query-migrate")) == {"status": "cancelled"}
        await source_runs_on_destination_waits(src, dst, reader, guest)
    finally:
        await reader.close()
        for p in (src, dst):
            await p.close()


async def test_yank_fails_a_plain_migration_as_qemu_does(wd: Path) -> None:
    """``yank`` of the ``migration`` instance cuts a running plain migration: the source
    goes to ``failed`` and runs on, the destination fails and keeps waiting. Without a
    migration connection there is no such instance (DeviceNotFound, nothing yanked)."""
    guest = "counter,wss=32M,dirty=64,pace=20000"
    src = await QmpdProcess.start("src", wd, guest=guest)
    dst = await QmpdProcess.start("dst", wd, guest=guest,
                                  extra=["-incoming", f"unix:{wd}/mig.sock"])
    reader = Observer(src.serial_path)
    migration = {"instances": [{"type": "migration"}]}
    try:
        await reader.start()
        for node in (src, dst):  # dst listens, but no connection yet
            with pytest.raises(ExecuteError, match=r"^Instance not found$") as err:
                await node.qmp.execute("yank", migration, oob=True)
            assert err.value.error_class == "DeviceNotFound"
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
        await src.cmd("migrate", uri=f"unix:{wd}/mig.sock")
        await src.wait_event("MIGRATION", status="active")
        with pytest.raises(ExecuteError, match=r"^Instance not found$"):  # checked first
            await src.qmp.execute("yank", {"instances": [
                {"type": "migration"}, {"type": "chardev", "id": "serial0"}]}, oob=True)
        assert (await src.cmd("query-migrate"))["status"] == "active"
        await src.qmp.execute("yank", migration, oob=True)
        await src.wait_event("MIGRATION", status="failed")
        assert statuses(src) == ["setup", "active", "failed"]
        info = await src.cmd("query-migrate")
        assert info["status"] == "failed" and info["error-desc"]
        await source_runs_on_destination_waits(src, dst, reader, guest)
        for node in (src, dst):  # the connection is gone, and so is the instance
            with pytest.raises(ExecuteError, match=r"^Instance not found$"):
                await node.qmp.execute("yank", migration, oob=True)
    finally:
        await reader.close()
        for p in (src, dst):
            await p.close()
