"""QMP listeners (UNIX and TCP) and the registry of live sessions.

Users: the daemon starts one :class:`QMPServer` for all ``-qmp`` monitors (each a
:class:`qmpd.options.SocketAddress`), gives the
event bus :meth:`QMPServer.broadcast` as its sink, and at shutdown calls
:meth:`close_listeners` (no new connections, socket files removed) then
:meth:`drain_sessions`. UNIX sockets are created with mode 0600 (bound under a
restrictive umask, so there is no window with wider permissions); a stale file at
the path is replaced, as QEMU does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat

from qmpd.options import SocketAddress
from qmpd.qmp.fdsocket import FdServer
from qmpd.qmp.session import Dispatcher, QMPSession

log = logging.getLogger(__name__)


class QMPServer:
    """Owns the listening sockets and every live :class:`QMPSession`."""

    def __init__(self, dispatcher: Dispatcher, greeting: bytes, oob_offered: bool = True,
                 max_message_bytes: int = 64 << 20, max_event_backlog: int = 8 << 20) -> None:
        self._dispatcher = dispatcher
        self._greeting = greeting
        self._oob_offered = oob_offered
        self._max_message_bytes = max_message_bytes
        self._max_event_backlog = max_event_backlog
        self._servers: list[asyncio.Server | FdServer] = []
        self._unix_paths: list[str] = []
        self.sessions: set[QMPSession] = set()
        self._counter = 0

    def _factory(self, label: str) -> QMPSession:
        self._counter += 1
        session = QMPSession(self._dispatcher, self._greeting, self._oob_offered,
                             self.sessions.discard, f"{label}#{self._counter}",
                             self._max_message_bytes, self._max_event_backlog)
        self.sessions.add(session)
        return session

    async def listen(self, address: SocketAddress) -> None:
        """Start accepting on ``address`` (a tcp host "" means every interface).

        :raise OSError: if the address cannot be bound (or its host resolved).
        """
        loop = asyncio.get_running_loop()
        label = str(address)
        if address.kind == "unix":
            # SCM_RIGHTS: getfd takes descriptors sent with commands (qmpd.qmp.fdsocket)
            sock = _bind_unix(address.path)
            server: asyncio.Server | FdServer = FdServer(
                loop, sock, lambda: self._factory(label))
            self._unix_paths.append(address.path)
        else:
            server = await loop.create_server(lambda: self._factory(label),
                                              address.host or None, address.port,
                                              reuse_address=True)
        self._servers.append(server)
        log.info("QMP monitor listening on %s", label)

    def broadcast(self, data: bytes) -> None:
        """Send one encoded event to every negotiated session."""
        for session in list(self.sessions):
            session.send_event(data)

    async def close_listeners(self) -> None:
        """Stop accepting and remove the UNIX socket files."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._unix_paths.clear()
        await asyncio.sleep(0)

    async def drain_sessions(self, timeout: float = 2.0) -> None:
        """Let every session finish its command in flight and flush, then close it."""
        sessions = list(self.sessions)
        if sessions:
            await asyncio.gather(*(s.drain(timeout) for s in sessions))


def _bind_unix(path: str) -> socket.socket:
    """Bind a listening UNIX socket at ``path`` with mode 0600."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock
