"""A COLO pair driven end to end with HMP only, through ``qmp-shell -H`` on a pty.

As QEMU's own HMP-based COLO how-to (docs/COLO-FT.txt; the facts document §5): on the
secondary ``migrate_set_capability x-colo on`` and ``migrate_incoming``; on the primary
``migrate_set_capability x-colo on``, ``migrate_set_parameter x-checkpoint-delay`` and
``migrate -d tcp:...``; ``info migrate`` shows ``colo`` on both; the primary is killed;
``x_colo_lost_heartbeat`` on the secondary takes over and its guest runs. Every step is
an HMP line typed into qmp-shell, and every output is checked as text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from qmpd.testing.harness import free_tcp_port

QMP_SHELL = str(Path(sys.executable).parent / "qmp-shell")
GUEST = "counter,wss=8M,dirty=64,pace=20000"
GLOBALS = ("globals:\nstore-global-state: on\nonly-migratable: off\n"
           "send-configuration: on\nsend-section-footer: on\n"
           "decompress-error-check: on\nclear-bitmap-shift: 18\n")


class HmpShell:
    """qmp-shell -H on a pty: type a line, get what it printed (``\\n`` line ends)."""

    def __init__(self, home: Path, path: Path) -> None:
        env = dict(os.environ, HOME=str(home), TERM="dumb", INPUTRC="/dev/null")
        self.child = pexpect.spawn(QMP_SHELL, ["-H", str(path)], env=env,
                                   encoding="utf-8", timeout=20, dimensions=(50, 200))
        self.child.expect_exact("Welcome to the HMP shell!\r\n")
        self.child.expect_exact("(QEMU) ")

    def run(self, line: str) -> str:
        self.child.sendline(line)
        self.child.expect_exact("(QEMU) ")
        echoed, _, out = str(self.child.before).partition("\r\n")
        assert echoed == line
        return out.replace("\r\r\n", "\n").rstrip(" ")

    def wait_for(self, line: str, text: str, timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (out := self.run(line)):
            assert time.monotonic() < deadline, out
            time.sleep(0.1)
        return out

    def close(self) -> None:
        self.child.terminate(force=True)


def _qmpd(wd: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = wd / f"{name}.qmp"
    log = open(wd / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpd", "-name", name, "-m", "64M", "-guest", GUEST,
         "-qmp", f"unix:{path},server=on,wait=off", *extra],
        stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 20
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (wd / f"{name}.log").read_text()
        time.sleep(0.02)
    return proc, path


def test_colo_pair_with_hmp_only(tmp_path: Path) -> None:
    port = free_tcp_port()
    sec_proc, sec_path = _qmpd(tmp_path, "secondary", "-incoming", "defer")
    pri_proc, pri_path = _qmpd(tmp_path, "primary")
    shells: list[HmpShell] = []
    try:
        sec = HmpShell(tmp_path, sec_path)
        shells.append(sec)
        pri = HmpShell(tmp_path, pri_path)
        shells.append(pri)
        # the secondary first: capability before it listens (docs/COLO-FT.txt)
        assert sec.run("migrate_set_capability x-colo on") == ""
        assert "x-colo: on\n" in sec.run("info migrate_capabilities")
        assert sec.run(f"migrate_incoming tcp:127.0.0.1:{port}") == ""
        assert sec.run("info status") == "VM status: paused (inmigrate)\n"
        # the primary
        assert pri.run("migrate_set_capability x-colo on") == ""
        assert pri.run("migrate_set_parameter x-checkpoint-delay 200") == ""
        # (the test guest may dirty faster than the default 128 MiB/s: lift the cap)
        assert pri.run("migrate_set_parameter max-bandwidth 100G") == ""
        params = pri.run("info migrate_parameters")
        assert "x-checkpoint-delay: 200 ms\n" in params
        assert "max-bandwidth: 107374182400 bytes/second\n" in params
        assert pri.run(f"migrate -d tcp:127.0.0.1:{port}") == ""
        out = pri.wait_for("info migrate", "Migration status: colo\n")
        assert out == GLOBALS + "Migration status: colo\ntotal time: 0 ms\n"  # as QEMU 7.2
        sec.wait_for("info migrate", "Migration status: colo\n")
        assert pri.run("info status") == "VM status: running\n"
        assert "COLO mode: primary\n" in pri.run("info colo")
        assert "COLO mode: secondary\n" in sec.run("info colo")
        # refusals while in COLO, as HMP errors
        assert sec.run(f"migrate_incoming tcp:127.0.0.1:{port}") == \
            "Error: The incoming migration has already been started\n"
        time.sleep(1.0)  # a few checkpoints
        # the primary dies; the secondary takes over on the user's word
        pri_proc.send_signal(signal.SIGKILL)
        pri_proc.wait(10)
        # (HMP shows no event: the secondary is still in COLO mode until told)
        assert "COLO mode: secondary\n" in sec.run("info colo")
        assert sec.run("x_colo_lost_heartbeat") == ""
        assert sec.wait_for("info status", "running") == "VM status: running\n"
        assert "Migration status: completed\n" in sec.run("info migrate")
        assert sec.run("info colo").startswith(
            "COLO mode: none\nlast mode: secondary\nreason: request\n")
        assert sec.run("x_colo_lost_heartbeat") == \
            "Error: The feature 'colo' is not enabled\n"
        # the survivor is an ordinary running node now
        assert sec.run("stop") == ""
        assert sec.run("info status") == "VM status: paused\n"
        assert sec.run("c") == ""
        assert sec.run("info status") == "VM status: running\n"
        sec.child.sendline("quit")
        assert sec_proc.wait(20) == 0
    finally:
        for s in shells:
            s.close()
        for p in (pri_proc, sec_proc):
            if p.poll() is None:
                p.kill()
                p.wait(10)
