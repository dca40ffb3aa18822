"""Client-side helpers: run qmpd processes, drive them over QMP, read their serial output.

Used by the demo (:mod:`qmpd.testing.demo`), the end-to-end tests and the benchmarks, so
that all three start and observe a COLO pair the same way. Nothing here is imported by
the daemon itself.

A :class:`SerialReader` is the "outside observer": it connects to a guest's serial
UNIX socket and keeps every byte it receives, in order. :func:`joined_stream` glues
what was read from the primary and then from the secondary into the one stream an
outside reader saw.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from qmpd.machine.guest_check import StreamReport

# The stream check the tests, the demo and the benchmarks use is the user's command's.
from qmpd.tools.check_stream import check_stream as check_stream

#: Every qmpd this process started; any still alive at exit is killed (no leaks from a
#: test run that was interrupted).
_CHILDREN: set[int] = set()


@atexit.register
def _kill_children() -> None:
    for pid in list(_CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class QmpdProcess:
    """One running ``qmpd`` and a connected QMPClient."""

    name: str
    workdir: Path
    proc: asyncio.subprocess.Process
    qmp: QMPClient
    qmp_path: Path
    serial_path: Path
    log_path: Path
    #: the command line it was started with
    args: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _event_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, workdir: Path, extra: Sequence[str] = (),
                    mem: str = "64M", guest: str | None = "counter,wss=8M,dirty=64,pace=20000",
                    timeout: float = 20.0, pass_fds: Sequence[int] = ()) -> QmpdProcess:
        """Start ``python -m qmpd`` with a QMP and a serial UNIX socket in ``workdir``
        (``guest`` None: no ``-guest``, qmpd's default guest; ``pass_fds``: descriptors
        it inherits, for ``-incoming fd:N``)."""
        qmp_path = workdir / f"{name}.qmp"
        serial_path = workdir / f"{name}.serial"
        log_path = workdir / f"{name}.log"
        args = [sys.executable, "-m", "qmpd", "-name", name,
                "-qmp", f"unix:{qmp_path},server=on,wait=off",
                "-serial", f"unix:{serial_path},server=on,wait=off",
                "-m", mem, *(["-guest", guest] if guest is not None else []), *extra]
        logf = open(log_path, "wb")  # noqa: SIM115, ASYNC230 - handed to the child
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, pass_fds=tuple(pass_fds))
        logf.close()
        _CHILDREN.add(proc.pid)
        deadline = time.monotonic() + timeout
        while not (qmp_path.exists() and serial_path.exists()):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qmpd {name} did not start: {log_path.read_text()}")
            await asyncio.sleep(0.02)
        qmp = QMPClient(name)
        while True:
            try:
                await asyncio.wait_for(qmp.connect(str(qmp_path)), timeout)
                break
            except Exception:
                if proc.returncode is not None or time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                    raise
                await asyncio.sleep(0.05)
        self = cls(name, workdir, proc, qmp, qmp_path, serial_path, log_path, args)
        self._event_task = asyncio.create_task(self._collect_events())
        return self

    async def _collect_events(self) -> None:
        async for event in self.qmp.events:
            self.events.append(dict(event))

    async def cmd(self, name: str, **args: Any) -> Any:
        """Execute a command; raise ``ExecuteError`` on an error reply."""
        return await self.qmp.execute(name, args or None)

    async def wait_event(self, name: str, timeout: float = 10.0,
                         **data: Any) -> dict[str, Any]:
        """Wait for an event called ``name`` whose data contains ``data``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev["event"] == name and all(
                        ev.get("data", {}).get(k) == v for k, v in data.items()):
                    return ev
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {name} {data} in {timeout}s; "
                                   f"got {[e['event'] for e in self.events]}")
            await asyncio.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the qmpd process."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        """Disconnect and make sure the process is gone."""
        if self._event_task is not None:
            self._event_task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.qmp.disconnect(), 2)
        if self.proc.returncode is None:
            self.kill(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.kill(signal.SIGKILL)
                await self.proc.wait()
        _CHILDREN.discard(self.proc.pid)


class SerialReader:
    """An outside observer connected to a guest's serial UNIX socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = bytearray()
        self.eof = asyncio.Event()
        #: perf_counter() when the first byte arrived (None before).
        self.first_at: float | None = None
        self._got_data = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Connect and start collecting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # Keep the writer: a collected StreamWriter closes the connection.
                reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                if self.first_at is None:
                    self.first_at = time.perf_counter()
                    self._got_data.set()
                self.data += chunk
        except OSError:
            pass
        finally:
            self.eof.set()

    async def wait_first_byte(self, timeout: float = 10.0) -> float:
        """Wait (without polling) for the first byte; return when it arrived."""
        await asyncio.wait_for(self._got_data.wait(), timeout)
        assert self.first_at is not None
        return self.first_at

    def lines(self) -> list[bytes]:
        """Complete lines received so far."""
        return bytes(self.data).split(b"\n")[:-1]

    async def wait_lines(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least ``n`` complete lines have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.lines()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: {len(self.lines())} lines, wanted {n}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()


def joined_stream(*readers: SerialReader) -> bytes:
    """What an outside reader saw, following each reader in turn."""
    return b"".join(bytes(r.data) for r in readers)


async def destination_continues(readers: Sequence[SerialReader], guest: str | None,
                                 more: int = 200) -> StreamReport:
    """After a migration: wait for ``more`` lines on the last reader, then check the
    stream all readers saw in turn (no gap, no repeat, good sums); the report."""
    n = len(readers[-1].lines())
    await readers[-1].wait_lines(n + more)
    report = check_stream(joined_stream(*readers), guest or "counter")
    assert report.ok, str(report)
    return report


def workdir(prefix: str = "qmpd-") -> Path:
    """A fresh short temporary directory (UNIX socket paths must stay short)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Takeover:
    """What the outside reader saw across the secondary's takeover."""

    #: the check of the joined stream (primary's records, then the secondary's)
    report: StreamReport
    #: records the reader had from the primary
    from_primary: int
    #: what the secondary wrote before ``x-colo-lost-heartbeat`` (nothing, if all is well)
    early_output: bytes


@dataclass
class ColoPair:
    """A primary and a secondary qmpd in COLO, with an outside reader on each serial."""

    primary: QmpdProcess
    secondary: QmpdProcess
    primary_out: SerialReader
    secondary_out: SerialReader

    async def primary_runs_on(self, guest: str, records: int = 30) -> StreamReport:
        """The secondary is gone: once the primary has left COLO, fail it over, let it
        write ``records`` more and check what its reader saw."""
        await self.primary.wait_event("COLO_EXIT", mode="primary", reason="error")
        await self.primary.cmd("x-colo-lost-heartbeat")
        seen = len(self.primary_out.lines())
        await self.primary_out.wait_lines(seen + records)
        return check_stream(bytes(self.primary_out.data), guest)

    async def secondary_takes_over(self, guest: str, records: int = 30) -> Takeover:
        """The primary was killed: once it is gone and the secondary has left COLO, fail
        the secondary over, let it write ``records`` and check the joined stream."""
        await self.primary.proc.wait()
        await self.primary_out.eof.wait()
        await self.secondary.wait_event("COLO_EXIT", mode="secondary", reason="error")
        early = bytes(self.secondary_out.data)
        await self.secondary.cmd("x-colo-lost-heartbeat")
        seen = len(self.primary_out.lines())
        await self.secondary_out.wait_lines(records)
        report = check_stream(joined_stream(self.primary_out, self.secondary_out), guest)
        return Takeover(report, seen, early)

    async def close(self) -> None:
        """Stop both readers and both processes."""
        for r in (self.primary_out, self.secondary_out):
            await r.close()
        for p in (self.primary, self.secondary):
            await p.close()


async def start_colo_pair(wd: Path, mem: str = "64M",
                          guest: str = "counter,wss=8M,dirty=64,pace=20000",
                          delay_ms: int = 200, extra: Sequence[str] = (),
                          timeout: float = 30.0, transport: str = "tcp",
                          tls_dir: Path | None = None) -> ColoPair:
    """Start a secondary (``-incoming defer``) and a primary, and bring them into COLO.

    As QEMU's COLO documentation now advises: the secondary gets its capabilities
    (x-colo among them) before ``migrate-incoming`` starts listening. ``transport`` is
    ``tcp`` (127.0.0.1) or ``unix`` (a socket in ``wd``).

    Both serial sockets get a reader before COLO starts, so nothing the guest emits on
    either side is missed. Returns once both sides report migration status ``colo``.
    With ``tls_dir`` (:func:`qmpd.testing.certs.make_creds_dir`), the pair migrates and
    checkpoints over TLS (``tls-creds``, host name ``localhost``).
    """
    uri = (f"tcp:127.0.0.1:{free_tcp_port()}" if transport == "tcp"
           else f"unix:{wd / 'migration.sock'}")
    sec_extra, pri_extra = list(extra), list(extra)
    if tls_dir is not None:
        sec_extra += ["-object", f"tls-creds-x509,id=tls0,dir={tls_dir},endpoint=server"]
        pri_extra += ["-object", f"tls-creds-x509,id=tls0,dir={tls_dir},endpoint=client"]
    started: list[QmpdProcess] = []
    readers: list[SerialReader] = []
    try:
        secondary = await QmpdProcess.start(
            "secondary", wd, mem=mem, guest=guest, extra=["-incoming", "defer", *sec_extra])
        started.append(secondary)
        primary = await QmpdProcess.start("primary", wd, mem=mem, guest=guest, extra=pri_extra)
        started.append(primary)
        secondary_out = SerialReader(secondary.serial_path)
        primary_out = SerialReader(primary.serial_path)
        readers += [secondary_out, primary_out]
        await secondary_out.start()
        await primary_out.start()
        caps = [{"capability": c, "state": True}
                for c in ("events", "x-colo", "return-path")]
        await secondary.cmd("migrate-set-capabilities", capabilities=caps)
        if tls_dir is not None:
            await secondary.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
            await primary.cmd("migrate-set-parameters", **{"tls-creds": "tls0",
                                                           "tls-hostname": "localhost"})
        await secondary.cmd("migrate-incoming", uri=uri)
        await primary.cmd("migrate-set-capabilities", capabilities=caps)
        # Lifted cap: the tests' guests may dirty faster than the default 128 MiB/s.
        await primary.cmd("migrate-set-parameters", **{"x-checkpoint-delay": delay_ms,
                                                       "max-bandwidth": 100 << 30})
        await primary.cmd("migrate", uri=uri)
        await primary.wait_event("MIGRATION", timeout=timeout, status="colo")
        await secondary.wait_event("MIGRATION", timeout=timeout, status="colo")
    except BaseException:
        for r in readers:
            await r.close()
        for p in started:
            await p.close()
        raise
    return ColoPair(primary, secondary, primary_out, secondary_out)
