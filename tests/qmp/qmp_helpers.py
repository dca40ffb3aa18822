"""Shared test helpers: real ``qmpd`` subprocesses on real sockets, a raw QMP line client,
and a real in-process command context (a VM stack started paused) for the dispatcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qmpd.commands.context import CommandContext
from qmpd.config import DaemonConfig
from qmpd.events import EventBus
from qmpd.machine.runstate import RunStateHolder
from qmpd.schema import Schema
from qmpd.schema import load as load_schema
from qmpd.vmstack import VmStack

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Qmpd:
    """A running qmpd process."""

    proc: subprocess.Popen[bytes]
    path: str
    port: int | None
    args: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()


def start_qmpd(tmp: Path, *extra: str, tcp: bool = False, name: str = "qmp.sock") -> Qmpd:
    """Start ``python -m qmpd`` with a UNIX monitor (and a TCP one) and wait for it."""
    path = str(tmp / name)
    port = free_port() if tcp else None
    args = [sys.executable, "-m", "qmpd", "-qmp", f"unix:{path},server=on,wait=off"]
    if port is not None:
        args += ["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"]
    args += list(extra)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 15
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"qmpd did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.02)
    if port is not None:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.02)
    return Qmpd(proc, path, port, args)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qmpd]:
    """One qmpd (UNIX + TCP, -name testvm) shared by a test module."""
    d = start_qmpd(tmp_path_factory.mktemp("qmpd"), "-name", "testvm", tcp=True)
    yield d
    assert d.stop() == 0


@pytest.fixture
def own_daemon(tmp_path: Path) -> Iterator[Qmpd]:
    """A qmpd for one test (for quit, signals, events)."""
    d = start_qmpd(tmp_path, tcp=True)
    yield d
    if d.proc.poll() is None:
        d.stop()


class Raw:
    """A byte-level QMP client: sends exactly what it is given, reads CRLF lines."""

    def __init__(self, path: str | tuple[str, int], read_greeting: bool = True) -> None:
        fam = socket.AF_UNIX if isinstance(path, str) else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.greeting: dict[str, Any] | None = None
        if read_greeting:
            self.greeting = self.read()

    def send(self, data: bytes | str | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self) -> bytes:
        """Next raw line including its CRLF."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read(self) -> dict[str, Any]:
        raw = self.line()
        assert raw.endswith(b"\r\n"), raw
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    def cmd(self, request: dict[str, Any] | str | bytes) -> dict[str, Any]:
        self.send(request)
        return self.read()

    def negotiate(self, oob: bool = False) -> None:
        args = {"enable": ["oob"]} if oob else {}
        assert self.cmd({"execute": "qmp_capabilities", "arguments": args}) == {"return": {}}

    def at_eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b"" and not self.buf
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def raw(daemon: Qmpd) -> Iterator[Raw]:
    """A negotiated raw client on the shared daemon."""
    client = Raw(daemon.path)
    client.negotiate()
    yield client
    client.close()


def error(desc: str, cls: str = "GenericError", **extra: Any) -> dict[str, Any]:
    """An expected error reply."""
    reply: dict[str, Any] = {"error": {"class": cls, "desc": desc}}
    reply.update(extra)
    return reply


@asynccontextmanager
async def vm_context(schema: Schema) -> AsyncIterator[CommandContext]:
    """The daemon's command context over a real VM stack (started paused, ``-S``); the
    commands see ``schema``, the stack is built from the real one (migration's)."""
    config = DaemonConfig(start_paused=True)
    runstate = RunStateHolder()
    stack = await VmStack.build(config, runstate, lambda name, data: None, load_schema())
    try:
        yield CommandContext(runstate=runstate, events=EventBus(schema.validate_event),
                             vm_name=None, shutdown=lambda cause: None, schema=schema,
                             config=config, machine=stack.machine, vm=stack.vm,
                             migration=stack.migration, colo=stack.colo)
    finally:
        await stack.aclose()


class NegotiatedSession:
    """The session view a dispatcher needs: negotiated, oob offered and not enabled."""

    negotiated = True
    oob_offered = True
    oob_enabled = False

    def negotiate(self, oob: bool) -> None:
        raise AssertionError("already negotiated")

    def take_fd(self) -> int | None:
        return None


#: QEMU itself, where installed: tests compare qmpd's answers with a real QEMU 7.2's.
QEMU = shutil.which("qemu-system-x86_64")


def start_qemu_72(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``qemu-system-x86_64 -machine none`` 7.2 (with ``extra`` arguments) and
    its QMP socket path.

    Without QEMU the calling test is skipped with the reason (failed when CI is set);
    a QEMU other than 7.2 skips it too.
    """
    if QEMU is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-system-x86_64 is not installed but CI is set")
        pytest.skip("qemu-system-x86_64 not installed: QEMU 7.2 comparison not run")
    path = tmp / "qemu.sock"
    proc = subprocess.Popen(
        [QEMU, "-machine", "none", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{path},server=on,wait=off", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"QEMU did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.02)
    wait_listening(str(path))  # the file appears at bind(), a moment before listen()
    first = Raw(str(path))
    greeting = first.greeting
    first.close()
    assert greeting is not None
    version = greeting["QMP"]["version"]["qemu"]
    if (version["major"], version["minor"]) != (7, 2):
        proc.kill()
        proc.wait(10)
        pytest.skip(f"installed QEMU is {version}, not 7.2: comparison not run")
    return proc, str(path)


def wait_listening(path: str) -> None:
    """The socket file appears at bind(), a moment before listen()."""
    deadline = time.monotonic() + 15
    while True:
        try:
            Raw(path).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def qmpd_or_qemu72(kind: str, tmp: Path, *qemu_args: str,
                   both: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """(monitor path, pid) of a fresh qmpd (``kind`` "qmpd") or of a real QEMU 7.2
    (:func:`start_qemu_72` with ``qemu_args``: skipped or failed as it says); ``both``
    are options for either."""
    if kind == "qmpd":
        d = start_qmpd(tmp, *both)
        wait_listening(d.path)
        yield d.path, d.proc.pid
        assert d.stop() == 0
        return
    proc, path = start_qemu_72(tmp, *qemu_args, *both)
    try:
        yield path, proc.pid
    finally:
        proc.kill()
        proc.wait(10)
