"""The import contract: layers, a daemon without client tools, OS access in machine only.

The static contract lives in pyproject.toml (``[tool.importlinter]``, run by ``make
lint``); this test runs it too, so a layer violation fails the suite with the chain of
imports that breaks it. The runtime check adds what a static graph cannot see: the
modules a started daemon really loads (handler modules are imported by name).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_import_linter_contracts_are_kept() -> None:
    proc = subprocess.run([str(BIN / "lint-imports"), "--no-logo", "--no-cache"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def test_the_daemon_loads_no_client_tool() -> None:
    """Everything qmpd's entry point and its handlers import: no qmpd.testing/qmpd.tools."""
    code = ("import json, sys, qmpd.cli, qmpd.daemon, qmpd.commands as c; "
            "c.load_handlers(); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('qmpd'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, cwd=REPO, timeout=60, check=True).stdout)
    assert "qmpd.daemon" in loaded and "qmpd.commands.colo" in loaded
    assert [m for m in loaded if m.startswith(("qmpd.testing", "qmpd.tools"))] == []
