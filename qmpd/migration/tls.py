"""TLS for migration connections (QEMU 7.2 migration/tls.c, crypto/tlssession.c).

With ``tls-creds`` set, the migration manager upgrades each connection right after
connect/accept: :func:`secure_client` on the source, :func:`accept_secure` on the
destination. The upgrade swaps the connection's :class:`~qmpd.migration.transport.SocketIO`
for a :class:`TlsIO`, so everything above (precopy sections, the return path, and COLO,
which keeps the same connection after hand-over) runs over TLS unchanged.

TLS runs over the same non-blocking socket with OpenSSL memory BIOs (``ssl.SSLObject``):
the event loop's ``sock_*`` calls move ciphertext, this module encrypts and decrypts.
Sends cost one copy (the encryption's output) instead of none; receives decrypt
straight into the caller's buffer.

As QEMU, a destination whose handshake fails logs the error, drops that connection and
keeps listening: nothing of a stream is read before the handshake succeeded. The server
confirms a completed handshake with one byte, so a source whose certificate the
destination refuses fails at once with the handshake's error (TLS 1.3 would otherwise
report it only at the first read).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import Final, Protocol, cast

from qmpd.errors import MigrationError
from qmpd.migration.destination import report_failure
from qmpd.migration.errors import NotSupportedError
from qmpd.migration.transport import Listener, MigrationConnection, SocketIO
from qmpd.objects import Endpoint, ObjectStore, TlsCredsX509
from qmpd.options import SocketAddress

#: the migration parameters, by name (``MigrationConfig.parameter``)
Parameter = Callable[[str], object]


class Acceptor(Protocol):
    """Where the destination's connection comes from (a Listener, an exec: command)."""

    async def accept(self) -> MigrationConnection: ...

log = logging.getLogger(__name__)

CHUNK: Final = 256 << 10
HANDSHAKE_TIMEOUT: Final = 30.0
_READY: Final = b"\x01"
_ISSUER_CODES: Final = frozenset({2, 18, 19, 20, 21})   # X509_V_ERR_*: unknown issuer
_HOST_CODES: Final = frozenset({62, 64})                # hostname / IP mismatch
#: OpenSSL's reasons for bytes that are not TLS at all (a plain peer)
_NOT_TLS: Final = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                             "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})
_SSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


#: reports to plain sources still running (a reference keeps each task alive)
_REPORTS: set[asyncio.Task[None]] = set()


class TlsError(MigrationError):
    """A TLS session could not be set up; ``str()`` is QEMU's wording where it has one."""


def creds_for(store: ObjectStore, name: str, endpoint: Endpoint) -> TlsCredsX509:
    """The ``tls-creds`` object for this side (QEMU ``migration_tls_get_creds``).

    :raise TlsError: ``No TLS credentials with id 'X'``, ``Expected TLS credentials
        for a client endpoint``.
    """
    creds = store.get(name)
    if creds is None:
        raise TlsError(f"No TLS credentials with id '{name}'")
    if creds.endpoint != endpoint:
        raise TlsError(f"Expected TLS credentials for a {endpoint} endpoint")
    return creds


class TlsIO(SocketIO):
    """The bytes of a connection through one TLS session (see the module docstring)."""

    def __init__(self, sock: socket.socket, creds: TlsCredsX509, hostname: str | None) -> None:
        super().__init__(sock)
        self._bio_in = ssl.MemoryBIO()
        self._bio_out = ssl.MemoryBIO()
        self._ssl = creds.context.wrap_bio(
            self._bio_in, self._bio_out, server_side=creds.endpoint == "server",
            server_hostname=hostname if creds.endpoint == "client" else None)
        self._raw = memoryview(bytearray(CHUNK))
        self._backlog = memoryview(b"")   # ciphertext taken from the BIO, not yet sent

    # -- sending: plaintext -> BIO -> socket, in order ---------------------------------
    def _encrypt(self, mv: memoryview) -> None:
        while mv:
            n = self._ssl.write(mv)
            mv = mv[n:]

    async def flush(self) -> None:
        while True:
            if not self._backlog:
                if not self._bio_out.pending:
                    return
                self._backlog = memoryview(self._bio_out.read())
            data, self._backlog = self._backlog, memoryview(b"")
            await self.loop.sock_sendall(self.sock, data)

    async def sendall(self, mv: memoryview) -> None:
        for off in range(0, mv.nbytes, CHUNK):
            self._encrypt(mv[off:off + CHUNK])
            await self.flush()

    def send_nowait(self, mv: memoryview) -> int:
        self._encrypt(mv)
        if not self._backlog:
            data = memoryview(self._bio_out.read())
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            self._backlog = data[n:]
        return mv.nbytes

    @property
    def pending(self) -> bool:
        return bool(self._backlog) or self._bio_out.pending > 0

    # -- receiving -------------------------------------------------------------------
    async def _fill(self) -> bool:
        """Feed the next ciphertext from the socket to OpenSSL; False on EOF."""
        n = await self.loop.sock_recv_into(self.sock, self._raw)
        if n == 0:
            return False
        self._bio_in.write(self._raw[:n])
        return True

    async def recv_into(self, buf: memoryview) -> int:
        """Decrypt into ``buf`` every record already received (one ``read`` gives one
        record, at most 16 KiB); wait for the socket only when none is left."""
        got, want = 0, buf.nbytes
        while got < want:
            try:
                got += cast(int, self._ssl.read(want - got, buf[got:]))  # int with a buffer
            except ssl.SSLWantReadError:
                if got or not await self._fill():
                    return got
            except ssl.SSLZeroReturnError:
                return got
        return got

    def peer_closed(self) -> bool:
        if self._ssl.pending() or self._bio_in.pending:
            return False
        return super().peer_closed()

    @property
    def version(self) -> str:
        """The negotiated protocol (``TLSv1.3``)."""
        return self._ssl.version() or "?"

    # -- handshake -------------------------------------------------------------------
    async def handshake(self) -> None:
        """Run the handshake; the server then confirms, the client waits for that.

        :raise ssl.SSLError | OSError | EOFError: the handshake failed.
        """
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self._fill():
                    raise EOFError from None
        if self._ssl.server_side:
            self._encrypt(memoryview(_READY))
            await self.flush()
            return
        await self.flush()
        got = bytearray(1)
        if await self.recv_into(memoryview(got)) != 1 or bytes(got) != _READY:
            raise EOFError


def _error(err: BaseException, hostname: str | None) -> TlsError:
    """QEMU's wording for a failed handshake (crypto/tlssession.c)."""
    if isinstance(err, ssl.SSLCertVerificationError):
        if err.verify_code in _HOST_CODES:
            return TlsError(f"Certificate does not match the hostname {hostname}")
        if err.verify_code in _ISSUER_CODES:
            return TlsError("The certificate hasn't got a known issuer")
        return TlsError(f"The certificate is not trusted: {err.verify_message}")
    if isinstance(err, EOFError | ssl.SSLEOFError):
        return TlsError("TLS handshake failed: The TLS connection was non-properly "
                        "terminated.")
    if isinstance(err, ssl.SSLError) and err.reason in _NOT_TLS:
        return TlsError("TLS handshake failed: An unexpected TLS packet was received.")
    if isinstance(err, ssl.SSLError):
        return TlsError(f"TLS handshake failed: {_SSL_NOISE.sub('', str(err.args[-1]))}")
    if isinstance(err, OSError):
        return TlsError(f"TLS handshake failed: {err.strerror or err}")
    return TlsError(f"TLS handshake failed: {err}")


async def secure_client(conn: MigrationConnection, creds: TlsCredsX509,
                        hostname: str | None) -> None:
    """Upgrade the source's connection (``hostname``: ``tls-hostname``, else the
    URI's host; None for ``unix:``).

    :raise TlsError: QEMU's texts (``No hostname for certificate validation``,
        ``The certificate hasn't got a known issuer``, ``Certificate does not match the
        hostname H``, ``TLS handshake failed: ...``).
    """
    if hostname is None and creds.verify_peer:
        raise TlsError("No hostname for certificate validation")
    tls = TlsIO(conn.io.sock, creds, hostname)
    try:
        await tls.handshake()
    except (OSError, EOFError) as err:
        raise _error(err, hostname) from err
    conn.io = tls
    log.info("TLS session to %s established (%s)", conn.peer, tls.version)


async def accept_secure(listener: Listener, creds: TlsCredsX509) -> MigrationConnection:
    """Accept until one source completes a handshake (QEMU keeps listening after a
    failed one); the listener is closed afterwards."""
    try:
        while True:
            conn = await listener.accept(keep_listening=True)
            tls = TlsIO(conn.io.sock, creds, None)
            try:
                await asyncio.wait_for(tls.handshake(), HANDSHAKE_TIMEOUT)
            except (OSError, EOFError, TimeoutError) as err:
                error = _error(err, None)
                log.error("%s (incoming migration from %s)", error, conn.peer)
                if isinstance(err, ssl.SSLError) and err.reason in _NOT_TLS:
                    # a plain source: tell it on its own (plain) return path, meanwhile
                    # keep listening
                    task = asyncio.get_running_loop().create_task(report_failure(
                        conn, f"{error} (this destination expects TLS: tls-creds)"))
                    _REPORTS.add(task)
                    task.add_done_callback(_REPORTS.discard)
                else:
                    conn.close()
                continue
            conn.io = tls
            log.info("TLS session from %s established (%s)", conn.peer, tls.version)
            return conn
    finally:
        listener.close()


async def secure_outgoing(conn: MigrationConnection, target: object, parameter: Parameter,
                          store: ObjectStore) -> None:
    """The source's hook: with ``tls-creds`` set, upgrade ``conn`` (to ``target``, the
    parsed URI) as QEMU's ``migration_tls_channel_connect``; else nothing.

    :raise TlsError | NotSupportedError: see :func:`secure_client`; TLS over ``exec:`` / ``fd:``.
    """
    name = str(parameter("tls-creds") or "")
    if not name:
        return
    if not isinstance(target, SocketAddress):
        raise NotSupportedError("TLS over an exec: or fd: migration URI")
    creds = creds_for(store, name, "client")
    host = str(parameter("tls-hostname") or "") or (
        target.host or None if target.kind == "tcp" else None)
    await secure_client(conn, creds, host)


async def accept_incoming(listener: Acceptor, parameter: Parameter,
                          store: ObjectStore) -> MigrationConnection:
    """The destination's hook: accept the source's connection, through TLS if
    ``tls-creds`` is set (:func:`accept_secure`).

    :raise TlsError | NotSupportedError: no such credentials; ``tls-authz`` (qmpd has
        no authorization objects); TLS over ``exec:`` / ``fd:``.
    """
    name = str(parameter("tls-creds") or "")
    if not name:
        return await listener.accept()
    creds = creds_for(store, name, "server")
    if parameter("tls-authz"):
        raise NotSupportedError("tls-authz (authorization objects)")
    if not isinstance(listener, Listener):
        raise NotSupportedError("TLS over an exec: or fd: migration URI")
    return await accept_secure(listener, creds)
