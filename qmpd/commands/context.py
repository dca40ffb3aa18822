"""CommandContext: the facades a command handler may use, built by the daemon.

Users: every handler receives the one :class:`CommandContext` of the daemon as its
first argument. Handlers stay thin: validate, call a facade, shape the reply.
The optional facades are filled in by the composition root (:mod:`qmpd.daemon`);
a handler needing one that is absent should raise ``QMPError`` rather than assume
it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from qmpd.events import EventBus
from qmpd.machine.runstate import RunStateHolder

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


@dataclass
class CommandContext:
    """Daemon-wide state and facades for command handlers."""

    #: the VM run state (``query-status``); the machine layer drives it
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
    #: qmpd.machine.Machine once the machine layer lands (narrow the type then)
    machine: Any | None = None
    #: qmpd.machine.vmctl.VmControl: start/stop with run state and STOP/RESUME
    vm: Any | None = None
    #: qmpd.migration.MigrationManager once the migration layer lands
    migration: Any | None = None
    #: qmpd.colo manager once the COLO layer lands
    colo: Any | None = None
