"""CommandContext: the facades a command handler may use, built by the daemon.

Users: every handler receives the one :class:`CommandContext` of the daemon as its
first argument; the dispatcher reads ``runstate`` and ``colo.mode`` to apply the
commands' gates (:mod:`qmpd.commands.gating`). Handlers stay thin: call a facade,
shape the reply. Every facade is always there (the composition root builds the VM
stack before the context), so a handler never tests for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from qmpd.colo.manager import ColoManager
from qmpd.events import EventBus
from qmpd.machine.machine import Machine
from qmpd.machine.runstate import RunStateHolder
from qmpd.machine.vmctl import VmControl
from qmpd.migration.manager import MigrationManager

if TYPE_CHECKING:
    from qmpd.config import DaemonConfig
    from qmpd.schema import Schema


class SessionInfo(Protocol):
    """The view of a QMP connection that ``needs_session`` handlers get."""

    oob_offered: bool
    oob_enabled: bool

    @property
    def negotiated(self) -> bool:
        """True once ``qmp_capabilities`` succeeded."""

    def negotiate(self, oob: bool) -> None:
        """Leave negotiation mode, with or without out-of-band execution."""

    def take_fd(self) -> int | None:
        """``getfd``: the descriptor sent (SCM_RIGHTS) with the latest input, if any;
        the caller owns it."""


@dataclass(frozen=True)
class CommandContext:
    """Daemon-wide state and facades for command handlers."""

    #: the VM run state (``query-status``, command gates); the machine layer drives it
    runstate: RunStateHolder
    #: emit QMP events
    events: EventBus
    #: ``-name`` (None if not given)
    vm_name: str | None
    #: request a graceful shutdown; argument: QEMU ShutdownCause value
    shutdown: Callable[[str], None]
    #: the loaded schema.json
    schema: Schema
    #: the daemon configuration (command line)
    config: DaemonConfig
    #: the virtual machine (vCPU, RAM, reset, query-kvm, vCPU info)
    machine: Machine
    #: start/stop with run state and STOP/RESUME
    vm: VmControl
    #: the sole owner of this node's migrations (and the ``migration`` yank instance)
    migration: MigrationManager
    #: the COLO session: mode (command gates), failover, status, statistics
    colo: ColoManager
