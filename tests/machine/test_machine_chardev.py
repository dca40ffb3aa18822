"""Chardev backends: QEMU syntax, socket output only while a client is connected."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpd.config import DaemonConfig, parse_chardev, parse_serial
from qmpd.errors import ConfigError
from qmpd.machine.chardev import open_chardev
from qmpd.machine.errors import MachineConfigError
from qmpd.options import SocketAddress


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(400):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within 2 s")


async def test_unix_server_drops_output_without_a_client(tmp_path: Path) -> None:
    path = str(tmp_path / "serial.sock")
    dev = open_chardev(parse_serial(f"unix:{path},server=on,wait=off"))
    await dev.start()
    try:
        dev.write(b"lost\n")
        assert dev.dropped == 5
        assert not dev.connected
        reader, writer = await asyncio.open_unix_connection(path)
        await until(lambda: dev.connected)
        # A second client is refused while the first is connected.
        r2, w2 = await asyncio.open_unix_connection(path)
        assert await asyncio.wait_for(r2.read(), 2) == b""
        w2.close()
        dev.write(b"seq=0 sum=0000000000000010\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"seq=0 sum=0000000000000010\n"
        writer.close()
        await until(lambda: not dev.connected)
        dev.write(b"again\n")
        assert dev.dropped == 11
    finally:
        dev.close()
    assert not await asyncio.to_thread(os.path.exists, path)


async def test_wait_on_waits_for_the_first_client(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    config = DaemonConfig(serial=[parse_serial("chardev:c0")], chardev=[
        parse_chardev(f"socket,id=c0,path={path},server=on,wait=on")])
    dev = open_chardev(config.serial_backend())
    start = asyncio.ensure_future(dev.start())
    await asyncio.sleep(0.05)
    assert not start.done()
    _, writer = await asyncio.open_unix_connection(path)
    await asyncio.wait_for(start, 2)
    assert dev.connected
    writer.close()
    dev.close()


async def test_file_null_and_tcp(tmp_path: Path) -> None:
    f = open_chardev(parse_serial(f"file:{tmp_path / 'out.log'}"))
    await f.start()
    f.write(b"abc")
    f.close()
    assert (tmp_path / "out.log").read_bytes() == b"abc"
    null = open_chardev(parse_serial("null"))
    await null.start()
    null.write(b"x")
    null.close()
    tcp = open_chardev(parse_serial("tcp:127.0.0.1:0,server=on,wait=off"))
    await tcp.start()
    tcp.write(b"dropped")
    assert tcp.dropped == 7
    tcp.close()


@pytest.mark.parametrize("spec,reason", [
    ("bogus", "unknown backend 'bogus' (expected null, stdio, file:PATH, unix:PATH, "
              "tcp:HOST:PORT or chardev:ID)"),
    ("unix:", "a socket path must be given (unix:PATH)"),
    ("tcp:x:notaport,server=on", "invalid port 'notaport'"),
    ("tcp:x:70000,server=on", "port 70000 is out of range (0-65535)"),
    ("unix:/tmp/x,server=maybe", "Parameter 'server' expects 'on' or 'off'"),
    ("unix:/tmp/x,colour=red", "Invalid parameter 'colour'"),
    ("file:", "file: needs a path after ':'"),
    (f"unix:/{'x' * 107},server=on", "socket path is 108 bytes long, the limit is 107")])
def test_bad_specs(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_serial(spec)
    assert getattr(err.value, "reason", str(err.value)) == reason


def test_unresolved_chardev() -> None:
    config = DaemonConfig(serial=[parse_serial("chardev:missing")])
    with pytest.raises(ConfigError, match=r"^chardev 'missing' not found$"):
        config.serial_backend()


async def test_start_failure_names_option_and_value(tmp_path: Path) -> None:
    spec = f"socket,id=c,path={tmp_path}/missing/s.sock,server=on,wait=off"
    dev = open_chardev(parse_chardev(spec))
    with pytest.raises(MachineConfigError) as err:
        await dev.start()
    assert str(err.value) == f"-chardev {spec}: cannot listen: No such file or directory"


def test_parse_chardev() -> None:
    sock = parse_chardev("socket,id=s,path=/p,server=on,wait=off")
    assert (sock.backend, sock.id, sock.address, sock.server, sock.wait) == (
        "socket", "s", SocketAddress("unix", path="/p"), True, False)
    assert sock.filename == "unix:/p,server=on"
    tcp = parse_chardev("socket,id=t,host=::1,port=4000")
    assert (tcp.address, tcp.server, tcp.filename) == (
        SocketAddress("tcp", host="::1", port=4000), False, "tcp:[::1]:4000")
    assert parse_chardev("file,id=f,path=/x").filename == "file:/x"
    assert parse_chardev("null,id=n").filename == "null"
    for bad, text in [("socket,path=/p", "Parameter 'id' is missing"),
                      ("pty,id=p", "unknown backend 'pty' (expected null, stdio, file or "
                                   "socket)"),
                      ("file,id=f", "Parameter 'path' is missing")]:
        with pytest.raises(ConfigError) as err:
            parse_chardev(bad)
        assert str(err.value) == text
