"""``fd:`` migrations between real qmpd processes: the test makes a socketpair, hands
one end to each qmpd with ``getfd`` (SCM_RIGHTS over the QMP socket, qemu.qmp's
``send_fd_scm``), then ``migrate-incoming fd:NAME`` and ``migrate fd:NAME``. The
guest's output continues on the destination with no gap and no repeat. A pipe is a
one-way channel (as ``exec:``); ``-incoming fd:N`` takes an inherited descriptor.
(getfd/closefd texts on qmpd and QEMU 7.2: tests/qmp/test_migrate_uri_qemu.py.)
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from qmpd.testing.harness import QmpdProcess, destination_continues

from .test_e2e_qmp import Observer, statuses, wd  # noqa: F401 - wd is a fixture

GUEST = "counter,wss=16M,dirty=64,pace=20000"


async def _give_fd(proc: QmpdProcess, fd: int, name: str) -> None:
    proc.qmp.send_fd_scm(fd)
    await proc.cmd("getfd", fdname=name)


async def _migrate_over(wd: Path, make_pair: str) -> None:  # noqa: F811
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    dst = await QmpdProcess.start("dst", wd, guest=GUEST, extra=["-incoming", "defer"])
    readers = [Observer(src.serial_path), Observer(dst.serial_path)]
    if make_pair == "socket":
        a, b = socket.socketpair()
        out_fd, in_fd = a.detach(), b.detach()
    else:
        in_fd, out_fd = os.pipe()
    try:
        for r in readers:
            await r.start()
        for p in (src, dst):
            await p.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": "events", "state": True}])
        await _give_fd(src, out_fd, "mig")
        await _give_fd(dst, in_fd, "mig")
        os.close(out_fd)
        os.close(in_fd)
        await readers[0].wait_lines(200)
        await dst.cmd("migrate-incoming", uri="fd:mig")
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        await src.cmd("migrate", uri="fd:mig")
        await src.wait_event("MIGRATION", timeout=60, status="completed")
        await dst.wait_event("MIGRATION", timeout=60, status="completed")
        assert statuses(src) == ["setup", "active", "completed"]
        assert statuses(dst) == ["setup", "active", "completed"]
        assert (await src.cmd("query-status"))["status"] == "postmigrate"
        assert (await dst.cmd("query-status"))["status"] == "running"
        await destination_continues(readers, GUEST)
    finally:
        for r in readers:
            await r.close()
        for p in (src, dst):
            await p.close()


async def test_fd_migration_over_a_socketpair(wd: Path) -> None:  # noqa: F811
    await _migrate_over(wd, "socket")


async def test_fd_migration_over_a_pipe(wd: Path) -> None:  # noqa: F811
    await _migrate_over(wd, "pipe")


async def test_incoming_fd_number_from_the_command_line(wd: Path) -> None:  # noqa: F811
    """``-incoming fd:N``: a descriptor qmpd inherited."""
    a, b = socket.socketpair()
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    try:
        dst = await QmpdProcess.start("dst", wd, guest=GUEST, pass_fds=[b.fileno()],
                                      extra=["-incoming", f"fd:{b.fileno()}"])
    finally:
        b.close()
    try:
        await _give_fd(src, a.fileno(), "mig")
        a.close()
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        await src.cmd("migrate", uri="fd:mig")
        for _ in range(3000):  # no events on: poll (bounded)
            if (await dst.cmd("query-migrate")).get("status") == "completed":
                break
            await asyncio.sleep(0.02)
        assert (await dst.cmd("query-migrate"))["status"] == "completed"
        assert (await dst.cmd("query-status"))["status"] == "running"
        assert (await src.cmd("query-status"))["status"] == "postmigrate"
    finally:
        for p in (src, dst):
            await p.close()


def test_incoming_fd_name_on_the_command_line() -> None:
    """No monitor to name a descriptor there: QEMU's ``qemu_parse_fd`` text."""
    bad = subprocess.run([sys.executable, "-m", "qmpd", "-incoming", "fd:abc"],
                         capture_output=True, text=True, timeout=30)
    assert (bad.returncode, bad.stderr) == (
        1, "qmpd: -incoming fd:abc: Invalid file descriptor number 'abc'\n")


async def test_pipe_refuses_return_path(wd: Path) -> None:  # noqa: F811
    """A pipe is one-way like exec:; the descriptor was taken (and closed) all the same,
    as QEMU's monitor_get_fd takes it before the migration starts."""
    src = await QmpdProcess.start("src", wd, guest=GUEST)
    r, w = os.pipe()
    try:
        await _give_fd(src, w, "mig")
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "return-path", "state": True}])
        with pytest.raises(ExecuteError) as err:
            await src.cmd("migrate", uri="fd:mig")
        assert str(err.value) == ("Migration capability 'return-path' needs a return path, "
                                  "which an 'fd:' migration over a non-socket does not have")
        with pytest.raises(ExecuteError, match=r"^File descriptor named 'mig' not found$"):
            await src.cmd("closefd", fdname="mig")
        assert (await src.cmd("query-status"))["status"] == "running"
    finally:
        os.close(r)
        os.close(w)
        await src.close()
