"""QMP command handlers and their dispatcher.

Handler modules register with ``@command("name")`` (:mod:`.registry`) at import.
:func:`load_handlers` imports every module in :data:`HANDLER_MODULES`; to add an area,
create ``qmpd/commands/<area>.py`` and append its name here (one line), add the
schema.json entries, and the daemon checks both sides match at start-up.
"""

from __future__ import annotations

import importlib

from qmpd.commands.registry import REGISTRY, CommandRegistry, command

#: Handler modules (relative to this package), imported by :func:`load_handlers`.
HANDLER_MODULES: list[str] = [
    "base",
    "hmp",
    "hmp_commands",
    "machine",
    "migration",
    "colo",
    "objects",
]


def load_handlers() -> CommandRegistry:
    """Import every handler module and return the filled registry."""
    for module in HANDLER_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return REGISTRY


__all__ = ["HANDLER_MODULES", "REGISTRY", "command", "load_handlers"]
