"""QEMU's command-line syntax in one place: ``key=value`` lists, sizes, accelerators, and
the one socket address type (``unix:PATH`` | ``tcp:HOST:PORT``).

Users: :mod:`qmpd.config` (``-qmp``, ``-serial``, ``-chardev``, ``-m``, ``-accel``,
``-name``, ``-incoming``), :mod:`qmpd.machine.config` (``-guest``), and the users of
:class:`SocketAddress`: the QMP listeners (:mod:`qmpd.qmp.server`), the chardev socket
backend (:mod:`qmpd.machine.chardev`) and the migration transport (``migrate`` and
``-incoming`` URIs, :mod:`qmpd.migration.transport`). Standard library only (layer L1).

Every parser raises a :class:`qmpd.errors.ConfigError` whose ``str()`` is one line. The
address errors keep QEMU's texts in ``str()`` (they reach QMP clients through ``migrate``)
and a plainer ``reason`` that the CLI prints after the option and its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

from qmpd.errors import ConfigError

MiB = 1 << 20
#: ``sun_path`` holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107

Accel = Literal["kvm", "tcg", "kvm:tcg", "tcg:kvm"]
ACCELS: tuple[str, ...] = get_args(Accel)

_ON = ("on", "yes", "true")
_OFF = ("off", "no", "false")


class OptionError(ConfigError):
    """A command-line value that cannot be used, naming the option and (if known) the value.

    ``str()`` is ``-opt value: reason`` (``-opt: reason`` without a value), the line the CLI
    prints after ``qmpd:``.
    """

    def __init__(self, option: str, reason: str, value: str | None = None) -> None:
        super().__init__(option, reason, value)
        self.option = option
        self.reason = reason
        self.value = value

    def __str__(self) -> str:
        where = self.option if self.value is None else f"{self.option} {self.value}"
        return f"{where}: {self.reason}"


def os_reason(err: OSError) -> str:
    """The plain text of a failed bind/open/connect: ``Address already in use``, ``Name or
    service not known`` (asyncio wraps the first into a longer sentence)."""
    if err.errno is not None and err.errno > 0:
        return os.strerror(err.errno)
    return err.strerror or str(err)


# Section: key=value lists and booleans

def _split(text: str) -> list[str]:
    """Split at single commas; ``,,`` is a literal comma (QEMU's escape)."""
    return [part.replace("\0", ",") for part in text.replace(",,", "\0").split(",")]


def keyval(text: str, allowed: Collection[str], implied: str | None = None) -> dict[str, str]:
    """QEMU's option list ``[VALUE,]key=value,...`` -> ``{key: value}`` (the last one wins).

    With ``implied``, the first element is that key's value unless written ``implied=...``.
    A bare ``key`` means ``key=on`` and ``nokey`` means ``key=off`` (QEMU's legacy flags,
    e.g. ``server,nowait``).

    :raise ConfigError: ``Invalid parameter 'KEY'`` for a key not in ``allowed``.
    """
    parts = _split(text)
    opts: dict[str, str] = {}
    if implied is not None and not parts[0].startswith(f"{implied}="):
        opts[implied] = parts.pop(0)
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:
            key, value = (key[2:], "off") if key.startswith("no") and key[2:] in allowed \
                else (key, "on")
        if key not in allowed and key != implied:
            raise ConfigError(f"Invalid parameter '{key}'")
        opts[key] = value
    return opts


def on_off(opts: dict[str, str], key: str, default: bool) -> bool:
    """QEMU's boolean option: ``on``/``yes``/``true`` or ``off``/``no``/``false``.

    :raise ConfigError: ``Parameter 'KEY' expects 'on' or 'off'`` for any other value.
    """
    value = opts.get(key)
    if value is None:
        return default
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"Parameter '{key}' expects 'on' or 'off'")


# Section: sizes and accelerators

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bBkKmMgGtTpPeE]?)$")
_UNITS = {"b": 1, "k": 1 << 10, "m": MiB, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
          "e": 1 << 60}


def parse_size(text: str, name: str = "size", default_unit: int = MiB) -> int:
    """A QEMU size (``512M``, ``4G``, ``1.5G``, ``131072K``) -> bytes; a bare number is in
    ``default_unit`` (MiB for ``-m``, as QEMU).

    :raise ConfigError: ``Parameter 'NAME' expects a non-negative number below 2^64``.
    """
    match = _SIZE.match(text)
    size = 1 << 64
    if match is not None:
        number, suffix = match.groups()
        size = int(float(number) * (_UNITS[suffix.lower()] if suffix else default_unit))
    if size >= 1 << 64:
        raise ConfigError(f"Parameter '{name}' expects a non-negative number below 2^64")
    return size


def parse_mem(text: str) -> int:
    """``-m [size=]SIZE`` -> bytes (bare numbers are MiB).

    :raise ConfigError: a bad size, another parameter, or 0.
    """
    size = parse_size(keyval(text, {"size"}, implied="size")["size"])
    if size == 0:
        raise ConfigError("memory size must be greater than zero")
    return size


def parse_accel(text: str) -> Accel:
    """``-accel NAME`` with NAME ``kvm``, ``tcg`` or a fallback list ``kvm:tcg``
    (``accel=NAME`` also, as QEMU's ``-machine accel=``).

    :raise ConfigError: an unknown accelerator or any property.
    """
    name = keyval(text, (), implied="accel")["accel"]
    for accel in get_args(Accel):
        if name == accel:
            return accel  # type: ignore[no-any-return]
    raise ConfigError(f"invalid accelerator {name}")


# Section: socket addresses

@dataclass(frozen=True)
class SocketAddress:
    """A stream socket address: ``unix`` with ``path``, or ``tcp`` with ``host``/``port``.

    ``host`` "" means every interface for a listener and localhost for a client.
    """

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


class AddressError(ConfigError):
    """A socket address that cannot be parsed.

    :param address: the text as given; :param reason: what is wrong, in plain words (the
        CLI prints it); ``str()`` is QEMU's text (QMP clients of ``migrate`` see it).
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class UnixAddressError(AddressError):
    """``unix:`` without a path."""

    def __str__(self) -> str:
        return f"Failed to parse unix address '{self.address}'"


class InetAddressError(AddressError):
    """``tcp:`` without ``HOST:PORT``, or a bad port (QEMU names what follows ``tcp:``)."""

    def __str__(self) -> str:
        return f"error parsing address '{self.address.removeprefix('tcp:')}'"


class AddressTypeError(AddressError):
    """Neither ``unix:`` nor ``tcp:``."""


def inet_address(host: str, port: str, text: str) -> SocketAddress:
    """``host`` (``[v6]`` brackets removed) and ``port`` (0-65535) -> a tcp address.

    :raise InetAddressError: naming ``text``.
    """
    if not port.isdigit():
        reason = "a port must be given" if not port else f"invalid port '{port}'"
        raise InetAddressError(text, reason)
    if int(port) > 65535:
        raise InetAddressError(text, f"port {port} is out of range (0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return SocketAddress("tcp", host=host, port=int(port))


def parse_address(text: str) -> SocketAddress:
    """``unix:PATH`` or ``tcp:[HOST]:PORT`` (``HOST`` may be ``[v6]``).

    :raise UnixAddressError: ``unix:`` without a path.
    :raise InetAddressError: ``tcp:`` without ``:PORT``, or a bad port.
    :raise AddressTypeError: any other text.
    """
    if text.startswith("unix:"):
        if text == "unix:":
            raise UnixAddressError(text, "a socket path must be given (unix:PATH)")
        return SocketAddress("unix", path=text[5:])
    if text.startswith("tcp:"):
        host, sep, port = text[4:].rpartition(":")
        if not sep:
            raise InetAddressError(text, "host and port must be given as tcp:HOST:PORT")
        return inet_address(host, port, text)
    kind = text.partition(":")[0]
    raise AddressTypeError(text, f"unknown address type '{kind}' "
                                 "(expected unix:PATH or tcp:HOST:PORT)")


def check_unix_path(address: SocketAddress) -> None:
    """For an address the command line binds: a UNIX path must fit in ``sun_path``.

    :raise ConfigError: a path longer than 107 bytes.
    """
    length = len(address.path.encode())
    if address.kind == "unix" and length > UNIX_PATH_MAX:
        raise ConfigError(f"socket path is {length} bytes long, the limit is {UNIX_PATH_MAX}")
