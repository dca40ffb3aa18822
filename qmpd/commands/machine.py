"""Machine commands: stop, cont, system_reset, query-cpus-fast, query-memory-size-summary.

Thin handlers over :class:`qmpd.machine.vmctl.VmControl` and the machine facade, with
QEMU 7.2's semantics: ``stop``/``cont`` during an incoming migration only change
whether the guest starts when it completes (``autostart``); ``cont`` refuses in
``finish-migrate`` and in states that need a reset. qmpd refuses both while the node
is in COLO: the checkpoint protocol owns the guest's run state then (a secondary that
ran on its own would break output commit).
"""

from __future__ import annotations

from typing import Any

from qmpd.colo.state import ColoMode
from qmpd.commands.base import query_kvm
from qmpd.commands.context import CommandContext
from qmpd.commands.hmp import hmp_info
from qmpd.commands.registry import command
from qmpd.errors import QMPError
from qmpd.machine.runstate import RunState

_NEEDS_RESET = (RunState.INTERNAL_ERROR, RunState.SHUTDOWN, RunState.GUEST_PANICKED)


def _vm(ctx: CommandContext) -> Any:
    if ctx.vm is None:
        raise QMPError("No machine is configured")
    return ctx.vm


def _refuse_in_colo(ctx: CommandContext, what: str) -> None:
    if ctx.colo is not None and ctx.colo.mode is not ColoMode.NONE:
        raise QMPError(f"Cannot {what} the VM while it is in COLO mode; use "
                       "x-colo-lost-heartbeat to leave COLO first")


@command("stop")
def stop(ctx: CommandContext) -> None:
    """Pause the guest (``running`` → ``paused``, STOP)."""
    _refuse_in_colo(ctx, "stop")
    if ctx.runstate.state is RunState.INMIGRATE:
        if ctx.migration is not None:
            ctx.migration.autostart = False
        return
    _vm(ctx).stop(RunState.PAUSED)


@command("cont")
def cont(ctx: CommandContext) -> None:
    """Resume the guest (RESUME, ``running``)."""
    _refuse_in_colo(ctx, "continue")
    state = ctx.runstate.state
    if state in _NEEDS_RESET:
        raise QMPError("Resetting the Virtual Machine is required")
    if state is RunState.FINISH_MIGRATE:
        raise QMPError("Migration is not finalized yet")
    if state is RunState.INMIGRATE:
        if ctx.migration is not None:
            ctx.migration.autostart = True
        return
    _vm(ctx).start()


@command("system_reset")
def system_reset(ctx: CommandContext) -> None:
    """Reset the guest: it restarts from its entry; RESET is emitted."""
    _refuse_in_colo(ctx, "reset")
    if ctx.machine is None:
        raise QMPError("No machine is configured")
    ctx.machine.reset()
    ctx.events.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})


@command("query-cpus-fast")
def query_cpus_fast(ctx: CommandContext) -> list[dict[str, Any]]:
    """One entry per vCPU, as QEMU's CpuInfoFast."""
    if ctx.machine is None:
        return []
    out: list[dict[str, Any]] = []
    for info in ctx.machine.vcpu_info():
        out.append({
            "cpu-index": info.get("cpu-index", 0),
            "qom-path": f"/machine/unattached/device[{info.get('cpu-index', 0)}]",
            "thread-id": info.get("thread-id", 0),
            "props": {"core-id": 0, "thread-id": 0, "socket-id": info.get("cpu-index", 0)},
            "target": "x86_64",
        })
    return out


@command("query-memory-size-summary")
def query_memory_size_summary(ctx: CommandContext) -> dict[str, int]:
    """Base memory (``-m``) and hot-plugged memory (none)."""
    base = ctx.machine.mem_bytes if ctx.machine is not None else ctx.config.mem_bytes
    return {"base-memory": base, "plugged-memory": 0}


@hmp_info("cpus", "show infos for each CPU")
def info_cpus(ctx: CommandContext, args: str) -> str:
    lines = [f"* CPU #{c['cpu-index']}: thread_id={c['thread-id']}"
             for c in query_cpus_fast(ctx)]
    return "".join(line + "\n" for line in lines)


@hmp_info("kvm", "show KVM information")
def info_kvm(ctx: CommandContext, args: str) -> str:
    kvm = query_kvm(ctx)
    if not kvm["present"]:
        return "kvm support: not compiled\n"
    return "kvm support: " + ("enabled" if kvm["enabled"] else "disabled") + "\n"
