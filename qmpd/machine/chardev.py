"""Character-device backends for the serial port, in QEMU's syntax.

Users: the daemon (``-serial`` / ``-chardev``), which feeds each backend from the serial
pump. Specs::

    -serial null | stdio | file:PATH | unix:PATH[,server=on][,wait=off]
            | tcp:[HOST]:PORT[,server=on][,wait=off] | chardev:ID
    -chardev null,id=ID | stdio,id=ID | file,id=ID,path=PATH
             | socket,id=ID,path=PATH|host=H,port=P[,server=on][,wait=off]

:func:`open_chardev` builds a backend; ``await start()`` binds/connects (and with
``wait=on`` waits for the first client); ``write(data)`` never blocks the loop;
``close()`` releases everything. As QEMU: a socket server with no client connected drops
the output; one client at a time (later ones are closed at once); a slow client's kernel
+ transport buffer is bounded (``SOCKET_BUFFER_CAP``), output beyond it is dropped and
counted in ``dropped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping

from qmpd.machine.errors import MachineConfigError
from qmpd.options import on_off

#: Unsent bytes a socket client may have queued before further output is dropped.
SOCKET_BUFFER_CAP = 32 << 20


class Chardev:
    """Base backend: accepts and discards (``null``)."""

    def __init__(self, filename: str) -> None:
        #: QEMU's query-chardev ``filename``.
        self.filename = filename
        self.written = 0
        self.dropped = 0

    @property
    def connected(self) -> bool:
        """True when output currently reaches someone."""
        return True

    async def start(self) -> None:
        """Open the backend."""

    def write(self, data: bytes) -> None:
        """Send guest output (never blocks)."""
        self.written += len(data)

    def close(self) -> None:
        """Release the backend (idempotent)."""


class FdChardev(Chardev):
    """``file:PATH`` (truncated at open, as QEMU) or ``stdio``."""

    def __init__(self, filename: str, path: str | None) -> None:
        super().__init__(filename)
        self._path = path
        self._fd = -1

    async def start(self) -> None:
        if self._path is None:
            self._fd = sys.stdout.fileno()
            return
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               0o644)
        except OSError as err:
            raise MachineConfigError(
                f"-serial {self.filename}: could not open '{self._path}': {err.strerror}"
            ) from err

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self.dropped += len(view)
        self.written += len(data) - len(view)

    def close(self) -> None:
        if self._fd >= 0 and self._path is not None:
            os.close(self._fd)
        self._fd = -1


class SocketChardev(Chardev):
    """``unix:`` / ``tcp:`` / ``socket``: a server for one client at a time, or a client."""

    def __init__(self, filename: str, path: str | None, host: str, port: int,
                 server: bool, wait: bool) -> None:
        super().__init__(filename)
        self._path, self._host, self._port = path, host, port
        self._server_mode, self._wait = server, wait
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._client_seen = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        try:
            if not self._server_mode:
                if self._path is not None:
                    reader, writer = await asyncio.open_unix_connection(self._path)
                else:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                self._attach(reader, writer)
                return
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
                self._server = await asyncio.start_unix_server(self._on_client, self._path)
            else:
                self._server = await asyncio.start_server(self._on_client, self._host or None,
                                                          self._port)
        except OSError as err:
            raise MachineConfigError(f"-serial {self.filename}: {err.strerror or err}") from err
        if self._wait:
            await self._client_seen.wait()

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self.connected:  # one client at a time
            writer.close()
            return
        self._attach(reader, writer)

    def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._client_seen.set()
        task = asyncio.get_running_loop().create_task(self._discard_input(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _discard_input(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            self.dropped += len(data)  # nobody listening: QEMU drops it too
            return
        if writer.transport.get_write_buffer_size() > SOCKET_BUFFER_CAP:
            self.dropped += len(data)
            return
        writer.write(data)
        self.written += len(data)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._server is not None:
            self._server.close()
            self._server = None
            if self._path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._path)


def _options(parts: list[str], what: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:  # QEMU's legacy flags
            key, value = {"nowait": ("wait", "off")}.get(key, (key, "on"))
        opts[key] = value
    for key in opts:
        if key not in ("id", "path", "host", "port", "server", "wait", "append"):
            raise MachineConfigError(f"{what}: invalid parameter '{key}'")
    return opts


def _flag(opts: dict[str, str], key: str, default: bool, what: str) -> bool:
    try:
        return on_off(opts, key, default)
    except ValueError:
        raise MachineConfigError(f"{what}: parameter '{key}' expects 'on' or 'off'") from None


def parse_chardev(text: str) -> tuple[str, str]:
    """``-chardev BACKEND,id=ID,...`` → (id, equivalent ``-serial`` spec)."""
    what = f"-chardev {text}"
    backend, *rest = text.split(",")
    opts = _options(rest, what)
    cid = opts.pop("id", "")
    if not cid:
        raise MachineConfigError(f"{what}: parameter 'id' is missing")
    if backend in ("null", "stdio"):
        return cid, backend
    if backend == "file":
        if "path" not in opts:
            raise MachineConfigError(f"{what}: parameter 'path' is missing")
        return cid, f"file:{opts['path']}"
    if backend == "socket":
        flags = ",".join(f"{k}={opts[k]}" for k in ("server", "wait") if k in opts)
        if "path" in opts:
            addr = f"unix:{opts['path']}"
        elif "port" in opts:
            addr = f"tcp:{opts.get('host', '')}:{opts['port']}"
        else:
            raise MachineConfigError(f"{what}: socket needs 'path' or 'port'")
        return cid, f"{addr},{flags}" if flags else addr
    raise MachineConfigError(f"{what}: unknown backend '{backend}'")


def open_chardev(spec: str, chardevs: Mapping[str, str] | None = None) -> Chardev:
    """Build the backend for a ``-serial`` spec (not started yet).

    :param chardevs: ``-chardev`` definitions by id (values from :func:`parse_chardev`),
        for ``chardev:ID``.
    :raise MachineConfigError: for an unknown or malformed spec.
    """
    what = f"-serial {spec}"
    if spec.startswith("chardev:"):
        cid = spec[len("chardev:"):]
        if chardevs is None or cid not in chardevs:
            raise MachineConfigError(f"{what}: chardev '{cid}' not found")
        return open_chardev(chardevs[cid])
    head, *rest = spec.split(",")
    kind, _, addr = head.partition(":")
    if kind in ("null", "none") and not addr and not rest:
        return Chardev("null")
    if kind == "stdio" and not addr and not rest:
        return FdChardev("stdio", None)
    if kind == "file" and addr:
        return FdChardev(f"file:{addr}", addr)
    if kind in ("unix", "tcp") and addr:
        opts = _options(rest, what)
        server = _flag(opts, "server", False, what)
        wait = _flag(opts, "wait", True, what) if server else False
        if kind == "unix":
            return SocketChardev(spec, addr, "", 0, server, wait)
        host, _, port = addr.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise MachineConfigError(f"{what}: invalid port '{port}'")
        return SocketChardev(spec, None, host, int(port), server, wait)
    raise MachineConfigError(
        f"{what}: unknown backend (expected null, stdio, file:PATH, unix:PATH, "
        "tcp:HOST:PORT or chardev:ID)")
