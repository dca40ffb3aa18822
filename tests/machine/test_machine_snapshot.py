"""Machine.snapshot: a checkpoint's pause in one vCPU round trip.

``snapshot(fn, resume)`` stops the vCPU, drains the output ring, then harvests the dirty
log and calls ``fn(dirty)`` on the vCPU thread while the caller's thread saves the state;
with ``resume`` a running guest goes on without waiting for the caller. What ``fn`` sees
and the state must be a consistent cut: RAM, state and output of one instant, so that a
fresh machine built from it continues the output stream exactly.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from qmpd.machine import Machine
from qmpd.machine.guest_check import verify_stream
from qmpd.machine.runstate import RunState, RunStateError, RunStateHolder
from qmpd.machine.state import BLOB_SIZE
from qmpd.machine.vmctl import VmControl

from .conftest import MachineFactory, read_records

W = 1024


def test_snapshot_is_a_consistent_cut_and_the_guest_goes_on(
        make_machine: MachineFactory) -> None:
    src = make_machine(pace=20000, check_every=10)
    before = read_records(src, 200)
    src.resume()
    time.sleep(0.02)
    t_called = time.perf_counter()

    def cut(dirty: np.ndarray) -> tuple[np.ndarray, bytes]:
        return src.pages.copy(), src.output.drain()

    (ram, out), state, times = src.snapshot(cut, resume=True)
    # The guest left guest mode at most a kick's latency after the call (or had already
    # left it, draining output), and was let go after that.
    assert times.stopped < times.resumed <= time.perf_counter()
    assert t_called - 0.1 < times.stopped
    assert src.running
    after = read_records(src, 100)  # the source went on by itself
    at_cut = before + out.splitlines()
    assert after[0].startswith(b"seq=%d " % len(at_cut))

    dst = make_machine(pace=20000, check_every=10)
    dst.pages[:] = ram
    dst.load_state(state)
    restored = read_records(dst, 100)
    assert restored[:50] == after[:50]  # the same continuation, record for record
    report = verify_stream(at_cut + restored, d=16, w=W, start=0)
    assert report.ok, report


def test_snapshot_harvests_every_page_written_since_the_last_harvest(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000, dirty_pages=16)
    m.dirty_log_start()
    m.resume()
    time.sleep(0.02)

    def copy(dirty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return m.pages.copy(), dirty.copy()

    (first, _), _, _ = m.snapshot(copy, resume=True)
    time.sleep(0.05)
    (second, dirty), _, _ = m.snapshot(copy, resume=False)
    assert not m.running
    changed = np.flatnonzero((first != second).any(axis=1))
    assert changed.size > 0
    assert set(changed.tolist()) <= set(dirty.tolist())


def test_snapshot_without_dirty_logging_reports_no_pages(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    m.resume()
    (n, kind), _, _ = m.snapshot(lambda dirty: (dirty.size, dirty.dtype), resume=True)
    assert (n, kind) == (0, np.uint64)
    assert m.running


@pytest.mark.parametrize("resume", [True, False])
def test_an_error_in_fn_reaches_the_caller_and_the_run_state_is_as_asked(
        make_machine: MachineFactory, resume: bool) -> None:
    m = make_machine(pace=20000)
    m.resume()

    def boom(dirty: np.ndarray) -> None:
        raise ValueError("gather failed")

    with pytest.raises(ValueError, match=r"^gather failed$"):
        m.snapshot(boom, resume=resume)
    assert m.running is resume


def test_snapshot_of_a_paused_machine_stays_paused(make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    read_records(m, 10)
    _, state, _ = m.snapshot(lambda dirty: None, resume=True)
    assert not m.running
    assert state == m.save_state()


def _running_vm(m: Machine) -> tuple[VmControl, RunStateHolder, list[str]]:
    """A VmControl over ``m``, started; the names of the events it emits."""
    events: list[str] = []
    runstate = RunStateHolder()
    vm = VmControl(m, runstate, lambda name, data: events.append(name))
    vm.start()
    return vm, runstate, events


@pytest.mark.parametrize("resume", [True, False])
def test_vmcontrol_checkpoint_reports_a_stop_then_a_start(
        make_machine: MachineFactory, resume: bool) -> None:
    """Run states and events are those of vm_stop(colo) followed (resume) by vm_start."""
    m = make_machine(pace=20000)
    vm, runstate, events = _running_vm(m)
    seen: list[str] = []

    def fn(dirty: np.ndarray) -> int:
        seen.append(runstate.state.value)  # still 'running' while the vCPU thread works
        return 7

    result, state, _ = vm.checkpoint(RunState.COLO, fn, resume=resume)
    assert len(state) == BLOB_SIZE
    assert result == 7
    assert seen == ["running"]
    assert events == (["RESUME", "STOP", "RESUME"] if resume else ["RESUME", "STOP"])
    assert runstate.state is (RunState.RUNNING if resume else RunState.COLO)
    assert m.running is resume


def test_vmcontrol_checkpoint_refused_by_the_run_state_table_changes_nothing(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    vm, runstate, events = _running_vm(m)
    called: list[int] = []
    with pytest.raises(RunStateError):
        vm.checkpoint(RunState.PRELAUNCH, lambda d: called.append(1), resume=True)
    assert called == [] and events == ["RESUME"]
    assert runstate.state is RunState.RUNNING and m.running


def test_the_state_saved_alongside_is_the_one_at_the_cut(make_machine: MachineFactory) -> None:
    """The state is saved on the caller's thread while fn runs on the vCPU thread: it is
    the state of the same instant (save_state of the machine still paused agrees)."""
    m = make_machine(pace=20000)
    m.resume()
    time.sleep(0.02)
    _, state, _ = m.snapshot(lambda dirty: None, resume=False)
    assert state == m.save_state()


def test_an_error_in_the_state_save_reaches_the_caller_after_the_vcpu_answered(
        make_machine: MachineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    m = make_machine(pace=20000)
    m.resume()

    def broken() -> bytes:
        raise OSError("KVM_GET_REGS failed")

    monkeypatch.setattr(m, "_encode_state", broken)
    ran: list[int] = []
    with pytest.raises(OSError, match=r"^KVM_GET_REGS failed$"):
        m.snapshot(lambda dirty: ran.append(1), resume=True)
    assert ran == [1] and m.running  # the vCPU side ran and the guest went on
