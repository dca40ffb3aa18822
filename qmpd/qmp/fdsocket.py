"""A UNIX-socket transport that receives file descriptors (SCM_RIGHTS) with the bytes.

User: :class:`qmpd.qmp.server.QMPServer` serves UNIX monitors through it, so
``getfd`` can take a descriptor a client sent with its command, as QEMU's socket
chardev does (qemu.qmp's ``send_fd_scm``, libvirt). asyncio's (and uvloop's) own
transports read with ``recv``, which drops ancillary data; this one reads with
``recvmsg`` on the loop's reader callbacks and hands the descriptors to the protocol's
``fds_received(list[int])`` before the bytes they came with. Writing buffers like
asyncio's transports (high/low water marks, ``pause_writing``/``resume_writing``).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import socket
from typing import Any, Protocol

log = logging.getLogger(__name__)

READ_SIZE = 256 << 10
#: descriptors accepted per message (QEMU's TCP_MAX_FDS is 16)
MAX_FDS = 16


class FdProtocol(Protocol):
    """What the transport calls besides asyncio.Protocol's methods."""

    def fds_received(self, fds: list[int]) -> None:
        """Take ownership of descriptors that came with the next bytes."""


class FdTransport(asyncio.Transport):
    """One accepted UNIX stream socket, with SCM_RIGHTS on input."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.Protocol) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._high, self._low = 64 << 10, 16 << 10
        self._write_paused = False
        self._reading = True
        self._closing = False
        self._lost = False
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    # -- reading ------------------------------------------------------------------
    def _read_ready(self) -> None:
        try:
            data, ancdata, _flags, _addr = self._sock.recvmsg(
                READ_SIZE, socket.CMSG_SPACE(MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._fatal(err)
            return
        fds: list[int] = []
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(cdata[:len(cdata) - len(cdata) % arr.itemsize])
                fds.extend(arr)
        if fds:
            taker = getattr(self._protocol, "fds_received", None)
            if taker is None:
                for fd in fds:
                    os.close(fd)
            else:
                taker(fds)
        if data:
            self._protocol.data_received(data)
            return
        self._stop_reading()
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`."""
        if self._reading and not self._closing:
            self._stop_reading()

    def resume_reading(self) -> None:
        """Read again."""
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        """True while reading."""
        return self._reading

    # -- writing ------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` now if the socket takes it, else buffer it."""
        if self._closing or self._lost or not data:
            return
        view = memoryview(bytes(data))
        if not self._buffer:
            try:
                n = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as err:
                self._fatal(err)
                return
            view = view[n:]
            if not view:
                return
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer.append(view)
        self._buffered += len(view)
        if not self._write_paused and self._buffered > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        while self._buffer:
            view = self._buffer[0]
            try:
                n = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._fatal(err)
                return
            self._buffered -= n
            if n < len(view):
                self._buffer[0] = view[n:]
                return
            self._buffer.popleft()
        self._loop.remove_writer(self._fd)
        if self._write_paused and self._buffered <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._closing:
            self._connection_lost(None)

    def get_write_buffer_size(self) -> int:
        """Bytes buffered, not yet sent."""
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """(low, high) water marks."""
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks (asyncio's defaults otherwise)."""
        self._high = 64 << 10 if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        """No half-close."""
        return False

    # -- lifetime -----------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``, ``peername``, ``sockname`` as asyncio's transports."""
        if name == "socket":
            return self._sock
        with contextlib.suppress(OSError):
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        """True once closing or closed."""
        return self._closing or self._lost

    def close(self) -> None:
        """Stop reading; close once the buffer is sent."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._fatal(None)

    def _fatal(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._stop_reading()
        self._buffer.clear()
        self._buffered = 0
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._loop.remove_writer(self._fd)
        self._sock.close()
        try:
            self._protocol.connection_lost(exc)
        except Exception:
            log.exception("connection_lost failed")


class FdServer:
    """Accepts on a listening UNIX socket; each connection gets an :class:`FdTransport`.

    ``close()`` stops accepting (as ``asyncio.Server.close``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Any) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("QMP accept failed: %s", err)
                return
            FdTransport(self._loop, conn, self._factory())

    def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
