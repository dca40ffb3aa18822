"""Character-device backends for the serial port, in QEMU's syntax.

Users: the VM stack (``-serial`` / ``-chardev``), which feeds each backend from the serial
pump. The specs are parsed by :mod:`qmpd.config` (``parse_serial``, ``parse_chardev``)::

    -serial null | stdio | file:PATH | unix:PATH[,server=on][,wait=off]
            | tcp:[HOST]:PORT[,server=on][,wait=off] | chardev:ID
    -chardev null,id=ID | stdio,id=ID | file,id=ID,path=PATH
             | socket,id=ID,path=PATH|host=H,port=P[,server=on][,wait=off]

:func:`open_chardev` builds a backend from a :class:`~qmpd.config.ChardevSpec`;
``await start()`` binds/connects (and with ``wait=on`` waits for the first client);
``write(data)`` never blocks the loop; ``close()`` releases everything. As QEMU: a
socket server with no client connected drops the output; one client at a time (later
ones are closed at once); a slow client's kernel + transport buffer is bounded
(``SOCKET_BUFFER_CAP``), output beyond it is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from qmpd.config import ChardevSpec
from qmpd.machine.errors import MachineConfigError
from qmpd.options import SocketAddress, os_reason

#: Unsent bytes a socket client may have queued before further output is dropped.
SOCKET_BUFFER_CAP = 32 << 20


class Chardev:
    """Base backend: accepts and discards (``null``)."""

    def __init__(self, filename: str) -> None:
        #: QEMU's query-chardev ``filename``.
        self.filename = filename
        self.dropped = 0

    @property
    def connected(self) -> bool:
        """True when output currently reaches someone."""
        return True

    async def start(self) -> None:
        """Open the backend."""

    def write(self, data: bytes) -> None:
        """Send guest output (never blocks)."""

    def close(self) -> None:
        """Release the backend (idempotent)."""


class FdChardev(Chardev):
    """``file:PATH`` (truncated at open, as QEMU) or ``stdio``."""

    def __init__(self, spec: ChardevSpec) -> None:
        super().__init__(spec.filename)
        self._spec = spec
        self._path = spec.path if spec.backend == "file" else None
        self._fd = -1

    async def start(self) -> None:
        if self._path is None:
            self._fd = sys.stdout.fileno()
            return
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               0o644)
        except OSError as err:
            raise MachineConfigError(self._spec.option, f"cannot open '{self._path}': "
                                     f"{os_reason(err)}", self._spec.spec) from err

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self.dropped += len(view)

    def close(self) -> None:
        if self._fd >= 0 and self._path is not None:
            os.close(self._fd)
        self._fd = -1


class SocketChardev(Chardev):
    """``unix:`` / ``tcp:`` / ``socket``: a server for one client at a time, or a client."""

    def __init__(self, spec: ChardevSpec, address: SocketAddress) -> None:
        super().__init__(spec.filename)
        self._spec = spec
        self._path = address.path if address.kind == "unix" else None
        self._host, self._port = address.host, address.port
        self._server_mode, self._wait = spec.server, spec.wait
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
            action = "listen" if self._server_mode else "connect"
            raise MachineConfigError(self._spec.option, f"cannot {action}: {os_reason(err)}",
                                     self._spec.spec) from err
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


def open_chardev(spec: ChardevSpec) -> Chardev:
    """Build the backend for a parsed ``-serial``/``-chardev`` spec (not started yet).

    ``chardev:ID`` must be resolved first (:meth:`qmpd.config.DaemonConfig.serial_backend`).
    """
    if spec.backend in ("stdio", "file"):
        return FdChardev(spec)
    if spec.backend == "socket" and spec.address is not None:
        return SocketChardev(spec, spec.address)
    if spec.backend == "chardev":
        raise MachineConfigError("-serial", f"chardev '{spec.id}' is not resolved", spec.spec)
    return Chardev("null")
