"""Migration transport: ``tcp:HOST:PORT`` and ``unix:PATH``, one connection per migration.

URIs are :class:`qmpd.options.SocketAddress` values (:func:`parse_uri`).

Users: the manager (connect / listen+accept), the source and destination (framed
sections, return path) and COLO after precopy (raw bytes: ``write``/``drain``/
``recv_exactly``/``recv_into``, the ``ChannelPort`` of qmpd/colo/ports.py).

The return path is the same socket in the other direction, with QEMU's framing
(migration/migration.c ``migrate_send_rp_message``)::

    source                                   destination
      │── header, RAM..., PASS_END, ... ──────►│  (main stream)
      │── RAM (final), CPU, END ──────────────►│  load, verify
      │◄────────────── [ERROR text] SHUT(status)│  rp: >HH type, length; payload
      complete (or failed)                      run (or discard)

Sends never copy page data: ``send`` hands the caller's buffers to the kernel and
returns when they are sent. Receives go straight into preallocated buffers
(``sock_recv_into``). Every length read from the socket is bounded before use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import socket
import struct
from collections.abc import Sequence
from typing import Final

from qmpd.errors import ArgumentRangeError, MigrationError
from qmpd.migration.stream import SECTION, Buffer, Section, StreamDecoder
from qmpd.options import AddressTypeError, SocketAddress, parse_address

log = logging.getLogger(__name__)

RP_HEADER: Final = struct.Struct(">HH")
RP_MAX_PAYLOAD: Final = 4096
SOCKET_BUFFER: Final = 4 << 20


class MigrationTransportError(MigrationError):
    """The connection failed or the peer went away."""


class RpMessage(enum.IntEnum):
    """Return-path message types: QEMU's ``MIG_RP_MSG_*`` numbers, plus qmpd's ERROR."""

    SHUT = 1      # u32 status: 0 = loaded fine, 1 = failed
    PONG = 2      # u32
    ERROR = 0x100  # qmpd: UTF-8 error description, sent before SHUT(1)


def parse_uri(uri: str) -> SocketAddress:
    """A ``migrate`` / ``migrate-incoming`` / ``-incoming`` URI: ``tcp:HOST:PORT`` or
    ``unix:PATH``.

    :raise qmpd.options.AddressError: a bad address, with QEMU's text
        (``Failed to parse unix address 'unix:'``, ``error parsing address 'HOST:PORT'``).
    :raise ArgumentRangeError: QEMU's ``Parameter 'uri' expects a valid migration
        protocol`` for another scheme.
    """
    try:
        return parse_address(uri)
    except AddressTypeError:
        raise ArgumentRangeError("uri", "a valid migration protocol") from None


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SocketIO:
    """The bytes of a connection on its socket, plain. TLS swaps in its own object with the
    same methods (qmpd/migration/tls.py ``TlsIO``); :class:`MigrationConnection` only
    calls these."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    async def sendall(self, mv: memoryview) -> None:
        """Send all of ``mv`` (no copy)."""
        await self.loop.sock_sendall(self.sock, mv)

    def send_nowait(self, mv: memoryview) -> int:
        """Send what the kernel takes now; how many bytes of ``mv`` are consumed."""
        try:
            return self.sock.send(mv)
        except BlockingIOError:
            return 0

    @property
    def pending(self) -> bool:
        """True if consumed bytes still wait to be sent (never, for a plain socket)."""
        return False

    async def flush(self) -> None:
        """Send what ``send_nowait`` consumed but could not send yet."""

    async def recv_into(self, buf: memoryview) -> int:
        """Read what is available into ``buf``; 0 means EOF."""
        return await self.loop.sock_recv_into(self.sock, buf)

    def peer_closed(self) -> bool:
        """True if the peer has closed the connection (EOF waiting); consumes nothing."""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return data == b""


class MigrationConnection:
    """One migration connection: framed sections, return path, and raw bytes.

    One task reads at a time. ``send`` and ``write``/``drain`` must not be mixed
    concurrently (precopy uses ``send``; COLO uses ``write``/``drain``).
    """

    def __init__(self, sock: socket.socket, peer: str) -> None:
        _tune(sock)
        self._sock = sock
        self.io: SocketIO = SocketIO(sock)
        self.peer = peer
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[memoryview] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None
        self._error: MigrationTransportError | None = None
        self._rbuf: bytearray | None = None
        self._hbuf = bytearray(SECTION.size)
        self.closed = False
        self.one_way = False  # True: no return path (``exec:``, qmpd.migration.channels)
        self.bytes_sent = 0

    # -- sending ------------------------------------------------------------------
    async def send(self, parts: Sequence[Buffer]) -> None:
        """Send every buffer in order, without copying; return once all are sent."""
        await self.drain()
        try:
            for part in parts:
                mv = memoryview(part).cast("B")
                await self.io.sendall(mv)
                self.bytes_sent += mv.nbytes
        except OSError as err:
            raise self._fail(err) from err

    def write(self, data: Buffer) -> None:
        """Queue ``data`` for sending (copied if mutable); never blocks. See ``drain``."""
        if self._error is not None or self.closed:
            return
        mv = memoryview(data).cast("B")
        if not self._queue:
            try:
                n = self.io.send_nowait(mv)
            except OSError as err:
                self._fail(err)
                return
            self.bytes_sent += n
            mv = mv[n:]
            if not mv and not self.io.pending:
                return
        if mv:
            self._queue.append(mv if isinstance(data, bytes) else memoryview(bytes(mv)))
        if self._flusher is None:
            self._flusher = self._loop.create_task(self._flush(), name="migration-flush")

    async def _flush(self) -> None:
        try:
            while self._queue or self.io.pending:
                if not self._queue:
                    await self.io.flush()
                    continue
                mv = self._queue[0]
                await self.io.sendall(mv)
                self.bytes_sent += mv.nbytes
                self._queue.popleft()
        except OSError as err:
            self._fail(err)
            self._queue.clear()
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Wait until everything ``write`` queued is handed to the kernel.

        :raise MigrationTransportError: if the connection failed.
        """
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._error is not None:
            raise self._error

    # -- receiving ----------------------------------------------------------------
    async def recv_into(self, buf: memoryview) -> None:
        """Fill all of ``buf``.

        :raise MigrationTransportError: on EOF before it is full, or a socket error.
        """
        got, want = 0, buf.nbytes
        try:
            while got < want:
                n = await self.io.recv_into(buf[got:])
                if n == 0:
                    raise MigrationTransportError(
                        f"connection closed by {self.peer} after {got} of {want} bytes")
                got += n
        except OSError as err:
            raise self._fail(err) from err

    async def recv_some(self, buf: memoryview) -> int:
        """Read what is available into ``buf`` (at least 1 byte); 0 means EOF."""
        try:
            n = await self.io.recv_into(buf)
        except OSError as err:
            raise self._fail(err) from err
        return n

    async def recv_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (bounded by the caller)."""
        buf = bytearray(n)
        await self.recv_into(memoryview(buf))
        return bytes(buf)

    async def recv_section(self, decoder: StreamDecoder) -> Section:
        """Read and validate one section; RAM data views a buffer reused next call."""
        hview = memoryview(self._hbuf)
        await self.recv_into(hview)
        kind, length, crc = decoder.section_header(hview)
        if self._rbuf is None or len(self._rbuf) < decoder.max_payload:
            self._rbuf = bytearray(decoder.max_payload)
        view = memoryview(self._rbuf)[:length]
        try:
            await self.recv_into(view)
        except MigrationTransportError as err:
            raise MigrationTransportError(f"section {kind.name}: {err}") from err
        return decoder.section(kind, view, crc)

    # -- return path --------------------------------------------------------------
    async def send_rp(self, kind: RpMessage, payload: bytes = b"") -> None:
        """Send one return-path message (destination → source)."""
        payload = payload[:RP_MAX_PAYLOAD]
        await self.send([RP_HEADER.pack(int(kind), len(payload)) + payload])

    async def recv_rp(self) -> tuple[RpMessage, bytes]:
        """Read one return-path message.

        :raise MigrationError: an unknown type or an oversized payload.
        """
        raw_type, length = RP_HEADER.unpack(await self.recv_exactly(RP_HEADER.size))
        try:
            kind = RpMessage(raw_type)
        except ValueError:
            raise MigrationError(f"return path: unknown message type {raw_type}") from None
        if length > RP_MAX_PAYLOAD:
            raise MigrationError(f"return path: message length {length} too large")
        return kind, await self.recv_exactly(length)

    def peer_closed(self) -> bool:
        """True if the peer has closed the connection (EOF waiting); consumes nothing.

        COLO's secondary asks this right before acknowledging a checkpoint: a primary
        that is already gone cannot release that checkpoint's output, so the
        checkpoint must not be applied either.
        """
        return self.io.peer_closed()

    # -- lifetime -----------------------------------------------------------------
    def _fail(self, err: OSError) -> MigrationTransportError:
        if self._error is None:
            self._error = MigrationTransportError(self.failure_text(err))
        return self._error

    def failure_text(self, err: OSError) -> str:
        """The ``error-desc`` of a failed send or receive (channels override it)."""
        return f"connection to {self.peer} lost: {err.strerror or err}"

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self._sock.fileno()

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF after what was sent."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        """Cut the connection now (both directions); pending reads/writes fail.

        The socket is shut down at once but closed a moment later: closing the fd under
        a pending read would drop it from the event loop's poll set, and that read
        would then never complete. Owners still call :meth:`close` when done.
        """
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if not self.closed:
            self._loop.call_later(0.5, self.close)

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._flusher is not None:
            self._flusher.cancel()
        self._sock.close()


async def connect(addr: SocketAddress) -> MigrationConnection:
    """Connect to a listening destination.

    :raise MigrationTransportError: with QEMU-like "Failed to connect to ..." text.
    """
    loop = asyncio.get_running_loop()
    if addr.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = addr.path
        where = addr.path
    else:
        where = f"{addr.host}:{addr.port}"
        try:
            infos = await loop.getaddrinfo(addr.host or "localhost", addr.port,
                                           type=socket.SOCK_STREAM)
        except OSError as err:
            raise MigrationTransportError(f"address resolution failed for {where}: "
                                          f"{err}") from err
        family, _, _, _, target = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, target)  # type: ignore[arg-type]
    except OSError as err:
        sock.close()
        # QEMU words it with strerror(errno), not asyncio's "Connect call failed (...)"
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise MigrationTransportError(f"Failed to connect to '{where}': {reason}") from err
    return MigrationConnection(sock, where)


class Listener:
    """A listening socket for ``-incoming``; accepts one connection, then closes."""

    def __init__(self, sock: socket.socket, addr: SocketAddress) -> None:
        self._sock = sock
        self.addr = addr

    @classmethod
    def open(cls, addr: SocketAddress) -> Listener:
        """Bind and listen (QEMU unlinks a stale UNIX socket path first).

        :raise MigrationTransportError: if the address cannot be bound.
        """
        try:
            if addr.kind == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr.path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(addr.path)
            else:
                infos = socket.getaddrinfo(addr.host or None, addr.port,
                                           type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(infos[0][4])
                addr = SocketAddress("tcp", host=addr.host, port=sock.getsockname()[1])
            sock.listen(1)
            sock.setblocking(False)
        except OSError as err:  # QEMU's texts (util/qemu-sockets.c)
            where = f" to {addr.path}" if addr.kind == "unix" else ""
            raise MigrationTransportError(f"Failed to bind socket{where}: "
                                          f"{err.strerror or err}") from err
        return cls(sock, addr)

    def socket_address(self) -> list[dict[str, object]]:
        """QEMU's SocketAddress list for ``query-migrate`` on the destination."""
        if self.addr.kind == "unix":
            return [{"type": "unix", "path": self.addr.path}]
        host = self._sock.getsockname()[0]
        # QEMU (socket_sockaddr_to_address_inet) names the family of the bound socket
        family = "ipv4" if self._sock.family == socket.AF_INET else "ipv6"
        return [{"type": "inet", "host": host, "port": str(self.addr.port), family: True}]

    async def accept(self, *, keep_listening: bool = False) -> MigrationConnection:
        """Wait for the source; the listener is closed afterwards unless
        ``keep_listening`` (TLS accepts again after a failed handshake, as QEMU)."""
        loop = asyncio.get_running_loop()
        try:
            sock, peer = await loop.sock_accept(self._sock)
        finally:
            if not keep_listening:
                self.close()
        return MigrationConnection(sock, str(peer) or str(self.addr))

    def close(self) -> None:
        """Stop listening (and remove the UNIX socket file)."""
        if self._sock.fileno() >= 0:
            self._sock.close()
            if self.addr.kind == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(self.addr.path)
