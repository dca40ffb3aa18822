"""HMP migration, COLO and run-control commands, as QEMU 7.2's (hmp-commands.hx, hmp-cmds.c).

Users: ``qmp-shell -H`` users and scripts driving a node (or a COLO pair, following
QEMU's docs/COLO-FT.txt) through ``human-monitor-command``. Each command parses its
line with QEMU's ``args_type`` and calls the QMP handler (:func:`qmp_call`), so the
refusals and their texts are the QMP ones, printed as ``Error: TEXT``. The ``info``
subcommands live beside their QMP queries (:mod:`qmpd.commands.migration`).

``migrate_set_parameter`` converts its value as QEMU 7.2 does: by the member's schema
type through the string input visitor, ``max-bandwidth`` in MiB by default
(``qemu_strtosz_MiB``), ``block-bitmap-mapping`` only through QMP. qmpd's own
``x-colo-...`` parameters are accepted too (QEMU knows none of them).
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.context import CommandContext
from qmpd.commands.hmp import HmpFn, hmp_command, qmp_call
from qmpd.commands.hmp_args import HmpArgError, string_visit, strtosz

INT64_MAX = (1 << 63) - 1
SYNC_MIGRATION = "terminal does not allow synchronous migration, continuing detached\n"


def _invalid(value: str) -> HmpArgError:
    return HmpArgError(f"invalid parameter value: {value}")


@hmp_command("migrate", "[-d] [-b] [-i] [-r] uri",
             "migrate to URI (using -d to not wait for completion)\n"
             "\t\t\t -b for migration without shared storage with full copy of disk\n"
             "\t\t\t -i for migration without shared storage with incremental copy of "
             "disk (base image shared between src and destination)\n"
             "\t\t\t -r to resume a paused migration",
             args_type="detach:-d,blk:-b,inc:-i,resume:-r,uri:s")
async def hmp_migrate(ctx: CommandContext, args: dict[str, Any]) -> str:
    await qmp_call(ctx, "migrate", uri=args["uri"], blk=args.get("blk", False),
                   inc=args.get("inc", False), resume=args.get("resume", False))
    # the QMP monitor has no terminal to wait on: QEMU always continues detached there
    return "" if args.get("detach") else SYNC_MIGRATION


@hmp_command("migrate_set_capability", "capability state",
             "Enable/Disable the usage of a capability for migration",
             args_type="capability:s,state:b")
async def hmp_migrate_set_capability(ctx: CommandContext, args: dict[str, Any]) -> str:
    name = args["capability"]
    if name not in ctx.migration.config.spec.capabilities:
        raise _invalid(name)
    await qmp_call(ctx, "migrate-set-capabilities",
                   capabilities=[{"capability": name, "state": args["state"]}])
    return ""


def _parameter_value(ctx: CommandContext, name: str, text: str) -> Any:
    """QEMU 7.2 ``hmp_migrate_set_parameter``'s conversion of one value."""
    members = {m.name: m.type for m in ctx.schema.index.commands["migrate-set-parameters"].members}
    if name not in members:
        raise _invalid(name)
    if name == "block-bitmap-mapping":
        raise HmpArgError("The block-bitmap-mapping parameter can only be set through QMP")
    if name == "max-bandwidth":  # MiB by default, not bytes
        try:
            value = strtosz(text, "m")
        except ValueError:
            value = INT64_MAX + 1
        if value > INT64_MAX:
            raise HmpArgError(f"Invalid size {text}")
        return value
    kind = "size" if name == "downtime-limit" else members[name]  # QEMU visits a size
    enum: tuple[str, ...] = ()
    if kind == "StrOrNull":
        kind = "str"
    elif kind in ctx.schema.index.types:
        enum, kind = tuple(ctx.schema.index.types[kind].values), "enum"
    value = string_visit(name, kind, text, enum)
    if name == "xbzrle-cache-size" and value > INT64_MAX:
        raise HmpArgError(f"Invalid size {text}")
    return value


@hmp_command("migrate_set_parameter", "parameter value", "Set the parameter for migration",
             args_type="parameter:s,value:s")
async def hmp_migrate_set_parameter(ctx: CommandContext, args: dict[str, Any]) -> str:
    name = args["parameter"]
    value = _parameter_value(ctx, name, args["value"])
    await qmp_call(ctx, "migrate-set-parameters", **{name.replace("-", "_"): value})
    return ""


def _passthrough(qmp_name: str) -> HmpFn:
    async def run(ctx: CommandContext, args: dict[str, Any]) -> str:
        await qmp_call(ctx, qmp_name, **args)
        return ""
    return run


#: HMP commands that only call a QMP command (arguments named as its):
#: (names, params, help, args_type, QMP command), QEMU 7.2's hmp-commands.hx texts
PASSTHROUGH = (
    ("migrate_cancel", "", "cancel the current VM migration", "", "migrate_cancel"),
    ("migrate_incoming", "uri", "Continue an incoming migration from an -incoming defer",
     "uri:s", "migrate-incoming"),
    ("migrate_start_postcopy", "",
     "Followup to a migration command to switch the migration to postcopy mode. The "
     "postcopy-ram capability must be set on both source and destination before the "
     "original migration command .", "", "migrate-start-postcopy"),
    ("migrate_pause", "", "Pause an ongoing migration (postcopy-only)", "", "migrate-pause"),
    ("migrate_recover", "uri", "Continue a paused incoming postcopy migration", "uri:s",
     "migrate-recover"),
    ("x_colo_lost_heartbeat", "",
     "Tell COLO that heartbeat is lost,\n\t\t\ta failover or takeover is needed.", "",
     "x-colo-lost-heartbeat"),
    ("stop|s", "", "stop emulation", "", "stop"),
    ("cont|c", "", "resume emulation", "", "cont"),
    ("system_reset", "", "reset the system", "", "system_reset"),
)

for _names, _params, _help, _args_type, _qmp in PASSTHROUGH:
    hmp_command(_names, _params, _help, _args_type)(_passthrough(_qmp))
