"""The machine facade (docs/INTERFACES.md, "The machine facade"): RAM + accelerator + vCPU
thread + output ring, behind the methods commands, migration and COLO call.

All methods are for the event-loop thread; pause/resume/save/load/reset are requests
answered by the vCPU thread within a bounded time. A migration destination builds a
Machine with the same config, writes ``pages``, calls ``load_state`` and ``resume``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import TypeVar, cast

import numpy as np

from qmpd.machine import layout, state
from qmpd.machine.accel import Accel
from qmpd.machine.accel_kvm import KvmAccel
from qmpd.machine.config import MachineConfig
from qmpd.machine.errors import KvmUnavailableError, MachineStateError
from qmpd.machine.guest import guest_image
from qmpd.machine.memory import GuestRam
from qmpd.machine.output import GuestOutput, OutputRing
from qmpd.machine.vcpu_thread import REQUEST_TIMEOUT, PauseTimes, Req, VcpuRunState, VcpuThread

log = logging.getLogger(__name__)

T = TypeVar("T")
_NO_PAGES = np.empty(0, dtype=np.uint64)
_NO_PAGES.flags.writeable = False

#: Bound on joining the vCPU thread in close().
JOIN_TIMEOUT = 5.0


def _make_accel(config: MachineConfig, ram: GuestRam) -> Accel:
    """Pick the accelerator for ``config.accel`` (``kvm:tcg``: KVM, else TCG)."""
    first, *rest = config.accel.split(":")
    errors: list[str] = []
    for name in [first, *rest]:
        try:
            if name == "kvm":
                return KvmAccel(ram, device=config.kvm_device)
            return _make_tcg(ram)
        except KvmUnavailableError as err:
            errors.append(str(err))
            log.info("accelerator %s unavailable: %s", name, err)
    raise KvmUnavailableError("; ".join(errors) or "no accelerator")


def _make_tcg(ram: GuestRam) -> Accel:
    from qmpd.machine.tcg import TcgAccel  # unicorn is imported only when tcg is used

    return TcgAccel(ram)


class Machine:
    """One VM: guest RAM, one vCPU (KVM or TCG), the guest's output.

    :raise MachineConfigError: for an invalid or unsatisfiable config.
    :raise KvmUnavailableError: for ``-accel kvm`` without a usable ``/dev/kvm``.
    """

    page_size = layout.PAGE

    def __init__(self, config: MachineConfig) -> None:
        config.validate()
        self.config = config
        self.mem_bytes = config.mem_bytes
        self.npages = config.mem_bytes // layout.PAGE
        self._image = guest_image()
        self._ram = GuestRam(config.mem_bytes, config.hugepages)
        try:
            self._accel = _make_accel(config, self._ram)
        except BaseException:
            self._ram.close()
            raise
        #: "kvm" or "tcg": what actually runs.
        self.accel: str = self._accel.accel
        #: (npages, 4096) uint8 view of guest RAM.
        self.pages: np.ndarray = self._ram.pages
        self.output = GuestOutput()
        self._ring = OutputRing(self._ram.flat, self.output)
        self._fault_cb: Callable[[str], None] | None = None
        self._dirty_logging = False
        self._batch_override: int | None = None
        self._reset_dirty = False
        #: Pages the VMM itself changed while logging (reported by the next harvest).
        self._vmm_dirty: set[int] = set()
        #: The guest's config words (fixed for the machine's life; part of its state).
        self._config = tuple(layout.config_words(config.guest))
        self._writer = state.StateWriter()
        try:
            self._boot_image()
            self._accel.boot()
        except BaseException:
            self._accel.close()
            self._ram.close()
            raise
        self._vcpu = VcpuThread(self._accel, self._ring, self._on_fault)
        self._closed = False

    # ------------------------------------------------------------------ run control
    @property
    def running(self) -> bool:
        """True while the vCPU is allowed to run."""
        return self._vcpu.state is VcpuRunState.RUNNING

    def resume(self) -> None:
        """Let the vCPU run. :raise GuestFault: if the guest stopped on an error."""
        # RAM may have come from another machine (migration, COLO) with the doorbell batch
        # of its dirty-logging state: set ours.
        self._set_batch()
        self._vcpu.request(Req.RESUME)

    def pause(self) -> None:
        """Stop the vCPU; return once it is out of guest mode and its output is drained."""
        self._vcpu.request(Req.PAUSE)

    def reset(self) -> None:
        """system_reset: re-initialise RAM and restart the guest from its entry, keeping
        the paused/running state. While dirty logging, the next harvest reports every page
        (the VMM's rewrite of RAM is invisible to the dirty log)."""
        was_running = self.running
        if was_running:
            self.pause()

        def do_reset() -> None:
            self._ram.zero()
            self._boot_image()
            self._accel.boot()
            self._reset_dirty = self._dirty_logging

        self._vcpu.request(Req.CALL, do_reset, clears_fault=True)
        if was_running:
            self.resume()

    def set_fault_callback(self, cb: Callable[[str], None] | None) -> None:
        """``cb(reason)`` is called from the vCPU thread when the guest stops on an error
        (the daemon maps it to run state ``internal-error``)."""
        self._fault_cb = cb

    @property
    def fault(self) -> str | None:
        """Why the guest stopped, or None."""
        return self._vcpu.fault

    # ------------------------------------------------------------------ throttle
    def set_cpu_throttle(self, pct: int) -> None:
        """Throttle the vCPU to sleep ``pct`` percent of the time (1..99, as QEMU's
        ``cpu_throttle_set``); 0 lifts the throttle (migration's auto-converge)."""
        self._vcpu.set_throttle(pct)

    @property
    def cpu_throttle_percentage(self) -> int:
        """The throttle in force, 0 when none."""
        return self._vcpu.throttle_percentage

    # ------------------------------------------------------------------ dirty log
    @property
    def dirty_logging(self) -> bool:
        """True between dirty_log_start and dirty_log_stop."""
        return self._dirty_logging

    def dirty_log_start(self) -> None:
        """Start tracking guest writes (clears anything tracked before)."""
        if self._dirty_logging:
            self.dirty_log_harvest()
            return
        # On the vCPU thread, between two runs: unicorn cannot add hooks mid-emulation,
        # and once this returns every later guest write is tracked.
        self._vcpu.request(Req.SYNC, self._accel.dirty_log_start)
        self._dirty_logging = True
        self._set_batch()

    def dirty_log_harvest(self) -> np.ndarray:
        """uint64 page indices dirtied since the last harvest/start (get + clear).

        :raise MachineStateError: if dirty logging is not on.
        """
        if not self._dirty_logging:
            raise MachineStateError("dirty logging is not started")
        if self._accel.harvest_on_vcpu_thread:
            return cast(np.ndarray, self._vcpu.request(Req.SYNC, self._harvest))
        return self._harvest()

    def _harvest(self) -> np.ndarray:
        """The harvest itself, on a thread the accelerator allows."""
        pages = self._accel.dirty_log_harvest()
        if self._reset_dirty:
            # reset() rewrote RAM behind the guest's back: every page counts as dirty.
            self._reset_dirty = False
            self._vmm_dirty.clear()
            return np.arange(self.npages, dtype=np.uint64)
        if self._vmm_dirty:
            extra = np.fromiter(self._vmm_dirty, np.uint64)
            self._vmm_dirty.clear()
            pages = np.union1d(pages, extra).astype(np.uint64)
        return pages

    def dirty_log_stop(self) -> None:
        """Stop tracking (a no-op when not tracking)."""
        if self._dirty_logging:
            self._vcpu.request(Req.SYNC, self._accel.dirty_log_stop)
            self._dirty_logging = False
            self._set_batch()
            self._reset_dirty = False
            self._vmm_dirty.clear()

    # ------------------------------------------------------------------ state
    def save_state(self) -> bytes:
        """vCPU + device state as a :mod:`qmpd.machine.state` blob. Paused only.

        :raise MachineStateError: if the machine is running.
        """
        return cast(bytes, self._vcpu.request(Req.CALL, self._encode_state))

    def snapshot(self, fn: Callable[[np.ndarray], T],
                 resume: bool) -> tuple[T, bytes, PauseTimes]:
        """A checkpoint's pause in one round trip to the vCPU thread: pause, drain the
        output ring, then at the same time harvest the dirty log (empty when not
        logging) and call ``fn(dirty_pages)`` on the vCPU thread while this thread saves
        the vCPU and device state; with ``resume`` the vCPU then lets the guest go on
        without waiting for this thread.

        ``fn`` may read ``pages`` and ``output``. Returns its result, the state blob and
        when the guest stopped and went on.

        :raise VcpuTimeoutError: no answer within the request timeout.
        """
        def on_vcpu() -> T:
            return fn(self._harvest() if self._dirty_logging else _NO_PAGES)

        # The vCPU is out of guest mode and its thread busy with fn: no run, no register
        # access there until this returns (TCG too: the emulator is not running).
        result, blob, times = self._vcpu.snapshot(on_vcpu, resume, self._encode_state)
        return cast(T, result), cast(bytes, blob), times

    def _encode_state(self) -> bytes:
        """The state blob; the vCPU out of guest mode (on its thread, or on the caller's
        while the vCPU thread works on a snapshot's memory side)."""
        self._accel.save_into(self._writer)
        return self._writer.finish(self.mem_bytes, self._config, self._ring.cons)

    def load_state(self, blob: bytes) -> None:
        """Validate ``blob`` whole, then apply it. Paused only; on any error nothing changes.

        :raise MachineStateError: bad blob, wrong machine, or the machine is running.
        """
        st = state.decode(blob, self.mem_bytes, self._config)
        if self.running:
            raise MachineStateError("load_state needs a paused machine")

        def do_load() -> None:
            self._accel.load(st.cpu)
            self._ring.set_cons(st.ring_cons)

        self._vcpu.request(Req.CALL, do_load, clears_fault=True)

    # ------------------------------------------------------------------ info
    def query_kvm(self) -> dict[str, bool]:
        """query-kvm: ``enabled`` (KVM runs this guest), ``present`` (KVM is usable here)."""
        usable = os.access(self.config.kvm_device, os.R_OK | os.W_OK)
        return {"enabled": self.accel == "kvm", "present": self.accel == "kvm" or usable}

    def vcpu_info(self) -> list[dict[str, object]]:
        """query-cpus-fast entries."""
        return [{"cpu-index": 0, "qom-path": "/machine/unattached/device[0]",
                 "thread-id": self._vcpu.native_id, "target": "x86_64",
                 "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}}]

    def close(self) -> None:
        """Finish the vCPU thread (bounded join), close fds, unmap RAM. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(MachineStateError):
            self._vcpu.request(Req.FINISH, timeout=JOIN_TIMEOUT)
        if not self._vcpu.join(JOIN_TIMEOUT):
            log.error("vCPU thread did not finish within %ss; leaking it", JOIN_TIMEOUT)
            return
        self._accel.close()
        self._ram.close()
        # Break the Machine <-> vCPU-thread cycle so RAM is unmapped as soon as the last
        # reference to this Machine goes, not at the next GC cycle.
        self._vcpu.on_fault = None

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _boot_image(self) -> None:
        layout.write_boot_image(self._ram.flat, self.mem_bytes, self.config.guest, self._image)
        self._ring.set_cons(0)
        self._set_batch()

    def set_batch_override(self, batch: int | None) -> None:
        """Records per doorbell until reset with None (timing only; the guest rereads it
        every step). COLO's failover sets 1 for a moment so that the first records of a
        newly running secondary leave at once, not after a full batch."""
        self._batch_override = batch
        self._set_batch()

    def _set_batch(self) -> None:
        """Records per doorbell for the current dirty-logging state (timing only).

        A change is a VMM write to guest RAM the dirty log cannot see: while logging, the
        config page is added to the next harvest so copies of RAM (migration, COLO) stay
        identical.
        """
        batch = self._batch_override or self.config.guest.effective_batch(self._dirty_logging)
        if layout.get_batch(self._ram.flat) != batch:
            layout.set_batch(self._ram.flat, batch)
            if self._dirty_logging:
                self._vmm_dirty.add(layout.CONFIG_GPA // layout.PAGE)

    def _on_fault(self, why: str) -> None:
        if self._fault_cb is not None:
            self._fault_cb(why)


__all__ = ["REQUEST_TIMEOUT", "Machine"]
