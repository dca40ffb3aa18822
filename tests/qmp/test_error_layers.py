"""Errors are structured per layer and mapped once: QMPError stays in the command layer.

Below the command boundary (schema, config, options, machine, events, migration, COLO)
no module imports ``QMPError`` (nor anything else of :mod:`qmpd.commands`); those
layers raise typed errors from :mod:`qmpd.errors` or their own subclasses, and only
the dispatcher turns them into QMP ``{class, desc}``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qmpd

PACKAGE = Path(qmpd.__file__).parent
#: the layers below qmpd/commands (L0-L4 of docs/INTERFACES.md)
BELOW = ["errors.py", "config.py", "options.py", "events.py", "schema", "machine",
         "migration", "colo"]


def _modules() -> list[Path]:
    found: list[Path] = []
    for entry in BELOW:
        path = PACKAGE / entry
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path] * path.exists()
    return found


def _command_layer_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported = {alias.name for alias in node.names}
            if node.module.startswith("qmpd.commands") or "QMPError" in imported:
                names.append(f"from {node.module} import {', '.join(sorted(imported))}")
        elif isinstance(node, ast.Import):
            names += [f"import {a.name}" for a in node.names
                      if a.name.startswith("qmpd.commands")]
    return names


def test_no_module_below_the_command_layer_imports_qmperror() -> None:
    modules = _modules()
    assert len(modules) > 40  # the walk found the layers
    offenders = {str(p.relative_to(PACKAGE)): imports for p in modules
                 if (imports := _command_layer_imports(p))}
    assert offenders == {}


def test_qmperror_lives_in_the_command_layer_only() -> None:
    import qmpd.errors
    from qmpd.commands.errors import QMPError

    assert not hasattr(qmpd.errors, "QMPError")
    assert QMPError.__module__ == "qmpd.commands.errors"
