"""The ``QMPD_*`` environment of a real qmpd process: read by the CLI, used below.

The CLI is the only reader of the environment (``qmpd.cli.environment``); the values
travel in DaemonConfig to the machine (``QMPD_KVM_DEVICE``) and to COLO
(``QMPD_COLO_HASH``, ``QMPD_COLO_FAULT``, whose effects tests/e2e observe). A value that
cannot be used stops qmpd at start-up with one line naming it, and status 1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from qmp_helpers import REPO

from qmpd.cli import environment


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qmpd", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**os.environ, **env})


@pytest.mark.parametrize(("value", "item"), [
    ("kill-idle", "kill-idle"), ("explode:3", "explode:3"),
    ("corrupt:3,kill-idle:x", "kill-idle:x"), ("truncate:-1", "truncate:-1"),
])
def test_malformed_colo_fault_stops_start_up_with_one_line(value: str, item: str) -> None:
    result = run({"QMPD_COLO_FAULT": value}, "-m", "32M", "-accel", "tcg")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"qmpd: QMPD_COLO_FAULT={value}: bad item '{item}' (expected POINT:CHECKPOINT with "
        "POINT one of corrupt, kill-idle, kill-paused, kill-received, kill-transfer, "
        "truncate)\n")


def test_kvm_device_reaches_the_machine() -> None:
    result = run({"QMPD_KVM_DEVICE": "/dev/nonexistent-kvm"}, "-m", "32M", "-accel", "kvm")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("qmpd: -accel kvm: KVM is not available: /dev/nonexistent-kvm: "
                             "No such file or directory\n")


def test_environment_becomes_config_fields() -> None:
    assert environment({}) == {"kvm_device": "/dev/kvm", "colo_hash": False,
                               "colo_fault": ""}
    assert environment({"QMPD_KVM_DEVICE": "/tmp/k", "QMPD_COLO_HASH": "1",
                        "QMPD_COLO_FAULT": "corrupt:3"}) == {
        "kvm_device": "/tmp/k", "colo_hash": True, "colo_fault": "corrupt:3"}
    assert environment({"QMPD_KVM_DEVICE": "", "QMPD_COLO_HASH": "yes"}) == {
        "kvm_device": "/dev/kvm", "colo_hash": False, "colo_fault": ""}
