"""A fresh qmpd's ``query-migrate-parameters`` is QEMU 7.2's, member for member.

The reference is the reply of a fresh QEMU 7.2 recorded in
``qemu-colo-facts.md`` §8 (copied below as data) and, where ``qemu-system-x86_64`` is
installed, a live QEMU 7.2 asked the same question (skipped with a reason otherwise;
failed when CI is set). qmpd differs only where it says so: ``x-checkpoint-delay`` is
200 ms (QEMU 2.8's; 7.2 has 20000) and its own ``x-colo-*`` extensions are added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmp_helpers import Raw, start_qemu_72, start_qmpd, wait_listening

#: ``query-migrate-parameters`` of a fresh QEMU 7.2 (qemu-colo-facts.md §8, its order).
QEMU_72_REPLY: dict[str, Any] = {
    "cpu-throttle-tailslow": False, "xbzrle-cache-size": 67108864,
    "cpu-throttle-initial": 20, "announce-max": 550, "decompress-threads": 2,
    "compress-threads": 8, "compress-level": 1, "multifd-channels": 2,
    "multifd-zstd-level": 1, "announce-initial": 50, "block-incremental": False,
    "compress-wait-thread": True, "downtime-limit": 300, "tls-authz": "",
    "multifd-compression": "none", "announce-rounds": 5, "announce-step": 100,
    "tls-creds": "", "multifd-zlib-level": 1, "max-cpu-throttle": 99,
    "max-postcopy-bandwidth": 0, "tls-hostname": "", "throttle-trigger-threshold": 50,
    "max-bandwidth": 134217728, "x-checkpoint-delay": 20000, "cpu-throttle-increment": 10,
}

#: Where qmpd deliberately answers otherwise, and its own members.
QMPD_DEVIATIONS: dict[str, Any] = {"x-checkpoint-delay": 200}
QMPD_EXTENSIONS: dict[str, Any] = {"x-colo-pipeline": True, "x-colo-max-dirty-pages": 0}


def _parameters(path: str) -> dict[str, Any]:
    client = Raw(path)
    try:
        client.negotiate()
        reply = client.cmd({"execute": "query-migrate-parameters"})
    finally:
        client.close()
    result: dict[str, Any] = reply["return"]
    return result


def test_fresh_qmpd_answers_qemu_72_defaults(tmp_path: Path) -> None:
    d = start_qmpd(tmp_path, "-m", "32M", "-accel", "tcg")
    try:
        wait_listening(d.path)
        params = _parameters(d.path)
    finally:
        assert d.stop() == 0
    assert params == {**QEMU_72_REPLY, **QMPD_DEVIATIONS, **QMPD_EXTENSIONS}


def test_live_qemu_72_answers_the_recorded_defaults(tmp_path: Path) -> None:
    proc, path = start_qemu_72(tmp_path)
    try:
        params = _parameters(path)
    finally:
        proc.kill()
        proc.wait(10)
    assert params == QEMU_72_REPLY
    assert list(params) == list(QEMU_72_REPLY)  # QEMU's QDict order, as recorded
