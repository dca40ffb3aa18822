"""DaemonConfig: every command-line option, validated; and the parsers of the values that
are not the machine's (``-qmp``, ``-serial``, ``-chardev``, ``-name``, ``-incoming``).

Users: :mod:`qmpd.cli` builds one :class:`DaemonConfig` from argv; the daemon and the
layers it builds read it (the machine layer: ``mem_bytes``, ``accel``, ``guest`` and
:meth:`DaemonConfig.serial_backend`; migration: ``incoming``). The QEMU syntax itself
(``key=value`` lists, sizes, addresses) is :mod:`qmpd.options`. Parsers raise
:class:`qmpd.errors.ConfigError` (one line); the CLI prints ``qmpd: -opt value: text``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qmpd.errors import ConfigError
from qmpd.options import (
    Accel,
    AddressTypeError,
    MiB,
    SocketAddress,
    check_unix_path,
    inet_address,
    keyval,
    on_off,
    parse_accel,
    parse_address,
    parse_mem,
)
from qmpd.schema.loader import DEFAULT_SCHEMA

__all__ = ["ChardevSpec", "ConfigError", "DaemonConfig", "MiB", "MonitorConfig",
           "parse_accel", "parse_chardev", "parse_incoming", "parse_mem", "parse_monitor",
           "parse_name", "parse_pidfile", "parse_serial"]

#: Flags a socket monitor or serial port takes after its address (QEMU's names).
_SOCKET_FLAGS = ("server", "wait", "delay", "ipv4", "ipv6")


class MonitorConfig(BaseModel):
    """One ``-qmp`` monitor (server side only); ``spec`` is the value as given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: SocketAddress
    wait: bool = False
    spec: str = ""


class ChardevSpec(BaseModel):
    """One ``-serial`` or ``-chardev`` backend; ``option`` and ``spec`` say where it came
    from (start-up errors name them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["null", "stdio", "file", "socket", "chardev"]
    option: Literal["-serial", "-chardev"] = "-serial"
    spec: str = ""
    id: str = ""                  # -chardev id=, or the id -serial chardev:ID names
    path: str = ""                # file
    address: SocketAddress | None = None   # socket
    server: bool = False
    wait: bool = False

    @property
    def filename(self) -> str:
        """QEMU's ``filename`` of the backend (``unix:/p,server=on``, ``file:/x``, ...)."""
        if self.backend == "file":
            return f"file:{self.path}"
        if self.backend == "socket":
            return f"{self.address}{',server=on' if self.server else ''}"
        return self.backend


class DaemonConfig(BaseModel):
    """The whole daemon configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitors: list[MonitorConfig] = Field(default_factory=list)
    name: str | None = None
    start_paused: bool = False            # -S
    pidfile: str | None = None
    daemonize: bool = False
    mem_bytes: int = Field(default=128 * MiB, gt=0)   # -m
    accel: Accel = "kvm:tcg"
    serial: list[ChardevSpec] = Field(default_factory=list)
    chardev: list[ChardevSpec] = Field(default_factory=list)
    guest: str | None = None              # -guest counter,wss=16M,...
    incoming: str | None = None           # -incoming URI | defer
    objects: list[str] = Field(default_factory=list)  # -object TYPE,id=ID,... (checked)
    # The environment (read by qmpd.cli only, passed down by the VM stack):
    kvm_device: str = "/dev/kvm"          # QMPD_KVM_DEVICE (machine: -accel kvm tests)
    colo_hash: bool = False               # QMPD_COLO_HASH=1 (COLO: crc32 of RAM per checkpoint)
    colo_fault: str = ""                  # QMPD_COLO_FAULT (COLO: qmpd.colo.faults)
    schema_path: str = str(DEFAULT_SCHEMA)
    max_message_bytes: int = Field(default=64 * MiB, gt=0)  # QEMU: MAX_TOKEN_SIZE
    max_event_backlog: int = Field(default=8 * MiB, gt=0)
    drain_timeout: float = Field(default=2.0, gt=0)

    def serial_backend(self) -> ChardevSpec:
        """The first ``-serial`` (``chardev:ID`` resolved), or ``null``.

        :raise ConfigError: ``-serial chardev:ID`` with no ``-chardev id=ID``.
        """
        if not self.serial:
            return ChardevSpec(backend="null", spec="null")
        first = self.serial[0]
        if first.backend != "chardev":
            return first
        for chardev in self.chardev:
            if chardev.id == first.id:
                return chardev
        raise ConfigError(f"chardev '{first.id}' not found")


def parse_monitor(text: str) -> MonitorConfig:
    """``-qmp unix:PATH,server=on,wait=off`` or ``-qmp tcp:HOST:PORT,server=on,wait=off``.

    :raise ConfigError: a bad address or flag, or client mode (``server`` off).
    """
    opts = keyval(text, _SOCKET_FLAGS, implied="address")
    address = parse_address(opts["address"])
    check_unix_path(address)
    if not on_off(opts, "server", False):
        raise ConfigError("only server mode is supported (add server=on,wait=off)")
    return MonitorConfig(address=address, wait=on_off(opts, "wait", True), spec=text)


def parse_serial(text: str) -> ChardevSpec:
    """``-serial null | stdio | file:PATH | unix:PATH[,server=on][,wait=off]
    | tcp:[HOST]:PORT[,server=on][,wait=off] | chardev:ID``.

    :raise ConfigError: an unknown backend, a bad address or flag.
    """
    kind, _, rest = text.partition(":")
    if text in ("null", "none", "stdio"):
        return ChardevSpec(backend="stdio" if text == "stdio" else "null", spec=text)
    if kind in ("file", "chardev") and rest:
        return ChardevSpec(backend=kind, spec=text, path=rest if kind == "file" else "",
                           id=rest if kind == "chardev" else "")
    if kind in ("file", "chardev"):
        raise ConfigError(f"{kind}: needs {'a path' if kind == 'file' else 'an id'} after ':'")
    opts = keyval(text, _SOCKET_FLAGS, implied="address")
    try:
        address = parse_address(opts["address"])
    except AddressTypeError:
        raise ConfigError(f"unknown backend '{kind}' (expected null, stdio, file:PATH, "
                          "unix:PATH, tcp:HOST:PORT or chardev:ID)") from None
    return _socket(text, "-serial", "", address, opts)


def _socket(text: str, option: Literal["-serial", "-chardev"], cid: str,
            address: SocketAddress, opts: dict[str, str]) -> ChardevSpec:
    check_unix_path(address)
    server, wait = on_off(opts, "server", False), on_off(opts, "wait", True)
    return ChardevSpec(backend="socket", option=option, spec=text, id=cid, address=address,
                       server=server, wait=wait and server)


def parse_chardev(text: str) -> ChardevSpec:
    """``-chardev null,id=ID | stdio,id=ID | file,id=ID,path=PATH
    | socket,id=ID,path=PATH|host=H,port=P[,server=on][,wait=off]``.

    :raise ConfigError: an unknown backend, a missing or unknown parameter.
    """
    opts = keyval(text, ("id", "path", "host", "port", "append", *_SOCKET_FLAGS),
                  implied="backend")
    backend, cid = opts["backend"], opts.get("id", "")
    if not cid:
        raise ConfigError("Parameter 'id' is missing")
    if backend in ("null", "stdio"):
        return ChardevSpec(backend=backend, option="-chardev", spec=text, id=cid)
    if backend == "file":
        if not opts.get("path"):
            raise ConfigError("Parameter 'path' is missing")
        return ChardevSpec(backend="file", option="-chardev", spec=text, id=cid,
                           path=opts["path"])
    if backend == "socket":
        if opts.get("path"):
            address = SocketAddress("unix", path=opts["path"])
        elif "port" in opts:
            address = inet_address(opts.get("host", ""), opts["port"], text)
        else:
            raise ConfigError("a socket needs path=PATH or port=PORT")
        return _socket(text, "-chardev", cid, address, opts)
    raise ConfigError(f"unknown backend '{backend}' (expected null, stdio, file or socket)")


def parse_name(text: str) -> str:
    """``-name [guest=]NAME[,process=P][,debug-threads=on|off]`` -> NAME."""
    opts = keyval(text, ("guest", "process", "debug-threads"), implied="guest")
    on_off(opts, "debug-threads", False)
    return opts["guest"]


def parse_pidfile(text: str) -> str:
    """``-pidfile FILE`` (a non-empty path)."""
    if not text:
        raise ConfigError("a file name must be given")
    return text


def parse_incoming(text: str) -> str:
    """``-incoming defer | tcp:[HOST]:PORT | unix:PATH | exec:COMMAND | fd:N`` -> the
    URI, checked.

    :raise ConfigError: another protocol or a bad address.
    """
    if text == "defer" or text.startswith("exec:"):
        return text
    if text.startswith("fd:"):  # a descriptor this process inherited (qemu_parse_fd)
        number = text[3:]
        if not (number.isascii() and number.isdigit()):
            raise ConfigError(f"Invalid file descriptor number '{number}'")
        return text
    try:
        check_unix_path(parse_address(text))
    except AddressTypeError:
        raise ConfigError("unknown migration protocol (expected tcp:HOST:PORT, unix:PATH, "
                          "exec:COMMAND, fd:N or defer)") from None
    return text
