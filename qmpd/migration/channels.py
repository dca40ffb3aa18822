"""Migration URIs beyond tcp/unix sockets: ``exec:COMMAND`` and ``fd:`` (both directions).

User: :class:`qmpd.migration.manager.MigrationManager` (``migrate``,
``migrate-incoming``, ``-incoming``). :func:`parse_migration_uri` is the one parser of a
migration URI; tcp/unix go on to :func:`qmpd.migration.transport.parse_uri`.

``exec:COMMAND`` runs ``/bin/sh -c COMMAND`` as QEMU 7.2 does (migration/exec.c): the
source writes the stream into the child's stdin, the destination reads it from the
child's stdout (``migrate {"uri": "exec:cat > FILE"}`` saves a VM into a file,
``-incoming "exec:cat FILE"`` restores it). qmpd joins the child with a socketpair,
so the stream runs over the same :class:`MigrationConnection` as a socket migration;
the child's other standard stream is ``/dev/null`` (the source never reads the child's
output, the destination never writes to it), its stderr is qmpd's.

The channel is one-way: there is no return path. The source sends the stream without
the return-path flag and completes once the child has read it all and exited (QEMU
ignores the exit status; so does qmpd, which logs a non-zero one); the destination
loads without acknowledging. Writing into a child that is gone fails the migration
with QEMU's ``Unable to write to command: Broken pipe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from qmpd.errors import ArgumentRangeError, MigrationError
from qmpd.migration.fds import NamedFds
from qmpd.migration.transport import (
    Listener,
    MigrationConnection,
    MigrationTransportError,
    connect,
    parse_uri,
)
from qmpd.options import SocketAddress, UnixAddressError

log = logging.getLogger(__name__)

#: How long a source waits for the child to exit after the stream ends, before it
#: terminates it (QEMU 7.2 sends SIGTERM at once; qmpd lets ``cat > FILE`` finish).
EXIT_WAIT_SECONDS: Final = 30.0
#: After SIGTERM, how long before SIGKILL (QEMU: 10 ms steps, then SIGKILL).
KILL_WAIT_SECONDS: Final = 2.0


@dataclass(frozen=True)
class ExecUri:
    """``exec:COMMAND``: a shell command that consumes or produces the stream."""

    command: str

    def __str__(self) -> str:
        return f"exec:{self.command}"


@dataclass(frozen=True)
class FdUri:
    """``fd:NAME`` (``migrate``: a ``getfd`` name) or ``fd:N|NAME`` (incoming)."""

    name: str

    def __str__(self) -> str:
        return f"fd:{self.name}"


MigrationUri = SocketAddress | ExecUri | FdUri


class UriError(MigrationError):
    """A migration URI's address that QEMU 7.2's ``socket_parse`` refuses."""


def parse_migration_uri(uri: str) -> MigrationUri:
    """A ``migrate`` URI (``migrate-incoming`` and ``-incoming``: :func:`parse_incoming_uri`).

    :raise qmpd.options.InetAddressError: a bad tcp address (QEMU's text).
    :raise UriError: ``unix:`` without a path (QEMU's ``invalid Unix socket address``).
    :raise qmpd.errors.ArgumentRangeError: another scheme (QEMU's ``Parameter 'uri'
        expects a valid migration protocol``).
    """
    if uri.startswith("exec:"):
        return ExecUri(uri[5:])
    if uri.startswith("fd:"):
        return FdUri(uri[3:])
    try:
        return parse_uri(uri)
    except UnixAddressError:
        raise UriError("invalid Unix socket address") from None


def parse_incoming_uri(uri: str) -> MigrationUri:
    """As :func:`parse_migration_uri`, with QEMU's incoming text for another scheme.

    :raise UnknownIncomingProtocolError: ``unknown migration protocol: URI``.
    """
    try:
        return parse_migration_uri(uri)
    except ArgumentRangeError:
        raise UnknownIncomingProtocolError(uri) from None


class CommandConnection(MigrationConnection):
    """The stream to or from a ``/bin/sh -c COMMAND`` child (one way, no return path).

    Closing (or aborting) it terminates the child if it still runs, as QEMU's
    ``qio_channel_command_close``.
    """

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes], *,
                 outgoing: bool, what: str = "command") -> None:
        super().__init__(sock, what)
        self.one_way = True
        self.proc = proc
        self.outgoing = outgoing
        self._reaper: asyncio.Future[int] | None = None

    def failure_text(self, err: OSError) -> str:
        """QEMU's io/channel-command.c texts."""
        verb = "write to" if self.outgoing else "read from"
        return f"Unable to {verb} {self.peer}: {err.strerror or err}"

    async def finish(self) -> None:
        """Source, after the last section: end the child's input, wait for it to exit."""
        self.shutdown_write()
        status = await asyncio.to_thread(_reap, self.proc, EXIT_WAIT_SECONDS)
        if status != 0:  # QEMU 7.2 ignores it too; say so in the log
            log.warning("migration command exited with status %s: %s", status,
                        self.proc.args)

    def close(self) -> None:
        """Close the socket and end the child if it still runs (reaped off the loop)."""
        super().close()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.terminate()
            with contextlib.suppress(RuntimeError):  # no loop: the child is not reaped
                self._reaper = asyncio.get_running_loop().run_in_executor(
                    None, _reap, self.proc, 0.0)


async def _readable(conn: MigrationConnection) -> None:
    """Wait until the connection has bytes (or EOF) to read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def _reap(proc: subprocess.Popen[bytes], grace: float) -> int:
    """Wait up to ``grace`` s for the child, then SIGTERM, then SIGKILL; its status."""
    for signal_it in (None, proc.terminate, proc.kill):
        if signal_it is not None:
            with contextlib.suppress(OSError):
                signal_it()
        try:
            return proc.wait(grace if signal_it is None else KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def spawn_command(command: str, *, outgoing: bool, argv: list[str] | None = None,
                  other: int = subprocess.DEVNULL, what: str = "command") -> CommandConnection:
    """Start ``/bin/sh -c COMMAND`` (or ``argv``) with its stdin (source) or stdout
    (destination) on a socketpair whose other end is the returned connection; its
    other standard stream is ``other`` (/dev/null by default).

    :raise MigrationTransportError: the program cannot be started.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            argv or ["/bin/sh", "-c", command],
            stdin=theirs.fileno() if outgoing else other,
            stdout=other if outgoing else theirs.fileno(),
            close_fds=True)
    except OSError as err:
        ours.close()
        raise MigrationTransportError(f"Unable to spawn command: "
                                      f"{err.strerror or err}") from err
    finally:
        theirs.close()
    if outgoing:
        ours.shutdown(socket.SHUT_RD)
    else:
        ours.shutdown(socket.SHUT_WR)
    return CommandConnection(ours, proc, outgoing=outgoing, what=what)


class ReadyIncoming:
    """``-incoming exec:COMMAND`` / ``fd:``: the manager's listener for a stream that
    is already connected.

    "Accepting" waits for the first bytes (QEMU: the channel's G_IO_IN watch), so the
    status turns ``active`` when data flows, as on QEMU.
    """

    def __init__(self, conn: MigrationConnection) -> None:
        self.conn = conn
        self._accepted = False

    async def accept(self) -> MigrationConnection:
        """Wait for the stream; the connection is the caller's from then on."""
        await _readable(self.conn)
        self._accepted = True
        return self.conn

    def socket_address(self) -> list[dict[str, object]]:
        """``query-migrate`` has no ``socket-address`` for a command or an fd."""
        return []

    def close(self) -> None:
        """Not accepted yet (cancelled, shutdown): close the connection and the child."""
        if not self._accepted:
            self.conn.close()


class OneWayChannelError(MigrationError):
    """``migrate`` over ``exec:`` (or a non-socket ``fd:``) with a capability that needs a
    return path (QEMU 7.2 accepts it, then waits forever for the other end to answer)."""

    def __init__(self, capability: str, channel: str = "an 'exec:' migration") -> None:
        super().__init__(capability)
        self.capability = capability
        self.channel = channel

    def __str__(self) -> str:
        return (f"Migration capability '{self.capability}' needs a return path, "
                f"which {self.channel} does not have")


class UnknownIncomingProtocolError(MigrationError):
    """``migrate-incoming`` / ``-incoming`` of another scheme (QEMU 7.2's text)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri

    def __str__(self) -> str:
        return f"unknown migration protocol: {self.uri}"


def fd_connection(fd: int, label: str, *, outgoing: bool) -> MigrationConnection:
    """A connection over descriptor ``fd`` (owned by the connection from now on): a
    stream socket as it is, anything else one-way through ``cat``.

    :raise MigrationTransportError: ``fd`` is not open.
    """
    try:
        sock: socket.socket | None = socket.socket(fileno=fd)
    except OSError as err:
        if err.errno == errno.EBADF:
            raise MigrationTransportError(f"{label}: {err.strerror}") from err
        sock = None
    if sock is not None:
        if sock.type == socket.SOCK_STREAM:
            return MigrationConnection(sock, label)
        sock.detach()
    try:
        return spawn_command("", outgoing=outgoing, argv=["cat"], other=fd, what="file")
    finally:
        os.close(fd)


def prepare_outgoing(target: MigrationUri, fds: NamedFds,
                     capability: Callable[[str], bool]) -> MigrationUri | MigrationConnection:
    """``migrate``'s synchronous part: take an ``fd:`` descriptor, refuse what a
    one-way channel cannot do (``return-path``, ``x-colo``).

    :raise FdNotFoundError: QEMU's ``File descriptor named 'X' has not been found``.
    :raise OneWayChannelError: naming the first such capability that is on.
    """
    prepared: MigrationUri | MigrationConnection = target
    one_way = isinstance(target, ExecUri)
    if isinstance(target, FdUri):
        prepared = fd_connection(fds.take(target.name), str(target), outgoing=True)
        one_way = prepared.one_way
    if one_way:
        for name in ("return-path", "x-colo"):
            if capability(name):
                if isinstance(prepared, MigrationConnection):
                    prepared.close()
                raise OneWayChannelError(name, "an 'exec:' migration" if prepared is target
                                         else "an 'fd:' migration over a non-socket")
    return prepared


async def open_outgoing(target: MigrationUri | MigrationConnection) -> MigrationConnection:
    """Connect to a destination, or start the command the stream goes into."""
    if isinstance(target, MigrationConnection):
        return target
    if isinstance(target, ExecUri):
        return spawn_command(target.command, outgoing=True)
    if isinstance(target, FdUri):
        raise MigrationTransportError(f"{target}: not prepared")
    return await connect(target)


def open_incoming(target: MigrationUri, fds: NamedFds) -> Listener | ReadyIncoming:
    """Listen on an address, start the command the stream comes from, or take an fd.

    :raise MigrationTransportError: the address cannot be bound (QEMU's text).
    :raise FdNotFoundError, FdNumberError: a bad ``fd:`` (QEMU's texts).
    """
    if isinstance(target, ExecUri):
        return ReadyIncoming(spawn_command(target.command, outgoing=False))
    if isinstance(target, FdUri):
        fd = fds.incoming(target.name)
        return ReadyIncoming(fd_connection(fd, str(target), outgoing=False))
    return Listener.open(target)
