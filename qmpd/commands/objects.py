"""Object commands: ``object-add`` and ``object-del`` (QEMU 7.2 qom/qom-qmp-cmds.c).

Thin handlers over :class:`qmpd.objects.ObjectStore` (held by the migration manager,
whose ``tls-creds`` parameter names these objects). The only type is
``tls-creds-x509``; the arguments are checked by the schema visitor with QEMU's texts,
the rest (files, duplicates, unknown ids) by the store.
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.context import CommandContext
from qmpd.commands.registry import command


@command("object-add")
def object_add(ctx: CommandContext, qom_type: str, id: str, **props: Any) -> None:
    """Create an object (``-object`` at run time)."""
    ctx.migration.objects.add(qom_type, id, {k.replace("_", "-"): v for k, v in props.items()})


@command("object-del")
def object_del(ctx: CommandContext, id: str) -> None:
    """Delete an object; a migration that already uses it keeps its copy."""
    ctx.migration.objects.delete(id)
