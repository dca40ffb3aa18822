"""The composition root: builds every layer, owns start-up and shutdown order.

Users: :mod:`qmpd.cli` calls :func:`run_daemon`; tests start it as a subprocess.

Start-up::

    schema.json -> EventBus -> RunStateHolder
      -> VmStack (machine, serial, migration, COLO; initial run state)
      -> CommandContext (the stack's facades)
      -> handlers + dispatcher (refuses a schema/handler mismatch) -> signals -> pidfile
      -> QMP listeners -> GC freeze -> "ready" (-daemonize parent exits 0)

Everything built at start-up (schema, models, handlers, the machine) lives as long as the
process: it is moved out of the collector's reach (``gc.freeze``), so that a full
collection walks only what was allocated since, not the whole start-up heap, a pass
long enough to stall the event loop (seen right after a COLO takeover, delaying the
guest's first output; figure: bench/results/design-figures.md).

Shutdown (``quit``, SIGTERM, SIGINT, SIGHUP)::

    SHUTDOWN event -> stop accepting, remove socket files -> drain sessions (bounded)
      -> close components in reverse order of registration -> remove pidfile -> exit 0

Layers join by adding to :attr:`Daemon.components` (anything with ``async aclose()``)
and to the :class:`CommandContext`, as the VM stack does in :meth:`Daemon.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from qmpd.commands import load_handlers
from qmpd.commands.base import version_info
from qmpd.commands.context import CommandContext
from qmpd.commands.dispatcher import CommandDispatcher
from qmpd.config import DaemonConfig
from qmpd.errors import QmpdError
from qmpd.events import Event, EventBus
from qmpd.machine.runstate import RunStateHolder
from qmpd.options import OptionError, os_reason
from qmpd.qmp import wire
from qmpd.qmp.server import QMPServer
from qmpd.schema import load as load_schema
from qmpd.vmstack import VmStack

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Component(Protocol):
    """A long-lived part of the daemon that must be closed at shutdown."""

    async def aclose(self) -> None:
        """Release everything; bounded in time."""


class Daemon:
    """One qmpd process: one VM and its QMP monitors."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        #: closed in reverse order at shutdown, after the QMP sessions are drained
        self.components: list[tuple[str, Component]] = []
        self.server: QMPServer | None = None
        self.ctx: CommandContext | None = None
        #: True once -pidfile is written (a failed start-up removes it again)
        self.pidfile_written = False
        self._stop = asyncio.Event()
        self._cause = "host-signal"

    def request_shutdown(self, cause: str) -> None:
        """Begin a graceful shutdown (idempotent); ``cause`` is a ShutdownCause."""
        if not self._stop.is_set():
            log.info("shutdown requested (%s)", cause)
            self._cause = cause
            self._stop.set()

    async def start(self) -> None:
        """Build everything and start listening.

        :raise QmpdError: schema problems or handler mismatch; an OptionError naming the
            option and value when a monitor cannot be bound or the pidfile written.
        """
        config = self.config
        schema = load_schema(config.schema_path)
        bus = EventBus(validate=schema.validate_event)
        runstate = RunStateHolder()
        # The VM stack: machine, serial, migration, COLO (qmpd.vmstack); it also sets the
        # initial run state (inmigrate / prelaunch / running).
        stack = await VmStack.build(config, runstate, bus.emit, schema)
        self.components.append(("vm", stack))
        ctx = CommandContext(runstate=runstate, events=bus, vm_name=config.name,
                             shutdown=self.request_shutdown, schema=schema, config=config,
                             machine=stack.machine, vm=stack.vm, migration=stack.migration,
                             colo=stack.colo)
        self.ctx = ctx
        dispatcher = CommandDispatcher(ctx, load_handlers(), schema)
        server = QMPServer(dispatcher, wire.greeting(version_info(), ["oob"]),
                           max_message_bytes=config.max_message_bytes,
                           max_event_backlog=config.max_event_backlog)
        self.server = server
        bus.subscribe(lambda ev: server.broadcast(_encode_event(ev)))
        # Signals before the monitors: whoever can connect may also signal us, and a signal
        # that arrives before the handlers exist would kill the process without SHUTDOWN,
        # leaving socket files and the pidfile behind.
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        if config.pidfile:  # before the monitors: whoever sees a socket finds the pidfile
            try:
                _write_pidfile(config.pidfile)
            except OSError as err:
                raise OptionError("-pidfile", f"cannot write: {os_reason(err)}",
                                  config.pidfile) from err
            self.pidfile_written = True
        for monitor in config.monitors:
            if monitor.wait:
                log.warning("-qmp %s: wait=on is not supported, not waiting", monitor.spec)
            try:
                await server.listen(monitor.address)
            except OSError as err:
                raise OptionError("-qmp", f"cannot listen: {os_reason(err)}",
                                  monitor.spec) from err

    def _on_signal(self, signum: int) -> None:
        # Shutdown first: a closed or broken stderr must not keep qmpd from stopping.
        self.request_shutdown("host-signal")
        with contextlib.suppress(OSError, ValueError):
            print(f"qmpd: terminating on signal {signum}", file=sys.stderr, flush=True)

    async def wait_and_stop(self) -> None:
        """Wait for a shutdown request, then shut down in order."""
        await self._stop.wait()
        assert self.ctx is not None and self.server is not None
        self.ctx.events.emit("SHUTDOWN", {"guest": False, "reason": self._cause})
        await self.server.close_listeners()
        await self.server.drain_sessions(self.config.drain_timeout)
        for name, component in reversed(self.components):
            try:
                async with asyncio.timeout(self.config.drain_timeout * 2):
                    await component.aclose()
            except Exception:
                log.exception("closing %s failed", name)
        if self.config.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.pidfile)
        for signum in _SIGNALS:
            asyncio.get_running_loop().remove_signal_handler(signum)


def _write_pidfile(path: str) -> None:
    """Write our pid (a tiny synchronous write, before any client is served)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _encode_event(event: Event) -> bytes:
    return wire.event_message(event.name, event.data, event.seconds, event.microseconds)


async def _main(config: DaemonConfig, ready: Callable[[bool], None]) -> int:
    daemon = Daemon(config)
    try:
        await daemon.start()
    except (QmpdError, OSError) as err:
        print(f"qmpd: {err}", file=sys.stderr)
        if daemon.server is not None:
            await daemon.server.close_listeners()
        if daemon.pidfile_written and config.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(config.pidfile)
        ready(False)
        return 1
    gc.collect()
    gc.freeze()
    ready(True)
    await daemon.wait_and_stop()
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _daemonize() -> Callable[[bool], None]:
    """Fork; the parent exits when the child reports readiness (0) or failure (1)."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        status = os.read(read_fd, 1)
        os._exit(0 if status == b"1" else 1)
    os.close(read_fd)
    os.setsid()

    def ready(ok: bool) -> None:
        os.write(write_fd, b"1" if ok else b"0")
        os.close(write_fd)
        if ok:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
    return ready


def run_daemon(config: DaemonConfig) -> int:
    """Run qmpd until shutdown; returns the exit status."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 6000))  # QEMU's nesting limit 1024
    ready: Callable[[bool], None] = _daemonize() if config.daemonize else (lambda ok: None)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(config, ready))
