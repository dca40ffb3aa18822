"""The request envelope check: QEMU's ``qmp_dispatch_check_obj`` with its exact texts.

Users: :mod:`qmpd.qmp.session`, before a request reaches the command dispatcher.
QEMU walks the request's members in QDict order and reports the first problem, so
for a request with several bad members the same one is reported as by QEMU.
"""

from __future__ import annotations

from typing import Any

from qmpd.qmp.wire import qdict_order

_ALLOWED = frozenset({"execute", "arguments", "id"})
_ALLOWED_OOB = frozenset({"execute", "exec-oob", "arguments", "id"})


def check_envelope(request: dict[str, Any], allow_oob: bool) -> str | None:
    """Return QEMU's GenericError text for a malformed request, or None if it is fine."""
    allowed = _ALLOWED_OOB if allow_oob else _ALLOWED
    if request.keys() <= allowed:
        execute = request.get("execute")
        exec_oob = request.get("exec-oob")
        args = request.get("arguments", {})
        if ((execute is None) != (exec_oob is None)
                and isinstance(execute if exec_oob is None else exec_oob, str)
                and isinstance(args, dict)):
            return None
    return _slow_check(request, allow_oob)


def _slow_check(request: dict[str, Any], allow_oob: bool) -> str | None:
    exec_key: str | None = None
    for name in qdict_order(tuple(request)):
        value = request[name]
        if name == "execute" or (name == "exec-oob" and allow_oob):
            if not isinstance(value, str):
                return f"QMP input member '{name}' must be a string"
            if exec_key is not None:
                return f"QMP input member '{name}' clashes with '{exec_key}'"
            exec_key = name
        elif name == "arguments":
            if not isinstance(value, dict):
                return "QMP input member 'arguments' must be an object"
        elif name != "id":
            return f"QMP input member '{name}' is unexpected"
    if exec_key is None:
        return "QMP input lacks member 'execute'"
    return None
