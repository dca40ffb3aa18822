"""The command registry: ``@command("name")`` binds a handler to a schema.json command.

Users: per-area handler modules (``qmpd/commands/base.py``, later ``machine.py``,
``migration.py``, ``colo.py``) decorate their handlers; the dispatcher reads
:data:`REGISTRY`. A handler is ``fn(ctx, **arguments)`` (QMP argument names with
``-`` turned into ``_``; absent optional arguments are not passed), sync or
``async``, returning the command's return value (``None`` for commands without
``returns``) or raising :class:`qmpd.commands.errors.QMPError` / a layer error.
``needs_session=True`` also passes ``session=`` (the QMP connection; used by
``qmp_capabilities``). ``refuse_in=`` declares the command's gate: the run states and
COLO modes that refuse it, with QEMU's texts (:mod:`qmpd.commands.gating`), checked by
the dispatcher. Commands marked ``allow-oob`` in the schema must be sync.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from qmpd.commands.gating import Gate

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Handler:
    """One registered handler."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    needs_session: bool
    #: the run states / COLO modes that refuse the command (checked by the dispatcher)
    refuse_in: Gate = ()


class CommandRegistry:
    """Command name -> :class:`Handler`."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def command(self, name: str, *, needs_session: bool = False,
                refuse_in: Gate = ()) -> Callable[[F], F]:
        """Decorator registering ``fn`` as the handler of QMP command ``name``.

        :raise ValueError: if ``name`` already has a handler.
        """
        def register(fn: F) -> F:
            if name in self.handlers:
                raise ValueError(f"command {name} registered twice")
            self.handlers[name] = Handler(name, fn, inspect.iscoroutinefunction(fn),
                                          needs_session, refuse_in)
            return fn
        return register


#: The process-wide registry the daemon dispatches from.
REGISTRY = CommandRegistry()

#: ``@command("query-foo")``: register a handler in :data:`REGISTRY`.
command = REGISTRY.command
