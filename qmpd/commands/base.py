"""Base QMP commands: negotiation, identity, introspection, run state, quit.

Users: any QMP client; libvirt-style probes (query-version, query-target,
query-qmp-schema, query-kvm). Texts and shapes are QEMU 7.2's.
"""

from __future__ import annotations

from typing import Any

import qmpd
from qmpd.commands.context import CommandContext, SessionInfo
from qmpd.commands.errors import QMPError
from qmpd.commands.registry import command


def version_info() -> dict[str, Any]:
    """VersionInfo, as in the greeting and ``query-version``."""
    major, minor, micro = qmpd.QEMU_VERSION
    return {"qemu": {"major": major, "minor": minor, "micro": micro},
            "package": f"qmpd {qmpd.__version__}"}


@command("qmp_capabilities", needs_session=True)
def qmp_capabilities(ctx: CommandContext, session: SessionInfo,
                     enable: list[str] | None = None) -> None:
    """Leave negotiation mode, optionally enabling ``oob``."""
    if session.negotiated:
        raise QMPError("Capabilities negotiation is already complete, command ignored",
                       "CommandNotFound")
    wanted = enable or []
    unavailable = [cap for cap in wanted if not (cap == "oob" and session.oob_offered)]
    if unavailable:
        raise QMPError(f"Capability {', '.join(unavailable)} not available")
    session.negotiate(oob="oob" in wanted)


@command("query-version")
def query_version(ctx: CommandContext) -> dict[str, Any]:
    """The QEMU release whose QMP dialect we speak, and our package."""
    return version_info()


@command("query-commands")
def query_commands(ctx: CommandContext) -> list[dict[str, str]]:
    """Every command of the command table."""
    return [{"name": name} for name in ctx.schema.index.commands]


@command("query-qmp-schema")
def query_qmp_schema(ctx: CommandContext) -> list[dict[str, Any]]:
    """SchemaInfo for every command, event and reachable type."""
    return ctx.schema.schema_info


@command("query-name")
def query_name(ctx: CommandContext) -> dict[str, str]:
    """``-name``; an empty object if none was given."""
    return {"name": ctx.vm_name} if ctx.vm_name is not None else {}


@command("query-target")
def query_target(ctx: CommandContext) -> dict[str, str]:
    """The guest architecture."""
    return {"arch": "x86_64"}


@command("query-kvm")
def query_kvm(ctx: CommandContext) -> dict[str, bool]:
    """Whether KVM runs this guest (``enabled``) and is usable here (``present``)."""
    return ctx.machine.query_kvm()


@command("query-status")
def query_status(ctx: CommandContext) -> dict[str, Any]:
    """The run state."""
    runstate = ctx.runstate
    return {"running": runstate.is_running, "singlestep": False,
            "status": runstate.state.value}


@command("quit")
def quit_(ctx: CommandContext) -> None:
    """Graceful shutdown: the reply, then SHUTDOWN, then the connections close."""
    ctx.shutdown("host-qmp-quit")
