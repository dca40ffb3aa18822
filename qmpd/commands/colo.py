"""COLO commands: x-colo-lost-heartbeat, query-colo-status, x-query-colo-stats, yank.

Thin handlers over :class:`qmpd.colo.manager.ColoManager` and, for ``yank``, the
migration manager (the owner of the ``migration`` yank instance); the texts are QEMU
7.2's. ``yank`` (allow-oob) cuts the migration connection at once: a plain migration
then fails, a COLO session loses its link, as QEMU's own COLO tests do before failing
over.
"""

from __future__ import annotations

from typing import Any

from qmpd.colo.state import ColoMode
from qmpd.commands.context import CommandContext
from qmpd.commands.gating import in_colo_modes
from qmpd.commands.hmp import hmp_info
from qmpd.commands.registry import command
from qmpd.errors import NotFoundError


@command("x-colo-lost-heartbeat", refuse_in=(
    in_colo_modes("The feature 'colo' is not enabled", ColoMode.NONE),))
def x_colo_lost_heartbeat(ctx: CommandContext) -> None:
    """Fail over: the secondary takes over, or the primary runs alone."""
    ctx.colo.lost_heartbeat()


@command("query-colo-status")
def query_colo_status(ctx: CommandContext) -> dict[str, str]:
    """COLO mode, the mode before the last failover, and why COLO was left."""
    return ctx.colo.query_status().to_qmp()


@command("x-query-colo-stats")
def x_query_colo_stats(ctx: CommandContext) -> dict[str, Any]:
    """Checkpoint counters and the most recent checkpoints (qmpd extension)."""
    return ctx.colo.stats.to_qmp()


@command("yank")
def yank(ctx: CommandContext, instances: list[dict[str, Any]]) -> None:
    """Cut the connections of yank instances; only ``migration`` exists in qmpd.

    The ``migration`` instance exists while a migration connection is open (plain or
    COLO). Every instance is checked before any is yanked (QEMU: DeviceNotFound
    ``Instance not found``, nothing yanked).
    """
    for inst in instances:
        if inst.get("type") != "migration" or not ctx.migration.has_connection:
            raise NotFoundError("Instance not found")
    ctx.migration.yank()


@hmp_info("colo", "show COLO status and checkpoint counters")
def info_colo(ctx: CommandContext, args: str) -> str:
    st = ctx.colo.query_status()
    return (f"COLO mode: {st.mode.value}\nlast mode: {st.last_mode.value}\n"
            f"reason: {st.reason.value}\ncheckpoints: {ctx.colo.stats.checkpoints}\n")
