"""DaemonConfig: every command-line option, validated; plus QEMU-syntax parsers.

Users: :mod:`qmpd.cli` builds one :class:`DaemonConfig` from argv; the daemon and the
layers it builds read it (the machine layer: ``mem_bytes``, ``accel``, ``serial``,
``chardev``, ``guest``; migration: ``incoming``). Parsers raise :class:`ConfigError`
with a one-line message; the CLI prints it as ``qmpd: -opt value: message``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qmpd.errors import QmpdError
from qmpd.options import on_off
from qmpd.schema.loader import DEFAULT_SCHEMA

MiB = 1 << 20


class ConfigError(QmpdError):
    """An option value that cannot be used."""


class MonitorConfig(BaseModel):
    """One ``-qmp`` monitor (server side only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = Field(default=0, ge=0, le=65535)
    wait: bool = False


class DaemonConfig(BaseModel):
    """The whole daemon configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitors: list[MonitorConfig] = Field(default_factory=list)
    name: str | None = None
    start_paused: bool = False            # -S
    pidfile: str | None = None
    daemonize: bool = False
    mem_bytes: int = Field(default=128 * MiB, gt=0)   # -m
    accel: Literal["kvm", "tcg", "kvm:tcg"] = "kvm:tcg"
    serial: list[str] = Field(default_factory=list)
    chardev: list[str] = Field(default_factory=list)
    guest: str | None = None              # -guest counter,wss=16M,...
    incoming: str | None = None           # -incoming URI | defer
    schema_path: str = str(DEFAULT_SCHEMA)
    max_message_bytes: int = Field(default=8 * MiB, gt=0)
    max_event_backlog: int = Field(default=8 * MiB, gt=0)
    drain_timeout: float = Field(default=2.0, gt=0)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bBkKmMgGtTpPeE]?)$")
_SUFFIX = {"": MiB, "b": 1, "k": 1 << 10, "m": MiB, "g": 1 << 30, "t": 1 << 40,
           "p": 1 << 50, "e": 1 << 60}


def parse_mem(text: str) -> int:
    """``-m`` in QEMU syntax (``512``, ``512M``, ``4G``, ``size=1G``) -> bytes.

    A bare number means MiB, as in QEMU.
    """
    value = text.split(",")[0]
    if value.startswith("size="):
        value = value[5:]
    m = _SIZE.match(value)
    if m is None:
        raise ConfigError("Parameter 'size' expects a non-negative number below 2^64")
    size = int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    if size <= 0:
        raise ConfigError("memory size must be greater than zero")
    if size >= 1 << 64:
        raise ConfigError("Parameter 'size' expects a non-negative number below 2^64")
    return size


def parse_accel(text: str) -> Literal["kvm", "tcg", "kvm:tcg"]:
    """``-accel kvm|tcg|kvm:tcg``."""
    name = text.split(",")[0]
    if name == "kvm":
        return "kvm"
    if name == "tcg":
        return "tcg"
    if name == "kvm:tcg":
        return "kvm:tcg"
    raise ConfigError(f"invalid accelerator {name}")


def _options(parts: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:  # legacy flags: server, nowait, nodelay
            key, value = {"nowait": ("wait", "off"), "nodelay": ("delay", "off")}.get(
                key, (key, "on"))
        opts[key] = value
    return opts


def _on_off(opts: dict[str, str], key: str, default: bool) -> bool:
    try:
        return on_off(opts, key, default)
    except ValueError:
        raise ConfigError(f"Parameter '{key}' expects 'on' or 'off'") from None


def parse_monitor(text: str) -> MonitorConfig:
    """``-qmp unix:PATH,server=on,wait=off`` or ``-qmp tcp:HOST:PORT,server=on,wait=off``."""
    head, *rest = text.split(",")
    opts = _options(rest)
    unknown = set(opts) - {"server", "wait", "delay", "ipv4", "ipv6"}
    if unknown:
        raise ConfigError(f"Invalid parameter '{sorted(unknown)[0]}'")
    if not _on_off(opts, "server", False):
        raise ConfigError("only server mode is supported (add server=on,wait=off)")
    wait = _on_off(opts, "wait", True)
    if head.startswith("unix:") and len(head) > 5:
        return MonitorConfig(kind="unix", path=head[5:], wait=wait)
    if head.startswith("tcp:"):
        host, sep, port = head[4:].rpartition(":")
        if sep and port.isdigit() and int(port) <= 65535:
            return MonitorConfig(kind="tcp", host=host.strip("[]") or "0.0.0.0",
                                 port=int(port), wait=wait)
        raise ConfigError("host and port must be given as tcp:HOST:PORT")
    raise ConfigError("monitor address must be unix:PATH or tcp:HOST:PORT")
