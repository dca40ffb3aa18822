"""Migration commands: thin adapters from QMP to :class:`qmpd.migration.MigrationManager`.

Users: any QMP client (libvirt-style: ``migrate {"detach": true, "uri": ...}``,
``query-migrate``, ``migrate-set-capabilities`` with ``events``); qmp-shell ``-H``
(``info migrate``, ``info migrate_capabilities``, ``info migrate_parameters``).
Arguments were type-checked against schema.json by the dispatcher, and the run-state
refusals are the commands' gates (``refuse_in``, checked by the dispatcher); range
checks and the other refusals are the manager's (QEMU 7.2's texts).
"""

from __future__ import annotations

from typing import Any

from qmpd.colo.state import ColoMode
from qmpd.commands.context import CommandContext, SessionInfo
from qmpd.commands.errors import QMPError
from qmpd.commands.gating import in_colo_modes, in_runstates, outside_runstates
from qmpd.commands.hmp import hmp_info
from qmpd.commands.registry import command
from qmpd.machine.runstate import RunState
from qmpd.migration.fds import NoFdError

NO_BLOCK_MIGRATION = ("QEMU compiled without old-style (blk/-b, inc/-i) block migration")


@command("migrate", refuse_in=(
    in_runstates("Guest is waiting for an incoming migration", RunState.INMIGRATE),
    in_runstates("Can't migrate the vm that was paused due to previous migration",
                 RunState.POSTMIGRATE)))
def migrate(ctx: CommandContext, uri: str, blk: bool = False, inc: bool = False,
            detach: bool = True, resume: bool = False) -> None:
    """Start an outgoing migration to ``uri``; ``detach`` is accepted and ignored."""
    if blk or inc:
        raise QMPError(NO_BLOCK_MIGRATION)
    ctx.migration.start(uri, resume=resume)


@command("migrate-incoming", refuse_in=(
    # a COLO secondary's incoming migration is still going on (status ``colo``)
    in_colo_modes("The incoming migration has already been started", ColoMode.SECONDARY),
    outside_runstates("'-incoming' was not specified on the command line",
                      RunState.INMIGRATE)))
def migrate_incoming(ctx: CommandContext, uri: str) -> None:
    """Start listening for an incoming migration (after ``-incoming defer``)."""
    ctx.migration.incoming(uri)


@command("getfd", needs_session=True)
def getfd(ctx: CommandContext, session: SessionInfo, fdname: str) -> None:
    """Keep the descriptor sent with this command as ``fdname`` (for ``fd:`` URIs)."""
    fd = session.take_fd()
    if fd is None:
        raise NoFdError()
    ctx.migration.fds.add(fdname, fd)


@command("closefd")
def closefd(ctx: CommandContext, fdname: str) -> None:
    """Close a descriptor ``getfd`` kept."""
    ctx.migration.fds.remove(fdname)


@command("migrate_cancel")
def migrate_cancel(ctx: CommandContext) -> None:
    """Cancel the outgoing migration, if any."""
    ctx.migration.cancel()


@command("query-migrate")
def query_migrate(ctx: CommandContext) -> dict[str, object]:
    """MigrationInfo of the latest migration; ``{}`` before any."""
    return ctx.migration.query()


@command("query-migrate-capabilities")
def query_migrate_capabilities(ctx: CommandContext) -> list[dict[str, object]]:
    """Every capability with its state, QEMU 7.2's order."""
    return ctx.migration.config.query_capabilities()


@command("migrate-set-capabilities")
def migrate_set_capabilities(ctx: CommandContext,
                             capabilities: list[dict[str, object]]) -> None:
    """Set capabilities, all or nothing."""
    ctx.migration.config.set_capabilities(capabilities)


@command("query-migrate-parameters")
def query_migrate_parameters(ctx: CommandContext) -> dict[str, object]:
    """Every parameter, QEMU 7.2's order."""
    return ctx.migration.config.query_parameters()


@command("migrate-set-parameters")
def migrate_set_parameters(ctx: CommandContext, **params: Any) -> None:
    """Set parameters (members given directly, as QEMU's boxed command)."""
    ctx.migration.config.set_parameters({k.replace("_", "-"): v for k, v in params.items()})



# -- postcopy (QEMU 7.2 has these; qmpd refuses postcopy-ram and never enters a postcopy
# state, so each gives QEMU's refusal for the state it checks first) -------------------

@command("migrate-start-postcopy")
def migrate_start_postcopy(ctx: CommandContext) -> None:
    """QEMU 7.2 ``qmp_migrate_start_postcopy`` without postcopy-ram."""
    raise QMPError("Enable postcopy with migrate_set_capability before the start of migration")


@command("migrate-pause")
def migrate_pause(ctx: CommandContext) -> None:
    """QEMU 7.2 ``qmp_migrate_pause`` outside postcopy-active (allow-oob)."""
    raise QMPError("migrate-pause is currently only supported during postcopy-active state")


@command("migrate-recover")
def migrate_recover(ctx: CommandContext, uri: str) -> None:
    """QEMU 7.2 ``qmp_migrate_recover`` outside postcopy-paused (allow-oob)."""
    raise QMPError("Migrate recover can only be run when postcopy is paused.")


# -- HMP ----------------------------------------------------------------------------

def _on(value: object) -> str:
    return "on" if value else "off"


@hmp_info("migrate", "show migration status")
def info_migrate(ctx: CommandContext, args: str) -> str:
    """QEMU 7.2 ``hmp_info_migrate``."""
    info = ctx.migration.query()
    out = ["globals:", "store-global-state: on", "only-migratable: off",
           "send-configuration: on", "send-section-footer: on",
           "decompress-error-check: on", "clear-bitmap-shift: 18"]
    if "status" in info:
        line = f"Migration status: {info['status']}"
        if info["status"] == "failed" and "error-desc" in info:
            line += f" ({info['error-desc']})"
        out.append(line)
        out.append(f"total time: {info.get('total-time', 0)} ms")
        for key, label in (("expected-downtime", "expected downtime"),
                           ("downtime", "downtime"), ("setup-time", "setup")):
            if key in info:
                out.append(f"{label}: {info[key]} ms")
    ram = info.get("ram")
    if isinstance(ram, dict):
        out += [f"transferred ram: {ram['transferred'] >> 10} kbytes",
                f"throughput: {ram['mbps']:0.2f} mbps",
                f"remaining ram: {ram['remaining'] >> 10} kbytes",
                f"total ram: {ram['total'] >> 10} kbytes",
                f"duplicate: {ram['duplicate']} pages",
                f"skipped: {ram['skipped']} pages",
                f"normal: {ram['normal']} pages",
                f"normal bytes: {ram['normal-bytes'] >> 10} kbytes",
                f"dirty sync count: {ram['dirty-sync-count']}",
                f"page size: {ram['page-size'] >> 10} kbytes",
                f"multifd bytes: {ram['multifd-bytes'] >> 10} kbytes",
                f"pages-per-second: {ram['pages-per-second']}"]
        if ram["dirty-pages-rate"]:
            out.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
        if ram["precopy-bytes"]:
            out.append(f"precopy ram: {ram['precopy-bytes'] >> 10} kbytes")
        if ram["downtime-bytes"]:
            out.append(f"downtime ram: {ram['downtime-bytes'] >> 10} kbytes")
        if ram["postcopy-bytes"]:
            out.append(f"postcopy ram: {ram['postcopy-bytes'] >> 10} kbytes")
    if "cpu-throttle-percentage" in info:
        out.append(f"cpu throttle percentage: {info['cpu-throttle-percentage']}")
    addrs = info.get("socket-address")
    if isinstance(addrs, list):
        out.append("socket address: [")
        for a in addrs:
            uri = f"unix:{a['path']}" if a["type"] == "unix" else f"tcp:{a['host']}:{a['port']}"
            out.append(f"\t{uri}")
        out.append("]")
    return "".join(f"{line}\n" for line in out)


@hmp_info("migrate_capabilities", "show current migration capabilities")
def info_migrate_capabilities(ctx: CommandContext, args: str) -> str:
    """QEMU 7.2 ``hmp_info_migrate_capabilities``."""
    return "".join(f"{c['capability']}: {_on(c['state'])}\n"
                   for c in ctx.migration.config.query_capabilities())


#: QEMU 7.2 ``hmp_info_migrate_parameters``: which schema members it prints, in its own
#: order (not the QMP one) and units; the value is quoted where the unit is "'".
HMP_PARAMETERS = (
    ("announce-initial", " ms"), ("announce-max", " ms"), ("announce-rounds", ""),
    ("announce-step", " ms"), ("compress-level", ""), ("compress-threads", ""),
    ("compress-wait-thread", ""), ("decompress-threads", ""),
    ("throttle-trigger-threshold", ""), ("cpu-throttle-initial", ""),
    ("cpu-throttle-increment", ""), ("cpu-throttle-tailslow", ""),
    ("max-cpu-throttle", ""), ("tls-creds", "'"), ("tls-hostname", "'"),
    ("max-bandwidth", " bytes/second"), ("downtime-limit", " ms"),
    ("x-checkpoint-delay", " ms"), ("block-incremental", ""), ("multifd-channels", ""),
    ("multifd-compression", ""), ("xbzrle-cache-size", " bytes"),
    ("max-postcopy-bandwidth", ""), ("tls-authz", "'"),
)
#: The MigrationParameters members QEMU 7.2's HMP does not print (block-bitmap-mapping:
#: only once set, which qmpd refuses; the last two are qmpd's).
HMP_NOT_SHOWN = ("multifd-zlib-level", "multifd-zstd-level", "block-bitmap-mapping",
                 "x-colo-pipeline", "x-colo-max-dirty-pages")


@hmp_info("migrate_parameters", "show current migration parameters")
def info_migrate_parameters(ctx: CommandContext, args: str) -> str:
    """QEMU 7.2 ``hmp_info_migrate_parameters``."""
    params = ctx.migration.config.query_parameters()
    lines = []
    for name, unit in HMP_PARAMETERS:
        value = params[name]
        if isinstance(value, bool):
            text = _on(value)
        elif unit == "'":
            text = f"'{value}'"
        else:
            text = f"{value}{unit}"
        lines.append(f"{name}: {text}\n")
    return "".join(lines)
