"""The dispatcher: negotiation -> lookup -> OOB check -> arguments -> gate -> handler -> return.

Users: the QMP session calls :meth:`CommandDispatcher.dispatch` (it implements
:class:`qmpd.qmp.session.Dispatcher`). Built once by the daemon; construction fails
with :class:`qmpd.schema.SchemaError` unless the registry and schema.json list exactly
the same commands.

The gate (the run states and COLO modes that refuse a command, declared with
``@command(..., refuse_in=...)``, :mod:`qmpd.commands.gating`) is checked here and
nowhere else, after the arguments and before the handler.

Errors are mapped to QMP here and nowhere else, by :data:`ERROR_CLASSES` (the first
entry the error is an instance of gives the class; the desc is ``str(err)``, QEMU's
text): ``QMPError`` -> its own class and desc; ``NotFoundError`` -> DeviceNotFound;
any other ``QmpdError`` (argument, machine, migration, COLO) -> GenericError; anything
else is a bug: logged with its traceback and answered GenericError, never fatal.
A return value that does not match schema.json is logged and answered GenericError.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from qmpd.commands.context import CommandContext, SessionInfo
from qmpd.commands.errors import QMPError
from qmpd.commands.gating import refusal
from qmpd.commands.registry import CommandRegistry, Handler
from qmpd.errors import NotFoundError, QmpdError
from qmpd.schema import Schema, SchemaError

log = logging.getLogger(__name__)

Outcome = tuple[str | None, Any]

_NEGOTIATE = ("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")

#: Error type -> QMP class, first match wins (``QMPError`` carries its own class).
ERROR_CLASSES: tuple[tuple[type[QmpdError], str], ...] = (
    (NotFoundError, "DeviceNotFound"),
    (QmpdError, "GenericError"),
)


@dataclass(frozen=True, kw_only=True)
class _Entry(Handler):
    """A handler joined with what the schema says of its command (one look-up a request)."""

    allow_oob: bool
    check: Callable[[Any], Any]
    has_args: bool
    py_names: dict[str, str]
    returns: TypeAdapter[Any] | None


class CommandDispatcher:
    """Runs QMP commands for sessions."""

    def __init__(self, ctx: CommandContext, registry: CommandRegistry, schema: Schema) -> None:
        self._ctx = ctx
        schema_names = set(schema.index.commands)
        handler_names = set(registry.handlers)
        if schema_names != handler_names:
            missing = sorted(schema_names - handler_names)
            extra = sorted(handler_names - schema_names)
            raise SchemaError("schema.json and command handlers disagree: "
                              f"no handler for {missing}, no schema entry for {extra}")
        self._table: dict[str, _Entry] = {}
        for name, d in schema.index.commands.items():
            handler = registry.handlers[name]
            if d.allow_oob and handler.is_async:
                raise SchemaError(f"command {name} allows OOB but its handler is async")
            self._table[name] = _Entry(
                **vars(handler), allow_oob=d.allow_oob, check=schema.arg_checkers[name],
                has_args=bool(d.members),
                py_names={m.name: m.name.replace("-", "_") for m in d.members},
                returns=schema.return_model(name))

    def dispatch(self, session: SessionInfo, name: str, args: dict[str, Any],
                 oob: bool) -> Outcome | Awaitable[Outcome]:
        """Run one command; the outcome is ``(None, value)`` or ``(class, desc)``."""
        entry = self._table.get(name)
        if not session.negotiated and name != "qmp_capabilities":
            return _NEGOTIATE
        if entry is None:
            return ("CommandNotFound", f"The command {name} has not been found")
        if oob and not entry.allow_oob:
            return ("GenericError", f"The command {name} does not support OOB")
        try:
            if args or entry.has_args:
                checked = entry.check(args)
                names = entry.py_names
                kwargs = {names[k]: v for k, v in checked.items()}
            else:
                kwargs = {}
            if entry.refuse_in:
                text = refusal(entry.refuse_in, self._ctx.runstate.state, self._ctx.colo.mode)
                if text is not None:
                    return ("GenericError", text)
            if entry.needs_session:
                kwargs["session"] = session
            if entry.is_async:
                return self._run_async(entry, kwargs)
            result = entry.fn(self._ctx, **kwargs)
        except Exception as err:
            return _map_error(entry.name, err)
        return self._shape(entry, result)

    async def _run_async(self, entry: _Entry, kwargs: dict[str, Any]) -> Outcome:
        try:
            result = await entry.fn(self._ctx, **kwargs)
        except Exception as err:
            return _map_error(entry.name, err)
        return self._shape(entry, result)

    @staticmethod
    def _shape(entry: _Entry, result: Any) -> Outcome:
        if entry.returns is None:
            if result is not None:
                log.error("command %s returned %r but schema.json has no 'returns'",
                          entry.name, result)
                return ("GenericError", f"internal error: {entry.name} returned a value")
            return (None, {})
        try:
            entry.returns.validate_python(result)
        except ValidationError as err:
            log.error("command %s: return value does not match schema.json: %s",
                      entry.name, err)
            return ("GenericError", f"internal error: {entry.name} returned a bad value")
        return (None, result)


def _map_error(name: str, err: Exception) -> Outcome:
    if isinstance(err, QMPError):
        return (err.error_class, err.desc)
    for kind, error_class in ERROR_CLASSES:
        if isinstance(err, kind):
            return (error_class, str(err))
    log.exception("command %s failed unexpectedly", name)
    return ("GenericError", f"internal error: {err}")
