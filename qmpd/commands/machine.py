"""Machine commands: stop, cont, system_reset, query-cpus-fast, query-memory-size-summary.

Thin handlers over :class:`qmpd.machine.vmctl.VmControl` and the machine facade, with
QEMU 7.2's semantics: ``stop``/``cont`` during an incoming migration only change
whether the guest starts when it completes (``autostart``); ``cont`` refuses in
``finish-migrate`` and in states that need a reset. qmpd refuses ``stop``, ``cont``
and ``system_reset`` while the node is in COLO: the checkpoint protocol owns the
guest's run state then (a secondary that ran on its own would break output commit).
Those refusals are the commands' gates (``refuse_in``), checked by the dispatcher.
"""

from __future__ import annotations

from qmpd.commands.base import query_kvm
from qmpd.commands.context import CommandContext
from qmpd.commands.gating import Refuse, in_colo, in_runstates
from qmpd.commands.hmp import hmp_info
from qmpd.commands.registry import command
from qmpd.machine.runstate import RunState


def _in_colo(what: str) -> Refuse:
    return in_colo(f"Cannot {what} the VM while it is in COLO mode; use "
                   "x-colo-lost-heartbeat to leave COLO first")


@command("stop", refuse_in=(_in_colo("stop"),))
def stop(ctx: CommandContext) -> None:
    """Pause the guest (``running`` → ``paused``, STOP)."""
    if ctx.runstate.state is RunState.INMIGRATE:
        ctx.migration.autostart = False
        return
    ctx.vm.stop(RunState.PAUSED)


@command("cont", refuse_in=(
    _in_colo("continue"),
    in_runstates("Resetting the Virtual Machine is required",
                 RunState.INTERNAL_ERROR, RunState.SHUTDOWN, RunState.GUEST_PANICKED),
    in_runstates("Migration is not finalized yet", RunState.FINISH_MIGRATE)))
def cont(ctx: CommandContext) -> None:
    """Resume the guest (RESUME, ``running``)."""
    if ctx.runstate.state is RunState.INMIGRATE:
        ctx.migration.autostart = True
        return
    ctx.vm.start()


@command("system_reset", refuse_in=(_in_colo("reset"),))
def system_reset(ctx: CommandContext) -> None:
    """Reset the guest: it restarts from its entry; RESET is emitted."""
    ctx.machine.reset()
    ctx.events.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})


@command("query-cpus-fast")
def query_cpus_fast(ctx: CommandContext) -> list[dict[str, object]]:
    """One entry per vCPU, as QEMU's CpuInfoFast."""
    return ctx.machine.vcpu_info()


@command("query-memory-size-summary")
def query_memory_size_summary(ctx: CommandContext) -> dict[str, int]:
    """Base memory (``-m``) and hot-plugged memory (none)."""
    return {"base-memory": ctx.machine.mem_bytes, "plugged-memory": 0}


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
