"""COLO commands: x-colo-lost-heartbeat, query-colo-status, x-query-colo-stats, yank.

Thin handlers over :class:`qmpd.colo.manager.ColoManager`; the texts are QEMU 7.2's.
``yank`` (allow-oob) with a ``migration`` instance cuts the migration/COLO link at
once, as QEMU's own COLO tests do before failing over.
"""

from __future__ import annotations

from typing import Any

from qmpd.colo.manager import ColoManager
from qmpd.commands.context import CommandContext
from qmpd.commands.hmp import hmp_info
from qmpd.commands.registry import command
from qmpd.errors import QMPError


def _colo(ctx: CommandContext) -> ColoManager:
    if not isinstance(ctx.colo, ColoManager):
        raise QMPError("The feature 'colo' is not enabled")
    return ctx.colo


@command("x-colo-lost-heartbeat")
def x_colo_lost_heartbeat(ctx: CommandContext) -> None:
    """Fail over: the secondary takes over, or the primary runs alone."""
    _colo(ctx).lost_heartbeat()


@command("query-colo-status")
def query_colo_status(ctx: CommandContext) -> dict[str, str]:
    """COLO mode, the mode before the last failover, and why COLO was left."""
    return _colo(ctx).query_status().to_qmp()


@command("x-query-colo-stats")
def x_query_colo_stats(ctx: CommandContext) -> dict[str, Any]:
    """Checkpoint counters and the most recent checkpoints (qmpd extension)."""
    return _colo(ctx).stats.to_qmp()


@command("yank")
def yank(ctx: CommandContext, instances: list[dict[str, Any]]) -> None:
    """Cut the connections of yank instances; only ``migration`` exists in qmpd.

    Every instance is checked before any is yanked (QEMU: DeviceNotFound
    ``Instance not found``, nothing yanked).
    """
    colo = ctx.colo if isinstance(ctx.colo, ColoManager) else None
    mig_yank = getattr(ctx.migration, "yank", None)
    live = (colo is not None and colo.has_link()) or (
        callable(mig_yank) and bool(getattr(ctx.migration, "has_connection", False)))
    for inst in instances:
        if inst.get("type") != "migration" or not live:
            raise QMPError("Instance not found", "DeviceNotFound")
    if colo is not None and colo.yank():
        return
    if callable(mig_yank):
        mig_yank()


@hmp_info("colo", "show COLO status and checkpoint counters")
def info_colo(ctx: CommandContext, args: str) -> str:
    colo = _colo(ctx)
    st = colo.query_status()
    return (f"COLO mode: {st.mode.value}\nlast mode: {st.last_mode.value}\n"
            f"reason: {st.reason.value}\ncheckpoints: {colo.stats.checkpoints}\n")
