"""Migration capabilities and parameters: schema.json's names, order, types and defaults.

Users: the manager (reads them when a migration starts and while it runs), the QMP
handlers (``query-/migrate-set-capabilities``, ``query-/migrate-set-parameters``) and
COLO (reads its parameters at each epoch; listens for ``x-checkpoint-delay``).

One source, schema.json (:class:`MigrationSpec`): the capabilities are the enum
``MigrationCapability`` (QEMU 7.2's, in its order); the parameters are the members of
``MigrationParameters`` with their ``default``; a request is type-checked by the
compiled argument visitor of ``migrate-set-capabilities`` / ``migrate-set-parameters``
(QEMU's input-visitor texts). What this module adds is QEMU 7.2's range rules
(``migrate_params_check``, its order and texts) and which capabilities qmpd
implements. Values are validated whole before any is applied, as QEMU's
``migrate_params_test_apply`` + ``migrate_params_check``: a refused request changes
nothing. The one deliberate difference from QEMU 7.2 is the default
``x-checkpoint-delay`` of 200 ms (QEMU 2.8's; 7.2 has 20000), stated in schema.json.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from qmpd.errors import ArgumentRangeError, ArgumentValueError
from qmpd.migration.errors import MigrationInProgressError
from qmpd.schema import Schema, SchemaError
from qmpd.schema import load as load_schema

log = logging.getLogger(__name__)

#: The capabilities qmpd implements; the others may only be set to false.
#: ``return-path``: qmpd always opens the return path (the source completes only after
#: the destination acknowledges a good load); the flag is carried in the stream header.
#: ``auto-converge``: :mod:`qmpd.migration.throttle`.
IMPLEMENTED_CAPABILITIES: Final[frozenset[str]] = frozenset(
    {"events", "x-colo", "return-path", "auto-converge"})

#: Parameters QEMU 7.2 has that qmpd refuses to set; they have no default and are
#: absent from ``query-migrate-parameters`` (as in QEMU 7.2 until set).
REFUSED_PARAMETERS: Final[frozenset[str]] = frozenset({"block-bitmap-mapping"})

MAX_MIGRATE_DOWNTIME_MS: Final = 2000 * 1000

#: ``accepts(value, merged parameters)``
Accepts = Callable[[int, Mapping[str, Any]], bool]


def _between(low: int, high: int) -> Accepts:
    return lambda value, _params: low <= value <= high


def _power_of_two_page(value: int, _params: Mapping[str, Any]) -> bool:
    return value >= 4096 and not value & (value - 1)


def _from_initial_to_99(value: int, params: Mapping[str, Any]) -> bool:
    initial: int = params["cpu-throttle-initial"]
    return initial <= value <= 99


#: QEMU 7.2 ``migrate_params_check``, in its order: (member, accepts, what QEMU says it
#: expects). The text names the member in C style (``compress_level``), as QEMU does.
RANGE_RULES: Final[tuple[tuple[str, Accepts, str], ...]] = (
    ("compress-level", _between(0, 9), "a value between 0 and 9"),
    ("compress-threads", _between(1, 255), "a value between 1 and 255"),
    ("decompress-threads", _between(1, 255), "a value between 1 and 255"),
    ("throttle-trigger-threshold", _between(1, 100), "an integer in the range of 1 to 100"),
    ("cpu-throttle-initial", _between(1, 99), "an integer in the range of 1 to 99"),
    ("cpu-throttle-increment", _between(1, 99), "an integer in the range of 1 to 99"),
    ("downtime-limit", _between(0, MAX_MIGRATE_DOWNTIME_MS),
     "an integer in the range of 0 to (2000 * 1000) ms"),
    ("multifd-channels", _between(1, 255), "a value between 1 and 255"),
    ("multifd-zlib-level", _between(0, 9), "a value between 0 and 9"),
    ("multifd-zstd-level", _between(0, 20), "a value between 0 and 20"),
    ("xbzrle-cache-size", _power_of_two_page,
     "a power of two no less than the target page size"),
    ("max-cpu-throttle", _from_initial_to_99,
     "an integer in the range of cpu_throttle_initial to 99"),
    ("announce-initial", _between(0, 100000), "a value between 0 and 100000"),
    ("announce-max", _between(0, 100000), "a value between 0 and 100000"),
    ("announce-rounds", _between(0, 1000), "a value between 0 and 1000"),
    ("announce-step", _between(1, 10000), "a value between 0 and 10000"),
)

ParamListener = Callable[[str, object], None]


class UnsupportedCapabilityError(ArgumentValueError):
    """A capability qmpd does not implement, set to true (``value`` names it)."""

    def __str__(self) -> str:
        return f"Migration capability '{self.value}' is not supported by qmpd"


class UnsupportedParameterError(ArgumentValueError):
    """A parameter qmpd does not implement (``name`` names it)."""

    def __str__(self) -> str:
        return f"Migration parameter '{self.name}' is not supported by qmpd"


class MigrationSpec:
    """What schema.json says about migration capabilities and parameters.

    :raise SchemaError: a parameter without a default, ``migrate-set-parameters`` not
        listing exactly the ``MigrationParameters`` members in their order, or a
        capability or range rule naming something the schema does not have.
    """

    def __init__(self, schema: Schema) -> None:
        index = schema.index
        #: Every MigrationCapability, in the schema's (QEMU 7.2's) order.
        self.capabilities: tuple[str, ...] = tuple(index.types["MigrationCapability"].values)
        members = index.types["MigrationParameters"].members
        #: Every parameter, in the schema's (QEMU 7.2's) order.
        self.parameters: tuple[str, ...] = tuple(m.name for m in members)
        #: Each parameter's value before any set.
        self.defaults: dict[str, object] = {m.name: m.default for m in members
                                            if m.name not in REFUSED_PARAMETERS}
        #: ``check(arguments) -> arguments``: the commands' argument visitors.
        self.check_capabilities = schema.arg_checkers["migrate-set-capabilities"]
        self.check_parameters = schema.arg_checkers["migrate-set-parameters"]
        missing = [name for name, value in self.defaults.items() if value is None]
        if missing:
            raise SchemaError(f"MigrationParameters: no default for {missing}")
        settable = tuple(m.name for m in index.commands["migrate-set-parameters"].members)
        if settable != self.parameters:
            raise SchemaError("migrate-set-parameters must list the MigrationParameters "
                              "members in their order")
        unknown = (IMPLEMENTED_CAPABILITIES - set(self.capabilities)) | \
            {name for name, _, _ in RANGE_RULES if name not in self.defaults}
        if unknown:
            raise SchemaError(f"migration config names {sorted(unknown)}, not in the schema")


@functools.cache
def default_spec() -> MigrationSpec:
    """The spec of the schema.json shipped with qmpd (loaded once per process)."""
    return MigrationSpec(load_schema())


def check_ranges(params: Mapping[str, Any]) -> None:
    """QEMU 7.2 ``migrate_params_check`` over a whole (merged) parameter set.

    :raise ArgumentRangeError: for the first rule (in QEMU's order) that fails.
    """
    for name, accepts, expects in RANGE_RULES:
        if not accepts(params[name], params):
            raise ArgumentRangeError(name.replace("-", "_"), expects)


class MigrationConfig:
    """Capabilities and parameters of this process's migrations.

    :param spec: what the schema says (default: the shipped schema.json's).
    :param is_running: tells whether an outgoing migration is in progress; capability
        changes are refused then, with QEMU's text.
    """

    def __init__(self, *, spec: MigrationSpec | None = None,
                 is_running: Callable[[], bool] = lambda: False) -> None:
        self.spec = default_spec() if spec is None else spec
        self._caps: dict[str, bool] = dict.fromkeys(self.spec.capabilities, False)
        self._params: dict[str, Any] = dict(self.spec.defaults)
        self._is_running = is_running
        self._listeners: list[ParamListener] = []

    # -- capabilities -------------------------------------------------------------
    def capability(self, name: str) -> bool:
        """The state of capability ``name``."""
        return self._caps[name]

    def query_capabilities(self) -> list[dict[str, object]]:
        """``query-migrate-capabilities``: every capability, QEMU's order."""
        return [{"capability": k, "state": v} for k, v in self._caps.items()]

    def set_capabilities(self, caps: Sequence[Mapping[str, object]]) -> None:
        """``migrate-set-capabilities``: all or nothing.

        :raise ArgumentError: a malformed list (QEMU's visitor texts), or
            :class:`UnsupportedCapabilityError` for an unimplemented one set to true.
        :raise MigrationInProgressError: an outgoing migration is in progress.
        """
        checked = self.spec.check_capabilities({"capabilities": [dict(c) for c in caps]})
        if self._is_running():
            raise MigrationInProgressError()
        new = dict(self._caps)
        for i, item in enumerate(checked["capabilities"]):
            name, state = item["capability"], item["state"]
            if state and name not in IMPLEMENTED_CAPABILITIES:
                raise UnsupportedCapabilityError(f"capabilities[{i}].capability", name)
            new[name] = state
        self._caps = new

    # -- parameters ---------------------------------------------------------------
    def parameter(self, name: str) -> object:
        """The value of parameter ``name``."""
        value: object = self._params[name]
        return value

    def int_parameter(self, name: str) -> int:
        """An integer parameter's value."""
        value: int = self._params[name]
        return value

    def query_parameters(self) -> dict[str, object]:
        """``query-migrate-parameters``: every parameter, QEMU 7.2's order."""
        return dict(self._params)

    def set_parameters(self, args: Mapping[str, object]) -> None:
        """``migrate-set-parameters``: validate the merged set, then apply and notify.

        :raise ArgumentError: an unknown member or a bad type (QEMU's visitor texts),
            or :class:`ArgumentRangeError` from QEMU's range rules.
        """
        merged = dict(self._params)
        checked = self.spec.check_parameters(dict(args))
        for name in REFUSED_PARAMETERS.intersection(checked):
            raise UnsupportedParameterError(name, "")
        for name, value in checked.items():
            merged[name] = "" if value is None else value  # StrOrNull: null resets to ""
        check_ranges(merged)
        self._params = merged
        for name in args:  # QEMU reacts to every set, changed or not
            log.info("migration parameter %s = %r", name, merged[name])
            for cb in self._listeners:
                cb(name, merged[name])

    def add_listener(self, cb: ParamListener) -> None:
        """Call ``cb(name, value)`` after each parameter set (COLO: x-checkpoint-delay)."""
        self._listeners.append(cb)
