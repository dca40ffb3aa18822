"""Real clients against a real qmpd: qemu.qmp QMPClient (with OOB) and the legacy sync API."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol
from qmp_helpers import Qmpd, Raw


async def _connected(address: str | tuple[str, int]) -> QMPClient:
    qmp = QMPClient("test")
    await asyncio.wait_for(qmp.connect(address), 10)
    return qmp


def test_qmpclient_negotiates_oob_and_runs_commands(daemon: Qmpd) -> None:
    async def run() -> None:
        qmp = await _connected(daemon.path)
        try:
            assert qmp.greeting is not None
            assert qmp.greeting._asdict()["QMP"]["capabilities"] == ["oob"]
            assert await qmp.execute("query-status") == {
                "status": "running", "singlestep": False, "running": True}
            replies = await asyncio.gather(*(qmp.execute("query-name") for _ in range(20)))
            assert replies == [{"name": "testvm"}] * 20
            with pytest.raises(ExecuteError) as info:
                await qmp.execute("query-status", oob=True)
            assert info.value.error_class == "GenericError"
            assert str(info.value) == "The command query-status does not support OOB"
            with pytest.raises(ExecuteError) as info:
                await qmp.execute("migrate-pause", oob=True)  # allow-oob: runs OOB
            assert str(info.value) == \
                "migrate-pause is currently only supported during postcopy-active state"
            assert info.value.sent["exec-oob"] == "migrate-pause"
            with pytest.raises(ExecuteError) as info:
                await qmp.execute("no-such-command")
            assert info.value.error_class == "CommandNotFound"
        finally:
            await qmp.disconnect()
    asyncio.run(run())


def test_exec_oob_overtakes_queued_in_band_requests(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    client.negotiate(oob=True)
    client.send('{"execute":"query-qmp-schema","id":"ib1"}{"execute":"query-status","id":"ib2"}'
                '{"execute":"query-name","id":"ib3"}{"exec-oob":"migrate-pause","id":"oob"}')
    assert [client.read()["id"] for _ in range(4)] == ["oob", "ib1", "ib2", "ib3"]


def test_without_oob_everything_stays_in_order(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    client.negotiate(oob=False)
    client.send('{"execute":"query-status","id":1}{"exec-oob":"qmp_capabilities","id":2}')
    assert client.read()["id"] == 1
    assert client.read() == {"id": 2, "error": {
        "class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}


def test_qmpclient_receives_events(own_daemon: Qmpd) -> None:
    async def run() -> None:
        qmp = await _connected(own_daemon.path)
        with qmp.listener("SHUTDOWN") as listener:
            assert await qmp.execute("quit") == {}
            event = await asyncio.wait_for(listener.get(), 10)
        assert event["data"] == {"guest": False, "reason": "host-qmp-quit"}
        with contextlib.suppress(EOFError):  # the server may already have sent its EOF
            await qmp.disconnect()
    asyncio.run(run())
    assert own_daemon.proc.wait(10) == 0


def test_legacy_cmd_cmd_obj_and_pull_event(own_daemon: Qmpd) -> None:
    assert own_daemon.port is not None
    for address in (own_daemon.path, ("127.0.0.1", own_daemon.port)):
        qmp = QEMUMonitorProtocol(address)
        greeting = qmp.connect()
        assert greeting is not None
        assert greeting["QMP"]["version"]["qemu"] == {"micro": 0, "minor": 2, "major": 7}
        assert qmp.cmd("query-name") == {}
        assert qmp.cmd_obj({"execute": "query-status"}) == {
            "return": {"status": "running", "singlestep": False, "running": True}}
        assert qmp.cmd_obj({"execute": "nope"}) == {"error": {
            "class": "CommandNotFound", "desc": "The command nope has not been found"}}
        assert qmp.cmd_raw("human-monitor-command", {"command-line": "info status"}) == \
            {"return": "VM status: running\r\n"}
        with pytest.raises(ExecuteError):
            qmp.cmd("query-status", bogus=1)
        assert qmp.pull_event(wait=False) is None
        if isinstance(address, str):
            qmp.close()
    assert qmp.cmd_obj({"execute": "quit"}) == {"return": {}}
    event = qmp.pull_event(wait=5.0)
    assert event is not None and event["event"] == "SHUTDOWN"
    with contextlib.suppress(EOFError):  # the server closed the connection: plain EOF
        qmp.close()
    assert own_daemon.proc.wait(10) == 0
