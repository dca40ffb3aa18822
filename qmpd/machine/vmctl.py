"""VM start/stop as QEMU's ``vm_start`` / ``vm_stop``: vCPUs, run state and events together.

Users: the ``stop``/``cont`` commands, migration (finish-migrate, postmigrate), COLO
(each checkpoint stops the VM in run state ``colo``). Events are reported through the
``emit`` callback the daemon wires to the event bus (this layer does not know QMP):

- :meth:`VmControl.stop`: if running, pause the vCPU, set the new run state, emit
  ``STOP``; if not running, only set the run state (``vm_stop_force_state``).
- :meth:`VmControl.start`: emit ``RESUME``, set ``running``, resume the vCPU; a no-op
  when already running.
- :meth:`VmControl.checkpoint`: a COLO checkpoint's pause: stop into ``colo``, run a
  function on the paused machine and (pipelined) start again, in one vCPU round trip;
  the events are those of a stop and a start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from qmpd.machine.runstate import RunState, RunStateHolder
from qmpd.machine.vcpu_thread import PauseTimes

log = logging.getLogger(__name__)

Emit = Callable[[str, "dict[str, object] | None"], None]
T = TypeVar("T")


class Pausable(Protocol):
    """What VmControl needs of a machine."""

    def pause(self) -> None:
        """Stop the vCPU; return once it is out of guest mode."""

    def resume(self) -> None:
        """Let the vCPU run."""

    def save_state(self) -> bytes:
        """The state blob of a paused machine."""

    def snapshot(self, fn: Callable[[np.ndarray], T],
                 resume: bool) -> tuple[T, bytes, PauseTimes]:
        """Pause; ``fn(dirty_pages)`` on the vCPU thread while the state is saved; resume
        if asked."""


class VmControl:
    """The one place where the VM is started and stopped."""

    def __init__(self, machine: Pausable | None, runstate: RunStateHolder,
                 emit: Emit) -> None:
        self.machine = machine
        self.runstate = runstate
        self._emit = emit

    @property
    def running(self) -> bool:
        """True when the run state is ``running``."""
        return self.runstate.is_running

    def stop(self, state: RunState = RunState.PAUSED) -> None:
        """Stop the VM into ``state`` (QEMU's ``vm_stop`` / ``vm_stop_force_state``).

        :raise RunStateError: if the run-state table forbids it; nothing changes then.
        """
        if self.runstate.is_running:
            self.runstate.check(state)
            if self.machine is not None:
                self.machine.pause()
            self.runstate.set(state)
            self._emit("STOP", None)
        else:
            self.runstate.set(state)

    def checkpoint(self, state: RunState, fn: Callable[[np.ndarray], T],
                   resume: bool) -> tuple[T, bytes, PauseTimes]:
        """Stop into ``state``, call ``fn(dirty_pages)`` on the paused machine while its
        state is saved and, with ``resume``, start it again, in one round trip to the
        vCPU (see ``Machine.snapshot``). Run state and events are those of :meth:`stop`
        followed (with ``resume``) by :meth:`start`. Returns ``fn``'s result, the state
        blob and when the guest stopped and went on (without ``resume``: when ``fn``
        ended).

        :raise RunStateError: if the run-state table forbids it; nothing changes then.
        """
        assert self.machine is not None
        was_running = self.runstate.is_running
        if was_running:
            self.runstate.check(state)
        result, blob, times = self.machine.snapshot(fn, resume and was_running)
        self.runstate.set(state)
        if was_running:
            self._emit("STOP", None)
            if resume:
                self._emit("RESUME", None)
                self.runstate.set(RunState.RUNNING)
        return result, blob, times

    def start(self) -> None:
        """Start the VM (QEMU's ``vm_start``); a no-op when it is already running.

        :raise RunStateError: if ``running`` is not reachable from the current state.
        """
        if self.runstate.is_running:
            return
        self.runstate.check(RunState.RUNNING)
        self._emit("RESUME", None)
        self.runstate.set(RunState.RUNNING)
        if self.machine is not None:
            self.machine.resume()
