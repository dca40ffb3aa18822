"""Guest faults, accelerator choice and misuse: clear errors, no hangs."""

from __future__ import annotations

import os
import threading
import time

import pytest

from qmpd.machine import GuestConfig, Machine, MachineConfig, MachineStateError
from qmpd.machine.errors import GuestFault, KvmUnavailableError

from .conftest import MachineFactory, MiB, read_records


def test_bad_config_page_stops_the_guest_with_a_fault(make_machine: MachineFactory) -> None:
    m = make_machine()
    faults: list[str] = []
    seen = threading.Event()

    def on_fault(why: str) -> None:
        faults.append(why)
        seen.set()

    m.set_fault_callback(on_fault)
    m.pages[1][:8] = 0  # the config page's magic
    m.resume()
    assert seen.wait(5)
    assert "bad config" in faults[0]
    assert m.running is False
    assert "bad config" in str(m.fault)
    with pytest.raises(GuestFault):
        m.resume()
    m.reset()  # rewrites the config page and clears the fault
    assert str(m.fault) == "None"
    assert read_records(m, 10)[0].startswith(b"seq=0 ")


def test_requests_from_the_vcpu_thread_are_refused(make_machine: MachineFactory) -> None:
    m = make_machine(pace=100000)
    errors: list[BaseException] = []

    def notify() -> None:
        try:
            m.pause()
        except MachineStateError as err:
            errors.append(err)

    m.output.set_notify(notify)
    read_records(m, 3)
    assert errors and "vCPU thread" in str(errors[0])


def test_kvm_missing() -> None:
    """-accel kvm without a usable device: a one-line error; kvm:tcg falls back to tcg."""
    config = MachineConfig(mem_bytes=32 * MiB, accel="kvm", guest=GuestConfig(4 * MiB),
                           kvm_device="/dev/nonexistent-kvm")
    with pytest.raises(KvmUnavailableError, match=r"^KVM is not available: /dev/nonex"):
        Machine(config)
    with Machine(MachineConfig(mem_bytes=32 * MiB, guest=GuestConfig(4 * MiB),
                               kvm_device="/dev/nonexistent-kvm")) as m:
        assert m.accel == "tcg"
        assert m.query_kvm() == {"enabled": False, "present": False}
        t0 = time.monotonic()
        assert read_records(m, 20)[0].startswith(b"seq=0 ")
        assert time.monotonic() - t0 < 10


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
def test_query_kvm_on_kvm() -> None:
    with Machine(MachineConfig(mem_bytes=32 * MiB, accel="kvm:tcg",
                               guest=GuestConfig(4 * MiB))) as m:
        assert m.accel == "kvm"
        assert m.query_kvm() == {"enabled": True, "present": True}


def test_a_failing_run_faults_the_guest_and_keeps_answering(
        make_machine: MachineFactory) -> None:
    """An accelerator error (here: unicorn/KVM refusing a corrupt code page) stops the
    guest with a fault; the vCPU thread keeps answering requests."""
    m = make_machine()
    seen = threading.Event()
    m.set_fault_callback(lambda why: seen.set())
    m.pages[0x80000 // 4096][:] = 0xFF  # guest code: invalid opcodes
    m.resume()
    assert seen.wait(5)
    assert m.fault is not None
    m.pause()
    m.save_state()
    assert m.fault is not None  # saving does not clear a fault
    m.reset()
    assert read_records(m, 5)[0].startswith(b"seq=0 ")
