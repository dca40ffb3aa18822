"""Failures mid-way: a cut connection, a destination killed with SIGKILL, COLO hand-over.

In each failure the source must end ``failed`` with an ``error-desc``, keep (or go back
to) running, and its guest's output must continue as one valid stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from qmpd.machine.runstate import RunState
from qmpd.migration.transport import MigrationConnection

from .conftest import (
    MiB,
    Node,
    NodeFactory,
    check_stream,
    outgoing_uri,
    progress,
    wait_final,
    wait_status,
)

ROOT = Path(__file__).resolve().parents[2]


class Proxy:
    """A UNIX-socket forwarder between source and destination that can cut the link."""

    def __init__(self, listen: str, target: str) -> None:
        self.listen, self.target = listen, target
        self.socks: list[socket.socket] = []
        self.forwarded = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._client, self.listen)

    async def _client(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_unix_connection(self.target)
        self.socks += [w1.get_extra_info("socket"), w2.get_extra_info("socket")]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await r.read(1 << 20):
                    self.forwarded += len(data)
                    w.write(data)
                    await w.drain()
        await asyncio.gather(pump(r1, w2), pump(r2, w1))

    def cut(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if self._server is not None:
            self._server.close()


async def slow_migration(make_node: NodeFactory) -> tuple[Node, Node]:
    src = make_node(wss_bytes=32 * MiB)
    dst = make_node(incoming=True, wss_bytes=32 * MiB)
    await asyncio.sleep(0.3)  # the guest touches its working set: 32 MiB to send
    src.manager.config.set_parameters({"max-bandwidth": 16 * MiB})
    return src, dst


async def assert_source_survived(src: Node) -> None:
    assert await wait_final(src) == "failed"
    assert src.manager.query()["error-desc"]
    assert src.runstate.state is RunState.RUNNING and src.machine.running
    await progress(src)
    check_stream(src)


async def test_connection_cut_midway(make_node: NodeFactory, tmp_path: Path) -> None:
    src, dst = await slow_migration(make_node)
    target = outgoing_uri(dst, "unix", str(tmp_path))[5:]
    proxy = Proxy(f"{tmp_path}/proxy.sock", target)
    await proxy.start()
    src.manager.start(f"unix:{tmp_path}/proxy.sock")
    await wait_status(src, "active")
    await asyncio.sleep(0.3)
    assert proxy.forwarded > 0
    proxy.cut()
    await assert_source_survived(src)
    assert "connection" in str(src.manager.query()["error-desc"])
    assert await wait_final(dst) == "failed"
    assert not dst.machine.running and dst.out == b""


async def test_destination_killed_midway(make_node: NodeFactory, tmp_path: Path) -> None:
    src = make_node(wss_bytes=32 * MiB)
    await asyncio.sleep(0.3)
    src.manager.config.set_parameters({"max-bandwidth": 16 * MiB})
    uri = f"unix:{tmp_path}/dest.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.migration.dest_proc", uri, str(64 * MiB),
        str(32 * MiB), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).strip() == b"listening"
        src.manager.start(uri)
        await wait_status(src, "active")
        await asyncio.sleep(0.4)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await assert_source_survived(src)


class EchoHook:
    """A real COLO hook stand-in: exchanges raw bytes over the handed-over connection."""

    def __init__(self, node: list[Node]) -> None:
        self.node = node
        self.seen: list[tuple[str, str, bool, bytes]] = []

    async def enter_primary(self, chan: MigrationConnection) -> None:
        n = self.node[0]
        chan.write(b"ping")
        await chan.drain()
        got = await chan.recv_exactly(4)
        self.seen.append(("primary", n.runstate.state.value, n.machine.running, got))

    async def enter_secondary(self, chan: MigrationConnection) -> None:
        n = self.node[0]
        got = await chan.recv_exactly(4)
        chan.write(b"pong")
        await chan.drain()
        self.seen.append(("secondary", n.runstate.state.value, n.machine.running, got))


@pytest.mark.parametrize("dst_x_colo", [True, False])
async def test_colo_hook_gets_the_connection(make_node: NodeFactory, tmp_path: Path,
                                             dst_x_colo: bool) -> None:
    """The destination enters COLO when the stream asks for it, whatever its own x-colo
    says, as QEMU 7.2 (refusing it is QEMU >= 8.1 behaviour)."""
    src_ref: list[Node] = []
    dst_ref: list[Node] = []
    src_hook, dst_hook = EchoHook(src_ref), EchoHook(dst_ref)
    src = make_node(hook=src_hook)
    dst = make_node(incoming=True, hook=dst_hook)
    src_ref.append(src)
    dst_ref.append(dst)
    for n in (src, dst) if dst_x_colo else (src,):
        n.manager.config.set_capabilities([{"capability": "x-colo", "state": True}])
    await progress(src)
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    assert src_hook.seen == [("primary", "finish-migrate", False, b"pong")]
    assert dst_hook.seen == [("secondary", "inmigrate", False, b"ping")]
    assert src.names("MIGRATION") == ["MIGRATION:setup", "MIGRATION:active",
                                      "MIGRATION:colo", "MIGRATION:completed"]
    assert dst.names("MIGRATION") == ["MIGRATION:setup", "MIGRATION:active",
                                      "MIGRATION:colo", "MIGRATION:completed"]


async def test_colo_stream_refused_without_colo_support(make_node: NodeFactory,
                                                        tmp_path: Path) -> None:
    src = make_node(hook=EchoHook([]))
    dst = make_node(incoming=True)
    src.manager.config.set_capabilities([{"capability": "x-colo", "state": True}])
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    await assert_source_survived(src)
    assert "replication module is not built in" in str(src.manager.query()["error-desc"])


@pytest.mark.parametrize("when", ["setup", "active"])
async def test_cancel_at_any_point(make_node: NodeFactory, tmp_path: Path, when: str) -> None:
    src, dst = await slow_migration(make_node)
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    if when == "active":
        await wait_status(src, "active")
    src.manager.cancel()
    assert await wait_final(src) == "cancelled"
    assert src.runstate.state is RunState.RUNNING
    await progress(src)
    check_stream(src)
