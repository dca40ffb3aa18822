"""The machine layer's errors: every one a :class:`qmpd.errors.MachineError` with a one-line text.

Users: everything in :mod:`qmpd.machine`; the command layer maps them to GenericError with
``str(err)``; the CLI prints ``str(err)`` and exits 1.
"""

from __future__ import annotations

from qmpd.errors import MachineError
from qmpd.options import OptionError


class MachineConfigError(MachineError, OptionError):
    """A bad ``-m`` / ``-accel`` / ``-guest`` / ``-serial`` value, or one the host cannot give.

    An :class:`~qmpd.options.OptionError` too: ``option``, ``reason``, ``value`` (None when
    the machine layer no longer has the text as given; the CLI then adds it).
    """


class KvmUnavailableError(MachineError):
    """``/dev/kvm`` is missing, not accessible, or lacks a capability qmpd needs."""


class KvmError(MachineError):
    """A KVM ioctl failed.

    :param op: the ioctl's name, e.g. ``"KVM_RUN"``.
    :param errno: the errno the kernel returned.
    """

    def __init__(self, op: str, errno: int, detail: str = "") -> None:
        import os

        text = f"{op} failed: {os.strerror(errno)} (errno {errno})"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.op = op
        self.errno = errno


class MachineStateError(MachineError):
    """A save/load-state request that cannot be honoured (bad blob, wrong run state)."""


class VcpuTimeoutError(MachineError):
    """The vCPU thread did not answer a request within its bound."""


class GuestBuildError(MachineError):
    """The guest program could not be loaded (or, by `make guest`, assembled)."""


class GuestFault(MachineError):
    """The guest stopped on an unexpected exit (shutdown, failed entry, bad config)."""
