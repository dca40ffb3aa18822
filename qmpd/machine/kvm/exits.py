"""Typed vCPU exits returned by ``VcpuFd.run()`` (and by the TCG CPU), so no caller reads
``exit_reason`` itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IoOut:
    """The guest wrote ``value`` (``size`` bytes) to I/O port ``port``."""

    port: int
    size: int
    value: int


@dataclass(frozen=True)
class IoIn:
    """The guest read I/O port ``port`` (qmpd's guest never does)."""

    port: int
    size: int


@dataclass(frozen=True)
class Mmio:
    """The guest touched guest-physical ``addr`` outside RAM."""

    addr: int
    is_write: bool


@dataclass(frozen=True)
class Interrupted:
    """KVM_RUN returned EINTR: a kick (immediate_exit + signal) or another signal."""


@dataclass(frozen=True)
class Hlt:
    """The guest executed HLT."""


@dataclass(frozen=True)
class Shutdown:
    """Triple fault or similar: the guest cannot continue."""


@dataclass(frozen=True)
class FailEntry:
    """VM entry failed; ``reason`` is the hardware code."""

    reason: int


@dataclass(frozen=True)
class InternalError:
    """KVM could not handle an exit; ``suberror`` is KVM_INTERNAL_ERROR_*."""

    suberror: int


@dataclass(frozen=True)
class Unknown:
    """Any other exit reason (reported, never silently ignored)."""

    reason: int


VcpuExit = IoOut | IoIn | Mmio | Interrupted | Hlt | Shutdown | FailEntry | InternalError | Unknown
