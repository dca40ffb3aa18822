"""MigrationManager: the sole owner of this process's migration, in either direction.

Users: the QMP handlers (``migrate``, ``migrate-incoming``, ``migrate_cancel``,
``query-migrate``, capabilities/parameters through :attr:`MigrationManager.config`),
the daemon (``-incoming``; shutdown via :meth:`close`) and COLO (the hook below, and
:meth:`colo_completed` at failover).

Run states follow QEMU: source ``running → finish-migrate → postmigrate``;
destination ``inmigrate → running`` (``paused`` with ``-S``). A failed or cancelled
outgoing migration resumes the guest if it was running (QEMU 7.2
``migration_iteration_finish``); a failed incoming one leaves the guest paused in
``inmigrate``: nothing half-loaded runs, and a new ``migrate-incoming`` may retry.

COLO (x-colo on; the stream header carries it)::

    source: precopy ... SHUT(0) received → status colo →
            await hook.enter_primary(conn)     (guest paused, finish-migrate; COLO
                                                owns conn, run state and machine)
    dest:   load ok → SHUT(0) sent → status colo →
            await hook.enter_secondary(conn)   (guest paused, inmigrate; same)
    either: hook returns → status completed (if COLO did not set it already)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from qmpd.errors import ArgumentRangeError, ColoError, MachineError, MigrationError
from qmpd.machine.runstate import RunState, RunStateHolder
from qmpd.machine.vmctl import VmControl
from qmpd.migration.channels import (
    CommandConnection,
    MigrationUri,
    ReadyIncoming,
    open_incoming,
    open_outgoing,
    parse_incoming_uri,
    parse_migration_uri,
    prepare_outgoing,
)
from qmpd.migration.config import MigrationConfig, MigrationSpec
from qmpd.migration.destination import PrecopyDestination
from qmpd.migration.errors import (
    IncomingStartedError,
    MigrationInProgressError,
    NoPausedMigrationError,
)
from qmpd.migration.fds import NamedFds
from qmpd.migration.guest import MigratableMachine
from qmpd.migration.source import PrecopySource, RamCounters
from qmpd.migration.state import EmitFn, MigrationStatus, StatusMachine
from qmpd.migration.tls import accept_incoming, secure_outgoing
from qmpd.migration.transport import Listener, MigrationConnection
from qmpd.objects import ObjectStore
from qmpd.options import AddressError

log = logging.getLogger(__name__)
_S = MigrationStatus


class ColoHook(Protocol):
    """What the manager calls when a migration with x-colo completes or loads."""

    async def enter_primary(self, chan: MigrationConnection) -> None:
        """Run COLO as primary on the connection until this node leaves COLO."""

    async def enter_secondary(self, chan: MigrationConnection) -> None:
        """Run COLO as secondary on the connection until this node leaves COLO."""


class MigrationManager:
    """Starts, tracks, cancels and reports migrations (one at a time per direction).

    :param machine: the guest whose RAM and state migrate.
    :param vm: the VM's start/stop control (the daemon's one; its run state is the
        process's run state).
    :param emit: where ``MIGRATION``/``MIGRATION_PASS`` go.
    :param autostart: False when started with ``-S``: the destination ends ``paused``.
    :param spec: capabilities and parameters from the daemon's schema (default: the
        shipped schema.json's).

    Without a COLO hook (:meth:`set_colo_hook`) a destination refuses a COLO stream and a
    source with ``x-colo`` on completes as a plain migration.
    """

    def __init__(self, machine: MigratableMachine, vm: VmControl, emit: EmitFn, *,
                 autostart: bool = True, spec: MigrationSpec | None = None,
                 objects: ObjectStore | None = None) -> None:
        self.machine = machine
        #: ``-object`` / ``object-add``: where ``tls-creds`` names its credentials
        self.objects = objects if objects is not None else ObjectStore()
        self.vm = vm
        self.runstate: RunStateHolder = vm.runstate
        self.colo_hook: ColoHook | None = None
        self.autostart = autostart
        self._sink = emit
        # QEMU 7.2 refuses capability changes only while the *outgoing* migration runs:
        # a destination waiting on -incoming may still set them (COLO's secondary must
        # set x-colo there), and COLO itself does not block them (8.1+ does).
        self.config = MigrationConfig(spec=spec, is_running=lambda: self.outgoing.is_running)
        events = lambda: self.config.capability("events")  # noqa: E731
        self.outgoing = StatusMachine("outgoing", self._emit, events)
        self.incoming_status = StatusMachine("incoming", self._emit, events)
        self._last: StatusMachine | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}   # "out" / "in"
        self._out_conn: MigrationConnection | None = None
        #: every migration connection open now, either direction, COLO included (yank)
        self._live: set[MigrationConnection] = set()
        #: getfd/closefd's descriptors, for fd: URIs
        self.fds = NamedFds()
        self._listener: Listener | ReadyIncoming | None = None
        self._counters = RamCounters()
        self._error: str | None = None
        self._in_error: str | None = None
        self._cancel_requested = False

    def set_colo_hook(self, hook: ColoHook) -> None:
        """Register COLO: entered when a migration with x-colo completes or loads."""
        self.colo_hook = hook

    def _emit(self, name: str, data: dict[str, object] | None) -> None:
        """Emit an event; a failing sink is logged, never allowed to break a migration."""
        try:
            self._sink(name, data)
        except Exception:
            log.exception("emitting %s failed", name)

    # -- queries ------------------------------------------------------------------
    def is_running(self) -> bool:
        """True while a migration runs in either direction, or COLO is active."""
        return any(sm.is_running or sm.status is _S.COLO
                   for sm in (self.outgoing, self.incoming_status))

    @property
    def status(self) -> MigrationStatus:
        """The status of the latest migration (either direction); ``none`` before any."""
        return self._last.status if self._last is not None else _S.NONE

    def query(self) -> dict[str, object]:
        """``query-migrate``: QEMU 7.2's MigrationInfo for the latest migration."""
        if self._last is None:
            return {}
        status = self._last.status
        info: dict[str, object] = {"status": status.value}
        if self._last is self.incoming_status:
            if status is _S.SETUP:  # QEMU 7.2 shows no status while it only listens
                listening = self._listener is not None
                return {"socket-address": self.incoming_address} if listening else {}
            if status is _S.FAILED and self._in_error:
                info["error-desc"] = self._in_error
            return info
        c = self._counters
        if status in (_S.ACTIVE, _S.CANCELLING, _S.DEVICE, _S.PRE_SWITCHOVER, _S.COMPLETED):
            info["setup-time"] = c.setup_time_ms
            if status is _S.COMPLETED:
                info["total-time"] = c.total_time_ms or 0
                info["downtime"] = c.downtime_ms or 0
            else:
                info["total-time"] = int((time.monotonic() - c.start) * 1000)
                info["expected-downtime"] = c.expected_downtime_ms
            info["ram"] = c.ram_info(self.machine.page_size, done=status is _S.COMPLETED)
            if c.cpu_throttle_percentage:  # as QEMU: present while throttling
                info["cpu-throttle-percentage"] = c.cpu_throttle_percentage
        elif status is _S.FAILED and self._error:
            info["error-desc"] = self._error
        return info

    async def wait(self) -> None:
        """Wait until the current migration task (if any) has ended."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks)

    # -- outgoing -----------------------------------------------------------------
    def start(self, uri: str, *, resume: bool = False) -> None:
        """``migrate``: checks as QEMU 7.2 ``migrate_prepare``, then run in the background.

        :raise MigrationError: QEMU's texts (``resume``, a migration or COLO runs, TLS);
            a bad URI as :func:`parse_uri`. Nothing changes then. Run-state refusals are
            the command's gate.
        """
        if resume:
            raise NoPausedMigrationError()
        if self.is_running():
            raise MigrationInProgressError(self.status.value)
        self._counters = RamCounters()
        self._error = None
        self._cancel_requested = False
        self._last = self.outgoing
        try:
            target = prepare_outgoing(parse_migration_uri(uri), self.fds,
                                      self.config.capability)
        except (ArgumentRangeError, AddressError, MigrationError) as err:
            # QEMU 7.2 qmp_migrate: setup, then failed (error-desc but for a scheme)
            self.outgoing.set(_S.SETUP)
            if not isinstance(err, ArgumentRangeError):
                self._error = str(err)
            self.outgoing.set(_S.FAILED)
            raise
        self.outgoing.set(_S.SETUP)
        task = asyncio.get_running_loop().create_task(
            self._run_outgoing(uri, target), name="migration-outgoing")
        task.add_done_callback(self._outgoing_done)
        self._tasks["out"] = task

    def _outgoing_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step ran no handler: finish the status here."""
        if self.outgoing.status is _S.SETUP and task.cancelled():
            self.outgoing.set(_S.CANCELLING)
        self.outgoing.cas(_S.CANCELLING, _S.CANCELLED)

    async def _run_outgoing(self, uri: str,
                            target: MigrationUri | MigrationConnection) -> None:
        was_running = self.runstate.is_running
        source: PrecopySource | None = None
        try:
            self._out_conn = conn = await open_outgoing(target)
            self._live.add(conn)
            await secure_outgoing(conn, target, self.config.parameter, self.objects)
            source = PrecopySource(
                self.machine, conn, self.config, self._counters, self.vm.stop,
                on_active=lambda: self.outgoing.set(_S.ACTIVE),
                on_pass=self._on_pass, global_state=lambda: self.runstate.state.value,
                finish=conn.finish if isinstance(conn, CommandConnection) else None)
            await source.run()
            if self.config.capability("x-colo") and self.colo_hook is not None:
                self.outgoing.set(_S.COLO)
            else:
                self.outgoing.set(_S.COMPLETED)
                self.runstate.set(RunState.POSTMIGRATE)
                log.info("migration to %s completed", uri)
        except asyncio.CancelledError:
            self._rollback(source, was_running)
            self._finish_cancel()
            if not self._cancel_requested:
                raise
        except Exception as err:  # any failure must roll back
            self._error = str(err) or type(err).__name__
            log.error("migration to %s failed: %s", uri, err,
                      exc_info=not isinstance(err, MigrationError | MachineError | OSError))
            self._rollback(source, was_running)
            if self.outgoing.cas(_S.CANCELLING, _S.CANCELLED) is not _S.CANCELLING:
                self.outgoing.set(_S.FAILED)
        leftover, self._out_conn = self._out_conn, None
        if self.outgoing.status is _S.COLO and self.colo_hook is not None and source:
            await self._colo(self.outgoing, self.colo_hook.enter_primary, source.conn)
        elif leftover is not None:
            self._close(leftover)

    async def _colo(self, sm: StatusMachine,
                    enter: Callable[[MigrationConnection], Awaitable[None]],
                    conn: MigrationConnection) -> None:
        """Hand the connection to COLO; it owns run state and machine until it returns."""
        try:
            await enter(conn)
            sm.cas(_S.COLO, _S.COMPLETED)
        except (MigrationError, MachineError, ColoError, OSError) as err:
            log.error("COLO ended with an error: %s", err)
            if sm is self.outgoing:
                self._error = str(err)
            else:
                self._in_error = str(err)
            sm.cas(_S.COLO, _S.FAILED)
        finally:
            self._close(conn)

    def _close(self, conn: MigrationConnection) -> None:
        self._live.discard(conn)
        conn.close()

    def _on_pass(self, n: int) -> None:
        if self.config.capability("events"):
            self._emit("MIGRATION_PASS", {"pass": n})

    def _rollback(self, source: PrecopySource | None, was_running: bool) -> None:
        """Leave the source as it was: dirty logging off, guest running if it was."""
        if self._out_conn is not None:
            self._out_conn.abort()
        if source is not None and source.dirty_logging:
            try:
                self.machine.dirty_log_stop()
            except MachineError as err:
                log.warning("dirty_log_stop after failed migration: %s", err)
        try:
            if was_running and self.runstate.state is not RunState.SHUTDOWN:
                self.vm.start()
            elif self.runstate.state is RunState.FINISH_MIGRATE:
                self.runstate.set(RunState.POSTMIGRATE)
        except MachineError as err:  # e.g. a guest fault: report it, finish the status
            log.error("could not resume the guest after the migration: %s", err)

    def _finish_cancel(self) -> None:
        if self.outgoing.status in (_S.SETUP, _S.ACTIVE):
            self.outgoing.set(_S.CANCELLING)
        self.outgoing.cas(_S.CANCELLING, _S.CANCELLED)

    def cancel(self) -> None:
        """``migrate_cancel``: stop an outgoing migration; a no-op otherwise (QEMU)."""
        if self.outgoing.status not in (_S.SETUP, _S.ACTIVE, _S.DEVICE, _S.PRE_SWITCHOVER):
            return
        self.outgoing.set(_S.CANCELLING)
        self._cancel_requested = True
        task = self._tasks.get("out")
        if task is not None:
            task.cancel()

    # -- incoming -----------------------------------------------------------------
    def incoming(self, uri: str) -> None:
        """``-incoming URI`` / ``migrate-incoming``: listen and load in the background.

        :raise MigrationError: already started, or the address cannot be listened on;
            a bad URI as :func:`parse_uri`. Nothing changes then. The run state is
            ``inmigrate`` (the command's gate refuses otherwise).
        """
        if self.incoming_status.is_running or self.incoming_status.status is _S.COLO:
            raise IncomingStartedError(self.incoming_status.status.value)
        try:
            listener = open_incoming(parse_incoming_uri(uri), self.fds)
        except (MigrationError, AddressError):
            self._emit("MIGRATION", {"status": "setup"})  # QEMU 7.2 emits it first
            raise
        self._listener = listener
        self._in_error = None
        self._last = self.incoming_status
        self.incoming_status.set(_S.SETUP)
        self._tasks["in"] = asyncio.get_running_loop().create_task(
            self._run_incoming(listener), name="migration-incoming")

    @property
    def incoming_address(self) -> list[dict[str, object]]:
        """Where ``-incoming`` listens (QEMU SocketAddress list), or []."""
        return self._listener.socket_address() if self._listener is not None else []

    async def _run_incoming(self, listener: Listener | ReadyIncoming) -> None:
        dest: PrecopyDestination | None = None
        conn: MigrationConnection | None = None
        try:
            conn = await accept_incoming(listener, self.config.parameter, self.objects)
            self._live.add(conn)
            self.incoming_status.set(_S.ACTIVE)
            dest = PrecopyDestination(self.machine, conn)
            header = await dest.read_header()
            # QEMU 7.2 enters COLO whatever the destination's own x-colo says (the
            # refusal "... but x-colo capability is not set" is QEMU >= 8.1's)
            if header.colo and self.colo_hook is None:
                raise MigrationError("ENABLE_COLO command come in migration stream, but "
                                     "the replication module is not built in")
            if header.colo and not header.return_path:
                raise MigrationError("COLO stream without a return path")
            loaded = await dest.receive(header)
            if header.return_path:
                await dest.acknowledge()
            if header.colo and self.colo_hook is not None:
                self.incoming_status.set(_S.COLO)
            else:
                self._start_destination(loaded.runstate or RunState.RUNNING.value)
                self.incoming_status.set(_S.COMPLETED)
            log.info("incoming migration completed")
        except Exception as err:  # any failure must discard
            self._in_error = str(err) or type(err).__name__
            log.error("incoming migration failed: %s", err,
                      exc_info=not isinstance(err, MigrationError | MachineError | OSError))
            self.incoming_status.set(_S.FAILED)
            if dest is not None and not dest.conn.one_way:
                await dest.report_failure(str(err))
        except asyncio.CancelledError:
            if self.incoming_status.is_running:
                self._in_error = "incoming migration cancelled"
                self.incoming_status.set(_S.FAILED)
            if not self._cancel_requested:
                raise
        finally:
            listener.close()
            if self._listener is listener:
                self._listener = None
        if self.incoming_status.status is _S.COLO and self.colo_hook is not None and dest:
            await self._colo(self.incoming_status, self.colo_hook.enter_secondary, dest.conn)
        elif conn is not None:
            self._close(conn)

    def _start_destination(self, source_state: str) -> None:
        """QEMU's ``process_incoming_migration_bh``: run if the source ran (and no -S),
        else take the source's run state (paused if it is not reachable)."""
        if source_state == RunState.RUNNING.value:
            if self.autostart:
                self.vm.start()
            else:
                self.runstate.set(RunState.PAUSED)
            return
        try:
            self.runstate.set(RunState(source_state))
        except (ValueError, MachineError):
            self.runstate.set(RunState.PAUSED)

    # -- yank, COLO and shutdown ---------------------------------------------------
    @property
    def has_connection(self) -> bool:
        """True while a migration connection is open (QEMU: the ``migration`` yank
        instance has a channel), in either direction, during COLO too."""
        return any(not conn.closed for conn in self._live)

    def yank(self) -> bool:
        """``yank`` of the ``migration`` instance: cut every open migration connection.

        A running migration fails as on any broken link (``failed``, the source's guest
        resumed); a COLO session loses its link (COLO_EXIT, error). True if any was cut.
        """
        live = [conn for conn in self._live if not conn.closed]
        for conn in live:
            log.warning("yank: cutting the migration connection to %s", conn.peer)
            conn.abort()
        return bool(live)

    def colo_completed(self) -> None:
        """COLO failover: migration status ``colo → completed`` (either direction)."""
        for sm in (self.outgoing, self.incoming_status):
            sm.cas(_S.COLO, _S.COMPLETED)

    async def aclose(self) -> None:
        """Daemon component protocol: same as :meth:`close`."""
        await self.close()

    async def close(self) -> None:
        """Cancel whatever runs (daemon shutdown) and wait for it to clean up."""
        self._cancel_requested = True
        self.fds.close()
        if self._listener is not None:
            self._listener.close()
        if self.outgoing.status in (_S.SETUP, _S.ACTIVE):
            self.outgoing.set(_S.CANCELLING)
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
