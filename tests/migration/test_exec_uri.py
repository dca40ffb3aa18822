"""``exec:`` migrations between real qmpd processes: save a running guest into a file
with ``migrate exec:cat > FILE``, restore it with ``migrate-incoming`` / ``-incoming
"exec:cat FILE"``; the restored guest's serial output continues the saved one's with
no gap and no repeat. (The texts and events of bad URIs, on qmpd and QEMU 7.2:
tests/qmp/test_migrate_uri_qemu.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from qmpd.machine.guest_check import verify_stream
from qmpd.testing.harness import QmpdProcess, check_stream, joined_stream

from .test_e2e_qmp import Observer, statuses, wd  # noqa: F401 - wd is a fixture

GUEST = "counter,wss=16M,dirty=64,pace=20000"


async def _save(src: QmpdProcess, file: Path) -> None:
    await src.cmd("migrate-set-capabilities",
                  capabilities=[{"capability": "events", "state": True}])
    await src.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
    await src.cmd("migrate", uri=f"exec:cat > {file}")
    await src.wait_event("MIGRATION", timeout=60, status="completed")
    assert statuses(src) == ["setup", "active", "completed"]
    assert (await src.cmd("query-status"))["status"] == "postmigrate"
    info = await src.cmd("query-migrate")
    assert info["status"] == "completed" and info["ram"]["remaining"] == 0


async def test_save_and_restore_through_a_file(wd: Path) -> None:  # noqa: F811
    file = wd / "vm.state"
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    readers = [Observer(src.serial_path)]
    dst: QmpdProcess | None = None
    try:
        await readers[0].start()
        await readers[0].wait_lines(300)
        await _save(src, file)
        assert file.stat().st_size > 16 << 20 >> 4  # the working set's pages at least
        saved = verify_stream(readers[0].lines(), d=64, w=4096)
        assert saved.ok, str(saved)
        dst = await QmpdProcess.start("dst", wd, guest=GUEST, extra=["-incoming", "defer"])
        readers.append(Observer(dst.serial_path))
        await readers[1].start()
        await dst.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
        await dst.cmd("migrate-incoming", uri=f"exec:cat {file}")
        await dst.wait_event("MIGRATION", timeout=60, status="completed")
        assert statuses(dst) == ["setup", "active", "completed"]
        assert (await dst.cmd("query-status"))["status"] == "running"
        await readers[1].wait_lines(300)
        report = check_stream(joined_stream(*readers), GUEST)
        assert report.ok, str(report)
        assert report.first_seq == saved.first_seq
        assert report.records > saved.records + 200
    finally:
        for r in readers:
            await r.close()
        for p in (src, dst):
            if p is not None:
                await p.close()


async def test_restore_from_the_command_line(wd: Path) -> None:  # noqa: F811
    """``-incoming "exec:cat FILE"`` loads at start-up; the guest goes on from where it
    was saved (its records continue the saved sequence numbers)."""
    file = wd / "vm.state"
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    reader = Observer(src.serial_path)
    dst: QmpdProcess | None = None
    try:
        await reader.start()
        await reader.wait_lines(200)
        await _save(src, file)
        last = verify_stream(reader.lines(), d=64, w=4096).last_seq
        dst = await QmpdProcess.start("dst", wd, guest=GUEST,
                                      extra=["-incoming", f"exec:cat {file}"])
        after = Observer(dst.serial_path)
        await after.start()
        try:
            await after.wait_lines(100, timeout=60)
            assert (await dst.cmd("query-migrate"))["status"] == "completed"
            assert (await dst.cmd("query-status"))["status"] == "running"
            report = verify_stream(after.lines()[1:], d=64, w=4096)  # first may be cut
            assert report.ok, str(report)
            assert report.first_seq is not None and last is not None
            assert report.first_seq > last
        finally:
            await after.close()
    finally:
        await reader.close()
        for p in (src, dst):
            if p is not None:
                await p.close()


@pytest.mark.parametrize("capability", ["return-path", "x-colo"])
async def test_one_way_channel_refuses_return_path_capabilities(
        wd: Path, capability: str) -> None:  # noqa: F811
    """QEMU 7.2 accepts these over exec: and then waits forever for the command to
    answer (checked on 7.2: stuck in ``active``/``colo``); qmpd refuses at once."""
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    try:
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": capability, "state": True}])
        with pytest.raises(ExecuteError) as err:
            await src.cmd("migrate", uri=f"exec:cat > {wd}/x")
        assert str(err.value) == (f"Migration capability '{capability}' needs a return "
                                  f"path, which an 'exec:' migration does not have")
        assert (await src.cmd("query-status"))["status"] == "running"
        assert not (wd / "x").exists()
    finally:
        await src.close()


async def test_restore_from_a_command_that_fails(wd: Path) -> None:  # noqa: F811
    """Nothing arrives: the incoming migration fails, the guest stays in inmigrate."""
    dst = await QmpdProcess.start("dst", wd, guest=GUEST, extra=["-incoming", "defer"])
    try:
        await dst.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
        await dst.cmd("migrate-incoming", uri="exec:exit 1")
        await dst.wait_event("MIGRATION", timeout=20, status="failed")
        assert statuses(dst) == ["setup", "active", "failed"]
        info = await dst.cmd("query-migrate")
        assert info == {"status": "failed", "error-desc":
                        "stream header: connection closed by command after 0 of 28 bytes"}
        assert (await dst.cmd("query-status"))["status"] == "inmigrate"
    finally:
        await dst.close()
