"""What COLO needs from the layers below, as typing Protocols.

COLO is written against these so that it depends on behaviour, not on classes:
the machine facade of docs/INTERFACES.md, the VM start/stop control, the serial pump,
the raw byte channel of the migration connection, and the migration parameters it
reads (``x-checkpoint-delay``, ``x-colo-pipeline``, ``x-colo-max-dirty-pages``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from qmpd.machine.runstate import RunState
from qmpd.machine.vcpu_thread import PauseTimes

T = TypeVar("T")


class GuestOutputPort(Protocol):
    """The machine's guest output buffer."""

    def drain(self) -> bytes:
        """Take every byte the guest emitted so far."""

    def take(self) -> bytearray:
        """:meth:`drain` without a copy: the buffer itself."""


class ColoMachine(Protocol):
    """The parts of :class:`qmpd.machine.Machine` a checkpoint touches."""

    @property
    def npages(self) -> int:
        """Guest RAM size in pages."""

    @property
    def pages(self) -> npt.NDArray[np.uint8]:
        """Guest RAM as an (npages, 4096) view."""

    @property
    def output(self) -> GuestOutputPort:
        """The guest's output buffer."""

    def dirty_log_start(self) -> None:
        """Start (or restart) dirty logging from a clean bitmap."""

    def dirty_log_harvest(self) -> npt.NDArray[np.uint64]:
        """Page indices dirtied since the last harvest."""

    def save_state(self) -> bytes:
        """vCPU + device state (VM paused)."""

    def load_state(self, blob: bytes) -> None:
        """Validate, then apply vCPU + device state (VM paused)."""

    def set_batch_override(self, batch: int | None) -> None:
        """Records per guest doorbell until reset with None (output latency only)."""


class VmPort(Protocol):
    """VM start/stop with run state and STOP/RESUME events (VmControl)."""

    @property
    def running(self) -> bool:
        """True when the run state is ``running``."""

    def stop(self, state: RunState = RunState.PAUSED) -> None:
        """Stop the VM into ``state``."""

    def checkpoint(self, state: RunState,
                   fn: Callable[[npt.NDArray[np.uint64]], T],
                   resume: bool) -> tuple[T, bytes, PauseTimes]:
        """Stop into ``state``; call ``fn(dirty_pages)`` on the paused machine (on its vCPU
        thread) while its state is saved; with ``resume`` start again; all in one vCPU
        round trip. Returns ``fn``'s result, the state blob and when the guest stopped
        and went on."""

    def start(self) -> None:
        """Start the VM."""


class PumpPort(Protocol):
    """The serial pump (OutputPump)."""

    def hold(self) -> None:
        """Leave draining to output commit."""

    def unhold(self) -> None:
        """Back to pass-through."""

    def write(self, data: bytes) -> None:
        """Release bytes to the chardev."""

    def take_first_held_time(self) -> float | None:
        """``perf_counter()`` when held output first arrived since the last call."""


class ChannelPort(Protocol):
    """The migration connection as a raw byte pipe (both directions).

    ``write`` is synchronous (buffered in the transport): two writes with no ``await``
    between them happen with no other task running in between, which the secondary
    relies on to make "send vmstate-received, then apply" indivisible.
    """

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending."""

    async def drain(self) -> None:
        """Wait until queued data has been handed to the kernel."""

    async def send(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Drain, then send every buffer in order without copying it."""

    async def recv_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; raise on EOF or error."""

    async def recv_into(self, buf: memoryview) -> None:
        """Fill all of ``buf``; raise on EOF or error."""

    def peer_closed(self) -> bool:
        """True if the peer has closed its side; consumes nothing."""

    def abort(self) -> None:
        """Cut the connection now, both directions; pending reads and writes fail."""


class ParamsPort(Protocol):
    """The migration parameters (:class:`qmpd.migration.config.MigrationConfig`)."""

    def parameter(self, name: str) -> object:
        """The current value of parameter ``name`` (a schema member name)."""

    def int_parameter(self, name: str) -> int:
        """The current value of an integer parameter."""

    def add_listener(self, cb: Callable[[str, object], None]) -> None:
        """Call ``cb(name, value)`` after every set of a parameter."""
