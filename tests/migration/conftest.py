"""Fixtures for in-process migrations between two real machines (KVM, else tcg)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from qmpd.errors import MachineError
from qmpd.machine import GuestConfig, Machine, MachineConfig
from qmpd.machine.guest_check import StreamReport, verify_stream
from qmpd.machine.runstate import RunState, RunStateHolder
from qmpd.machine.vmctl import VmControl
from qmpd.migration.manager import ColoHook, MigrationManager
from qmpd.migration.state import FINAL

MiB = 1 << 20
ACCEL = "kvm" if os.path.exists("/dev/kvm") else "tcg"


@dataclass
class Node:
    """One side: a real machine, its run state, its migration manager, what it emitted."""

    machine: Machine
    runstate: RunStateHolder
    manager: MigrationManager
    guest: GuestConfig
    events: list[tuple[str, dict[str, object] | None]] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)

    def drain(self) -> None:
        self.out += self.machine.output.drain()

    def ram_hash(self) -> str:
        return hashlib.sha256(self.machine.pages.data).hexdigest()

    def hash_at_stop_point(self) -> list[str]:
        """Record the RAM hash when the source saves its state (paused, final pass
        harvested): the stop point. The machine writes host-side words into guest RAM
        when dirty logging stops (config page), so "after completion" is later."""
        seen: list[str] = []
        save = self.machine.save_state

        def save_and_hash() -> bytes:
            seen.append(self.ram_hash())
            return save()

        self.machine.save_state = save_and_hash  # type: ignore[method-assign]
        return seen

    def names(self, *which: str) -> list[str]:
        """Events as strings: ``MIGRATION:active``, ``MIGRATION_PASS``, ``STOP`` ..."""
        res = []
        for name, data in self.events:
            if which and name not in which:
                continue
            res.append(f"{name}:{data['status']}" if name == "MIGRATION" and data else name)
        return res


NodeFactory = Callable[..., Node]


@pytest_asyncio.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """Build nodes; a background task drains every node's guest output; all closed after."""
    nodes: list[Node] = []

    def make(mem: int = 64 * MiB, *, incoming: bool = False, running: bool = True,
             autostart: bool = True, hook: ColoHook | None = None, accel: str = ACCEL,
             events: bool = True, **guest: int) -> Node:
        guest.setdefault("wss_bytes", 8 * MiB)
        guest.setdefault("dirty_pages", 16)
        guest.setdefault("pace", 2000)
        gc = GuestConfig(**guest)
        try:
            m = Machine(MachineConfig(mem_bytes=mem, accel=accel, guest=gc))
        except MachineError as err:
            pytest.skip(f"accelerator {accel} unavailable: {err}")
        rs = RunStateHolder()
        node = Node(m, rs, None, gc)  # type: ignore[arg-type]
        def emit(name: str, data: dict[str, object] | None) -> None:
            node.events.append((name, data))

        node.manager = MigrationManager(m, VmControl(m, rs, emit), emit, autostart=autostart)
        if hook is not None:
            node.manager.set_colo_hook(hook)
        if events:
            node.manager.config.set_capabilities([{"capability": "events", "state": True}])
        node.manager.config.set_parameters({"max-bandwidth": 0})
        if incoming:
            rs.set(RunState.INMIGRATE)
        elif running:
            rs.set(RunState.RUNNING)
            m.resume()
        nodes.append(node)
        return node

    async def pump() -> None:
        while True:
            for n in nodes:
                n.drain()
            await asyncio.sleep(0.005)

    task = asyncio.get_running_loop().create_task(pump())
    yield make
    task.cancel()
    for n in nodes:
        await n.manager.close()
        n.machine.close()


def check_stream(*nodes: Node) -> StreamReport:
    """Verify the concatenated output of ``nodes`` (source first) as one stream."""
    g = nodes[0].guest
    data = b"".join(bytes(n.out) for n in nodes)
    lines = data.decode("ascii", "replace").split("\n")
    if lines and lines[-1]:
        lines = lines[:-1]  # an unfinished last line is not a record yet
    report = verify_stream(lines, d=g.dirty_pages, w=g.ws_pages)
    assert report.ok, str(report)
    assert report.records > 0
    return report


def outgoing_uri(dst: Node, kind: str, tmp: str) -> str:
    """Start ``dst`` listening on a fresh address; return the URI for ``migrate``."""
    if kind == "unix":
        uri = f"unix:{tmp}/mig.sock"
        dst.manager.incoming(uri)
        return uri
    dst.manager.incoming("tcp:127.0.0.1:0")
    port = dst.manager.incoming_address[0]["port"]
    return f"tcp:127.0.0.1:{port}"


async def wait_final(node: Node, timeout: float = 30.0) -> str:
    """Wait until the node's latest migration ends; its status."""
    async with asyncio.timeout(timeout):
        while node.manager.status not in FINAL:
            await asyncio.sleep(0.005)
    return node.manager.status.value


async def wait_status(node: Node, status: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while node.manager.query().get("status") != status:
            await asyncio.sleep(0.002)


async def progress(node: Node, records: int = 200, timeout: float = 10.0) -> None:
    """Wait until ``node``'s output has grown by ``records`` lines."""
    start = node.out.count(b"\n")
    async with asyncio.timeout(timeout):
        while node.out.count(b"\n") < start + records:
            await asyncio.sleep(0.005)
