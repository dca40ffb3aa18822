"""qmp-shell and qmp-shell -H through a pty (pexpect): banner, completion, a command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from qmp_helpers import Qmpd

QMP_SHELL = str(Path(sys.executable).parent / "qmp-shell")


def _spawn(tmp_path: Path, *args: str) -> pexpect.spawn:
    env = dict(os.environ, HOME=str(tmp_path), TERM="dumb", INPUTRC="/dev/null")
    child = pexpect.spawn(QMP_SHELL, list(args), env=env, encoding="utf-8", timeout=10,
                          dimensions=(50, 200))
    return child


@pytest.fixture
def shell(daemon: Qmpd, tmp_path: Path) -> Iterator[pexpect.spawn]:
    child = _spawn(tmp_path, daemon.path)
    yield child
    child.terminate(force=True)


def test_qmp_shell_banner_completion_and_command(shell: pexpect.spawn) -> None:
    shell.expect_exact("Welcome to the QMP low-level shell!\r\n")
    shell.expect_exact("Connected to QEMU 7.2.0\r\n")
    shell.expect_exact("(QEMU) ")
    shell.send("query-\t\t")
    shell.expect_exact("(QEMU) query-")
    listing = shell.before
    for name in ("query-commands", "query-kvm", "query-name", "query-qmp-schema",
                 "query-status", "query-target", "query-version"):
        assert name in listing
    shell.send("st\t")
    shell.expect_exact("status")  # completed to query-status
    shell.sendline("")
    shell.expect_exact('{"return": {"status": "running", "singlestep": false, '
                       '"running": true}}')
    shell.sendline("query-name")
    shell.expect_exact('{"return": {"name": "testvm"}}')
    shell.sendline("query-status bogus=1")
    shell.expect_exact('{"error": {"class": "GenericError", '
                       '"desc": "Parameter \'bogus\' is unexpected"}}')


def test_qmp_shell_over_tcp(daemon: Qmpd, tmp_path: Path) -> None:
    child = _spawn(tmp_path, f"127.0.0.1:{daemon.port}")
    try:
        child.expect_exact("Connected to QEMU 7.2.0")
        child.expect_exact("(QEMU) ")
        child.sendline("query-name")
        child.expect_exact('{"return": {"name": "testvm"}}')
    finally:
        child.terminate(force=True)


def test_hmp_shell_banner_completion_and_command(daemon: Qmpd, tmp_path: Path) -> None:
    child = _spawn(tmp_path, "-H", daemon.path)
    try:
        child.expect_exact("Welcome to the HMP shell!\r\n")
        child.expect_exact("Connected to QEMU 7.2.0\r\n")
        child.expect_exact("(QEMU) ")
        child.send("info \t\t")
        child.expect_exact("(QEMU) info ")
        listing = child.before
        for name in ("info name", "info status", "info version"):
            assert name in listing
        child.send("st\t")
        child.expect_exact("status")  # completed to info status
        child.sendline("")
        child.expect_exact("VM status: running")
        child.sendline("info version")
        child.expect_exact("7.2.0 (qmpd 0.1.0)")
        child.sendline("cpu 0")
        child.expect_exact("(QEMU) ")
        child.sendline("nonsense")
        child.expect_exact("unknown command: 'nonsense'")
    finally:
        child.terminate(force=True)


def test_qmp_shell_without_negotiation(daemon: Qmpd, tmp_path: Path) -> None:
    child = _spawn(tmp_path, "-N", daemon.path)
    try:
        child.expect_exact("Connected\r\n")
        child.expect_exact("(QEMU) ")
        child.sendline("query-status")
        child.expect_exact('{"error": {"class": "CommandNotFound", "desc": "Expecting '
                           "capabilities negotiation with 'qmp_capabilities'\"}}")
        child.sendline("qmp_capabilities")
        child.expect_exact('{"return": {}}')
        child.sendline("qmp_capabilities")
        child.expect_exact('{"error": {"class": "CommandNotFound", "desc": "Capabilities '
                           'negotiation is already complete, command ignored"}}')
    finally:
        child.terminate(force=True)
