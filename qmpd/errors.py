"""Error roots shared by every layer.

Each layer raises its own subclass of :class:`QmpdError` with structured fields; only the
command layer translates them into a QMP ``{"class", "desc"}`` pair (see
:class:`QMPError`). Standard library only.

::

    QmpdError
     ├── QMPError          a reply-ready QMP error (class + desc), raised by handlers
     ├── MachineError      qmpd.machine (KVM/TCG, RAM, vCPU, devices)
     ├── MigrationError    qmpd.migration (status machine, stream, transport)
     └── ColoError         qmpd.colo (checkpoint protocol, failover)
"""

from __future__ import annotations


class QmpdError(Exception):
    """Root of every error qmpd raises on purpose."""


class QMPError(QmpdError):
    """An error that maps one-to-one onto a QMP error reply.

    :param desc: the human-readable ``desc`` member, QEMU's wording where QEMU has one.
    :param error_class: the QMP ``class`` member (QapiErrorClass).
    """

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class

    def __str__(self) -> str:
        return f"{self.error_class}: {self.desc}"


class MachineError(QmpdError):
    """A failure of the virtual machine layer (KVM ioctl, guest RAM, vCPU, device)."""


class MigrationError(QmpdError):
    """A failure of a migration: stream, transport, or state machine."""


class ColoError(QmpdError):
    """A failure of the COLO checkpoint protocol or failover."""
