"""The accelerator interface the machine drives: :class:`Accel` (KvmAccel, TcgAccel).

Users: :class:`qmpd.machine.Machine` (chooses one per ``-accel``), the vCPU thread.
``arm``/``run``/``boot``/``save``/``load`` run on the vCPU thread; ``kick`` and the dirty
log on any thread.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from qmpd.machine.kvm import exits as ex
from qmpd.machine.state import StateWriter, VcpuState


class Accel(Protocol):
    """A CPU that runs the guest on a :class:`GuestRam`, and tracks its writes."""

    #: "kvm" or "tcg".
    accel: str
    #: True if dirty_log_harvest must run on the vCPU thread (between two runs).
    harvest_on_vcpu_thread: bool

    def boot(self) -> None:
        """Put the vCPU at the guest's entry point (long mode, CPL3)."""

    def arm(self) -> None:
        """Forget a pending kick; called before the run loop looks for requests."""

    def run(self) -> ex.VcpuExit:
        """Run until the guest exits or a kick arrives."""
        ...

    def kick(self, thread_ident: int | None) -> None:
        """Make ``run`` return (or return at once if not running yet)."""

    def save(self) -> VcpuState:
        """The vCPU's state in KVM's layouts."""
        ...

    def save_into(self, w: StateWriter) -> None:
        """:meth:`save`, written into ``w`` (the checkpoint path: no per-part objects)."""

    def load(self, st: VcpuState) -> None:
        """Apply a validated state; all or nothing."""

    def dirty_log_start(self) -> None:
        """Begin tracking guest writes."""

    def dirty_log_harvest(self) -> np.ndarray:
        """uint64 page indices written since the last harvest/start."""
        ...

    def dirty_log_stop(self) -> None:
        """Stop tracking."""

    def close(self) -> None:
        """Release fds / the emulator."""
