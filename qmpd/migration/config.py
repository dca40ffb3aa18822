"""Migration capabilities and parameters: QEMU 7.2's names, order, defaults and texts.

Users: the manager (reads them when a migration starts and while it runs), the QMP
handlers (``query-/migrate-set-capabilities``, ``query-/migrate-set-parameters``) and
COLO (listens for ``x-checkpoint-delay``). Values are validated whole before any is
applied, as QEMU's ``migrate_params_test_apply`` + ``migrate_params_check``: a refused
request changes nothing. The one deliberate difference from QEMU 7.2 is the default
``x-checkpoint-delay`` of 200 ms (QEMU 2.8's; 7.2 has 20000).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from qmpd.errors import QMPError

log = logging.getLogger(__name__)

#: Every MigrationCapability of QEMU 7.2, in its schema order.
CAPABILITIES: Final[tuple[str, ...]] = (
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
)

#: The capabilities qmpd implements; the others may only be set to false.
#: ``return-path``: qmpd always opens the return path (the source completes only after
#: the destination acknowledges a good load); the flag is carried in the stream header.
IMPLEMENTED_CAPABILITIES: Final[frozenset[str]] = frozenset({"events", "x-colo", "return-path"})

MIGRATION_IN_PROGRESS: Final = "There's a migration process in progress"

_U8, _U32, _U64 = (1 << 8) - 1, (1 << 32) - 1, (1 << 64) - 1
MAX_MIGRATE_DOWNTIME_MS: Final = 2000 * 1000

# name -> (kind, default); kind is the QAPI type. Order = QEMU 7.2 MigrationParameters.
_PARAMS: Final[dict[str, tuple[str, object]]] = {
    "announce-initial": ("size", 50),
    "announce-max": ("size", 550),
    "announce-rounds": ("size", 5),
    "announce-step": ("size", 100),
    "compress-level": ("uint8", 1),
    "compress-threads": ("uint8", 8),
    "compress-wait-thread": ("bool", True),
    "decompress-threads": ("uint8", 2),
    "throttle-trigger-threshold": ("uint8", 50),
    "cpu-throttle-initial": ("uint8", 20),
    "cpu-throttle-increment": ("uint8", 10),
    "cpu-throttle-tailslow": ("bool", False),
    "tls-creds": ("str", ""),
    "tls-hostname": ("str", ""),
    "tls-authz": ("str", ""),
    "max-bandwidth": ("size", 32 << 20),
    "downtime-limit": ("uint64", 300),
    "x-checkpoint-delay": ("uint32", 200),
    "block-incremental": ("bool", False),
    "multifd-channels": ("uint8", 2),
    "xbzrle-cache-size": ("size", 64 << 20),
    "max-postcopy-bandwidth": ("size", 0),
    "max-cpu-throttle": ("uint8", 99),
    "multifd-compression": ("enum", "none"),
    "multifd-zlib-level": ("uint8", 1),
    "multifd-zstd-level": ("uint8", 1),
    # qmpd extension: pipelined COLO checkpoints (False = QEMU's transaction order).
    "x-colo-pipeline": ("bool", True),
    # qmpd extension: start a COLO checkpoint early once this many pages are dirty (0: off).
    "x-colo-max-dirty-pages": ("uint64", 0),
}
PARAMETERS: Final[tuple[str, ...]] = tuple(_PARAMS)
MULTIFD_COMPRESSION: Final = ("none", "zlib", "zstd")

ParamListener = Callable[[str, object], None]


def _expects(name: str, what: str) -> QMPError:
    return QMPError(f"Parameter '{name}' expects {what}")


def _visit(name: str, kind: str, value: object) -> object:
    """Type-check one member like QEMU's QObject input visitor (qapi/qobject-input-visitor.c)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise QMPError(f"Invalid parameter type for '{name}', expected: boolean")
        return value
    if kind == "str":
        if value is None:  # StrOrNull: null resets to ""
            return ""
        if not isinstance(value, str):
            raise QMPError(f"Invalid parameter type for '{name}', expected: string")
        return value
    if kind == "enum":
        if not isinstance(value, str):
            raise QMPError(f"Invalid parameter type for '{name}', expected: string")
        if value not in MULTIFD_COMPRESSION:
            raise QMPError(f"Parameter '{name}' does not accept value '{value}'")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise QMPError(f"Invalid parameter type for '{name}', expected: integer")
    if value < -(1 << 63) or value > _U64:
        raise _expects(name, "uint64" if kind in ("uint64", "size") else f"{kind}_t")
    as_u64 = value & _U64  # QEMU casts negative int64 input to uint64
    limit = {"uint8": _U8, "uint32": _U32}.get(kind)
    if limit is not None and as_u64 > limit:
        raise _expects(name, f"{kind}_t")
    return as_u64


def _check(p: Mapping[str, object]) -> None:
    """QEMU 7.2 ``migrate_params_check`` over the merged set, in QEMU's order and texts."""

    def num(name: str) -> int:
        v = p[name]
        assert isinstance(v, int)
        return v

    def bad(cname: str, what: str) -> QMPError:
        return _expects(cname, what)

    if num("compress-level") > 9:
        raise bad("compress_level", "a value between 0 and 9")
    if num("compress-threads") < 1:
        raise bad("compress_threads", "a value between 1 and 255")
    if num("decompress-threads") < 1:
        raise bad("decompress_threads", "a value between 1 and 255")
    if not 1 <= num("throttle-trigger-threshold") <= 100:
        raise bad("throttle_trigger_threshold", "an integer in the range of 1 to 100")
    if not 1 <= num("cpu-throttle-initial") <= 99:
        raise bad("cpu_throttle_initial", "an integer in the range of 1 to 99")
    if not 1 <= num("cpu-throttle-increment") <= 99:
        raise bad("cpu_throttle_increment", "an integer in the range of 1 to 99")
    if num("downtime-limit") > MAX_MIGRATE_DOWNTIME_MS:
        raise bad("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")
    if num("multifd-channels") < 1:
        raise bad("multifd_channels", "a value between 1 and 255")
    if num("multifd-zlib-level") > 9:
        raise bad("multifd_zlib_level", "a value between 0 and 9")
    if num("multifd-zstd-level") > 20:
        raise bad("multifd_zstd_level", "a value between 0 and 20")
    xbz = num("xbzrle-cache-size")
    if xbz < 4096 or xbz & (xbz - 1):
        raise bad("xbzrle_cache_size", "a power of two no less than the target page size")
    if not num("cpu-throttle-initial") <= num("max-cpu-throttle") <= 99:
        raise bad("max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99")
    if num("announce-initial") > 100000:
        raise bad("announce_initial", "a value between 0 and 100000")
    if num("announce-max") > 100000:
        raise bad("announce_max", "a value between 0 and 100000")
    if num("announce-rounds") > 1000:
        raise bad("announce_rounds", "a value between 0 and 1000")
    if not 1 <= num("announce-step") <= 10000:
        raise bad("announce_step", "a value between 0 and 10000")


class MigrationConfig:
    """Capabilities and parameters of this process's migrations.

    :param is_running: tells whether a migration (or COLO) is in progress; capability
        changes are refused then, with QEMU's text.
    """

    def __init__(self, is_running: Callable[[], bool] = lambda: False) -> None:
        self._caps: dict[str, bool] = dict.fromkeys(CAPABILITIES, False)
        self._params: dict[str, object] = {k: d for k, (_, d) in _PARAMS.items()}
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

        :raise QMPError: migration in progress, unknown name, bad type, or an
            unimplemented capability set to true.
        """
        if self._is_running():
            raise QMPError(MIGRATION_IN_PROGRESS)
        new = dict(self._caps)
        for i, item in enumerate(caps):
            name, state = item.get("capability"), item.get("state")
            where = f"capabilities[{i}]"
            if name is None:
                raise QMPError(f"Parameter '{where}.capability' is missing")
            if state is None:
                raise QMPError(f"Parameter '{where}.state' is missing")
            if not isinstance(name, str):
                raise QMPError(f"Invalid parameter type for '{where}.capability', "
                               "expected: string")
            if name not in self._caps:
                raise QMPError(f"Parameter '{where}.capability' does not accept value '{name}'")
            if not isinstance(state, bool):
                raise QMPError(f"Invalid parameter type for '{where}.state', expected: boolean")
            if state and name not in IMPLEMENTED_CAPABILITIES:
                raise QMPError(f"Migration capability '{name}' is not supported by qmpd")
            new[name] = state
        self._caps = new

    # -- parameters ---------------------------------------------------------------
    def parameter(self, name: str) -> object:
        """The value of parameter ``name``."""
        return self._params[name]

    def int_parameter(self, name: str) -> int:
        """An integer parameter's value."""
        v = self._params[name]
        assert isinstance(v, int)
        return v

    def query_parameters(self) -> dict[str, object]:
        """``query-migrate-parameters``: every parameter, QEMU 7.2's order."""
        return dict(self._params)

    def set_parameters(self, args: Mapping[str, object]) -> None:
        """``migrate-set-parameters``: validate the merged set, then apply and notify.

        :raise QMPError: an unknown member, a bad type, or a range check failing.
        """
        merged = dict(self._params)
        for name, value in args.items():
            spec = _PARAMS.get(name)
            if spec is None:
                raise QMPError(f"Parameter '{name}' is unexpected")
            merged[name] = _visit(name, spec[0], value)
        _check(merged)
        self._params = merged
        for name in args:  # QEMU reacts to every set, changed or not
            log.info("migration parameter %s = %r", name, merged[name])
            for cb in self._listeners:
                cb(name, merged[name])

    def add_listener(self, cb: ParamListener) -> None:
        """Call ``cb(name, value)`` after each parameter set (COLO: x-checkpoint-delay)."""
        self._listeners.append(cb)
