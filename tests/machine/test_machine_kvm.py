"""The KVM objects without the vCPU thread: typed exits and both dirty-log modes."""

from __future__ import annotations

import os

import pytest

from qmpd.machine import GuestConfig, layout
from qmpd.machine.accel_kvm import KvmAccel
from qmpd.machine.guest import guest_image
from qmpd.machine.kvm import exits as ex
from qmpd.machine.memory import GuestRam

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
MiB = 1 << 20
WS0 = layout.WS_GPA // 4096


def run_to_doorbell(acc: KvmAccel) -> ex.IoOut:
    while True:
        exit_ = acc.run()
        if isinstance(exit_, ex.IoOut):
            return exit_
        assert isinstance(exit_, ex.Interrupted), exit_


@pytest.mark.parametrize("manual", [True, False])
def test_dirty_log_modes_report_the_same_pages(manual: bool) -> None:
    """batch=1: one doorbell per step, so after 10 doorbells steps 1..10 are exactly done."""
    ram = GuestRam(32 * MiB)
    guest = GuestConfig(wss_bytes=4 * MiB, dirty_pages=1, check_every=0, batch=1)
    layout.write_boot_image(ram.flat, ram.size, guest, guest_image())
    acc = KvmAccel(ram, manual_protect=manual)
    try:
        if not manual:
            assert acc.manual_protect is False  # classic GET-and-clear
        acc.boot()
        assert run_to_doorbell(acc) == ex.IoOut(layout.PORT_DOORBELL, 1, 0)  # step 0
        acc.dirty_log_start()
        for _ in range(10):
            run_to_doorbell(acc)
        got = set(acc.dirty_log_harvest().tolist())
        expected = {WS0 + c for c in range(1, 11)}
        expected |= {layout.RING_GPA // 4096, layout.RING_HDR_GPA // 4096}
        assert got == expected
        assert acc.dirty_log_harvest().size == 0
        run_to_doorbell(acc)
        assert set(acc.dirty_log_harvest().tolist()) == {
            WS0 + 11, layout.RING_GPA // 4096, layout.RING_HDR_GPA // 4096}
        acc.dirty_log_stop()
    finally:
        acc.close()
        ram.close()


def test_kick_before_run_returns_at_once() -> None:
    ram = GuestRam(8 * MiB)
    layout.write_boot_image(ram.flat, ram.size, GuestConfig(wss_bytes=4096), guest_image())
    acc = KvmAccel(ram)
    try:
        acc.boot()
        acc.kick(None)  # immediate_exit without a signal
        assert acc.run() == ex.Interrupted()
        acc.arm()
        assert isinstance(acc.run(), ex.IoOut)
    finally:
        acc.close()
        ram.close()
