"""Chardev backends: QEMU syntax, socket output only while a client is connected."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpd.machine.chardev import open_chardev, parse_chardev
from qmpd.machine.errors import MachineConfigError


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(400):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within 2 s")


async def test_unix_server_drops_output_without_a_client(tmp_path: Path) -> None:
    path = str(tmp_path / "serial.sock")
    dev = open_chardev(f"unix:{path},server=on,wait=off")
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
    dev = open_chardev("chardev:c0", {"c0": parse_chardev(
        f"socket,id=c0,path={path},server=on,wait=on")[1]})
    start = asyncio.ensure_future(dev.start())
    await asyncio.sleep(0.05)
    assert not start.done()
    _, writer = await asyncio.open_unix_connection(path)
    await asyncio.wait_for(start, 2)
    assert dev.connected
    writer.close()
    dev.close()


async def test_file_null_and_tcp(tmp_path: Path) -> None:
    f = open_chardev(f"file:{tmp_path / 'out.log'}")
    await f.start()
    f.write(b"abc")
    f.close()
    assert (tmp_path / "out.log").read_bytes() == b"abc"
    null = open_chardev("null")
    await null.start()
    null.write(b"x")
    null.close()
    tcp = open_chardev("tcp:127.0.0.1:0,server=on,wait=off")
    await tcp.start()
    tcp.write(b"dropped")
    assert tcp.dropped == 7
    tcp.close()


@pytest.mark.parametrize("spec", ["bogus", "unix:", "tcp:x:notaport,server=on",
                                  "unix:/tmp/x,server=maybe", "unix:/tmp/x,colour=red",
                                  "chardev:missing"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(MachineConfigError) as err:
        open_chardev(spec)
    assert "\n" not in str(err.value)


def test_parse_chardev() -> None:
    assert parse_chardev("socket,id=s,path=/p,server=on,wait=off") == (
        "s", "unix:/p,server=on,wait=off")
    assert parse_chardev("file,id=f,path=/x") == ("f", "file:/x")
    assert parse_chardev("null,id=n") == ("n", "null")
    for bad in ["socket,path=/p", "pty,id=p", "file,id=f"]:
        with pytest.raises(MachineConfigError):
            parse_chardev(bad)
