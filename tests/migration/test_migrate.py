"""In-process live migrations between two real machines over real unix and tcp sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qmpd.errors import ArgumentRangeError
from qmpd.machine.runstate import RunState
from qmpd.migration.channels import UriError
from qmpd.migration.errors import (
    IncomingStartedError,
    MigrationInProgressError,
    NoPausedMigrationError,
)
from qmpd.migration.transport import MigrationTransportError

from .conftest import (
    ACCEL,
    MiB,
    NodeFactory,
    check_stream,
    outgoing_uri,
    progress,
    wait_final,
    wait_status,
)

LIBVIRT_STATUSES = {"setup", "active", "pre-switchover", "device", "postcopy-active",
                    "postcopy-paused", "postcopy-recover", "completed", "failed",
                    "cancelling", "cancelled", "wait-unplug"}


def libvirt_parse(info: dict[str, object]) -> None:
    """libvirt's qemuMonitorJSONGetMigrationStatsReply rules (qmp-clients.md §4.4)."""
    status = info["status"]
    assert status in LIBVIRT_STATUSES
    if status in ("active", "completed", "cancelling", "device", "pre-switchover"):
        ram = info.get("ram")
        if ram is not None:
            assert isinstance(ram, dict)
            for key in ("transferred", "remaining", "total"):
                assert isinstance(ram[key], int)
    if status == "failed":
        assert isinstance(info.get("error-desc", ""), str)


@pytest.mark.parametrize(("kind", "accel"), [("unix", ACCEL), ("tcp", ACCEL), ("unix", "tcg")])
async def test_migrate_running_guest(make_node: NodeFactory, kind: str, accel: str,
                                     tmp_path: object) -> None:
    src = make_node(dirty_pages=64, accel=accel)
    dst = make_node(incoming=True, autostart=False, dirty_pages=64, accel=accel)
    at_stop = src.hash_at_stop_point()
    assert src.manager.query() == {}
    await progress(src)
    uri = outgoing_uri(dst, kind, str(tmp_path))
    # listening only: no status yet, as QEMU 7.2 (the MIGRATION event said "setup")
    assert "status" not in dst.manager.query()
    src.manager.start(uri)
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    # -S: the destination is loaded and paused; RAM equals the source's at its stop point.
    assert src.runstate.state is RunState.POSTMIGRATE and not src.machine.running
    assert dst.runstate.state is RunState.PAUSED and not dst.machine.running
    assert at_stop == [dst.ram_hash()]
    src.drain()
    dst.manager.vm.start()
    await progress(dst)
    report = check_stream(src, dst)
    assert report.first_seq == 0
    info = src.manager.query()
    libvirt_parse(info)
    ram = info["ram"]
    assert isinstance(ram, dict)
    assert ram["total"] == 64 * MiB and ram["remaining"] == 0
    assert ram["normal"] > 0 and ram["duplicate"] > 0 and ram["dirty-sync-count"] >= 2
    assert {"setup-time", "total-time", "downtime"} <= set(info)
    assert src.names("MIGRATION", "STOP") == [
        "MIGRATION:setup", "MIGRATION:active", "STOP", "MIGRATION:completed"]
    assert src.names()[:3] == ["MIGRATION:setup", "MIGRATION_PASS", "MIGRATION:active"]
    assert dst.names("MIGRATION") == ["MIGRATION:setup", "MIGRATION:active",
                                      "MIGRATION:completed"]
    assert dst.manager.query() == {"status": "completed"}


async def test_destination_runs_unless_dash_s(make_node: NodeFactory, tmp_path: object
                                              ) -> None:
    src = make_node(events=False)
    dst = make_node(incoming=True, events=False)
    await progress(src)
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    assert dst.runstate.state is RunState.RUNNING and dst.machine.running
    await progress(dst)
    check_stream(src, dst)
    # Without capability events only the incoming side's setup is emitted (QEMU).
    assert src.names("MIGRATION") == []
    assert dst.names("MIGRATION", "RESUME") == ["MIGRATION:setup", "RESUME"]


async def test_query_migrate_while_active_and_bandwidth_honoured(
        make_node: NodeFactory, tmp_path: object) -> None:
    src = make_node(wss_bytes=16 * MiB)
    dst = make_node(incoming=True, wss_bytes=16 * MiB)
    await progress(src)
    await asyncio.sleep(0.3)  # let the guest touch its whole working set
    src.manager.config.set_parameters({"max-bandwidth": 32 * MiB})
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    await wait_status(src, "active")
    await asyncio.sleep(0.2)
    info = src.manager.query()
    libvirt_parse(info)
    assert info["status"] == "active"
    ram = info["ram"]
    assert isinstance(ram, dict)
    assert 0 < ram["transferred"] < 16 * MiB and ram["remaining"] > 0
    assert "expected-downtime" in info and "total-time" in info
    with pytest.raises(MigrationInProgressError):
        src.manager.config.set_capabilities([{"capability": "events", "state": False}])
    with pytest.raises(MigrationInProgressError, match="There's a migration process in "
                                                       "progress"):
        src.manager.start("unix:/nonexistent")
    src.manager.config.set_parameters({"max-bandwidth": 0})  # takes effect mid-migration
    assert await wait_final(src) == "completed"
    info = src.manager.query()
    libvirt_parse(info)
    assert isinstance(info["ram"], dict) and info["ram"]["mbps"] > 0
    assert int(str(info["total-time"])) >= 300


async def test_cancel_midway_leaves_source_running(make_node: NodeFactory, tmp_path: object
                                                   ) -> None:
    src = make_node(wss_bytes=32 * MiB)
    dst = make_node(incoming=True, wss_bytes=32 * MiB)
    await asyncio.sleep(0.3)
    src.manager.config.set_parameters({"max-bandwidth": 16 * MiB})
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    await wait_status(src, "active")
    await asyncio.sleep(0.2)
    src.manager.cancel()
    assert src.manager.query()["status"] == "cancelling"
    assert await wait_final(src) == "cancelled"
    assert src.runstate.state is RunState.RUNNING and src.machine.running
    await progress(src)
    check_stream(src)
    assert src.names("MIGRATION")[-2:] == ["MIGRATION:cancelling", "MIGRATION:cancelled"]
    assert await wait_final(dst) == "failed"
    assert not dst.machine.running and dst.runstate.state is RunState.INMIGRATE
    assert dst.out == b""
    src.manager.cancel()  # no-op once over


async def test_destination_error_reported_on_return_path(make_node: NodeFactory,
                                                         tmp_path: object) -> None:
    src = make_node(mem=64 * MiB)
    dst = make_node(mem=32 * MiB, incoming=True)
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    assert await wait_final(src) == "failed"
    desc = src.manager.query()["error-desc"]
    assert "source RAM is 67108864 bytes, this guest has 33554432" in str(desc)
    assert src.runstate.state is RunState.RUNNING and src.machine.running
    await progress(src)
    check_stream(src)
    assert await wait_final(dst) == "failed"
    assert "source RAM" in str(dst.manager.query()["error-desc"])
    assert not dst.machine.running


async def test_connect_failure(make_node: NodeFactory, tmp_path: object) -> None:
    src = make_node()
    src.manager.start(f"unix:{tmp_path}/nobody")
    assert await wait_final(src) == "failed"
    assert "Failed to connect to" in str(src.manager.query()["error-desc"])
    assert src.runstate.state is RunState.RUNNING


async def test_command_refusals(make_node: NodeFactory, tmp_path: object) -> None:
    src = make_node()
    dst = make_node(incoming=True)
    # (The run-state refusals, "Guest is waiting for an incoming migration" and the
    # like, are the commands' gates: tests/qmp/test_gating.py.)
    with pytest.raises(NoPausedMigrationError,
                       match=r"^Cannot resume if there is no paused migration$"):
        src.manager.start("unix:/x", resume=True)
    with pytest.raises(ArgumentRangeError,
                       match=r"^Parameter .uri. expects a valid migration protocol$"):
        src.manager.start("foo:cat")
    with pytest.raises(UriError, match=r"^invalid Unix socket address$"):
        src.manager.start("unix:")  # QEMU 7.2's socket_parse text (not the CLI's)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MigrationTransportError,
                           match=r"^Failed to bind socket: Address already in use$"):
            dst.manager.incoming(f"tcp:127.0.0.1:{port}")
    assert dst.manager.query() == {}
    uri = outgoing_uri(dst, "unix", str(tmp_path))
    with pytest.raises(IncomingStartedError,
                       match=r"^The incoming migration has already been started$"):
        dst.manager.incoming(uri)
    src.manager.start(uri)
    assert await wait_final(src) == "completed"
    assert src.manager.query()["status"] == "completed"


async def test_iterates_until_remainder_fits_downtime_limit(make_node: NodeFactory,
                                                            tmp_path: object) -> None:
    """downtime-limit 0 with a dirtying guest never converges (QEMU); raising it mid-way
    lets the next pass complete. Every pass is a MIGRATION_PASS event."""
    # At 32 MiB/s a pass of the 4 MiB working set takes ~125 ms, in which the guest
    # re-dirties it (a fast unthrottled pass could find nothing dirty: a pass shorter
    # than one guest step converges even at 0 ms, correctly).
    src = make_node(wss_bytes=4 * MiB, dirty_pages=64, pace=200)
    dst = make_node(incoming=True, wss_bytes=4 * MiB, dirty_pages=64, pace=200)
    await progress(src)
    src.manager.config.set_parameters({"downtime-limit": 0, "max-bandwidth": 32 * MiB})
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    await wait_status(src, "active")
    async with asyncio.timeout(10):
        while src.names().count("MIGRATION_PASS") < 6 and src.manager.status.value == "active":
            await asyncio.sleep(0.005)
    info = src.manager.query()
    ram = info.get("ram")
    if info["status"] != "active" or (isinstance(ram, dict) and ram["downtime-bytes"]):
        # A pass that found nothing dirty (two harvests closer together than one guest
        # step) converges even at 0 ms, correctly; the premise of this test is gone.
        pytest.skip(f"converged early: {info}")
    ram = info["ram"]
    assert isinstance(ram, dict) and ram["dirty-sync-count"] >= 6, info
    assert ram["dirty-pages-rate"] > 0, info
    src.manager.config.set_parameters({"downtime-limit": 300, "max-bandwidth": 0})
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    await progress(dst)
    check_stream(src, dst)
    downtime = src.manager.query()["downtime"]
    assert isinstance(downtime, int) and downtime < 2000


async def test_bandwidth_changes_mid_pass_lose_no_page(make_node: NodeFactory,
                                                      tmp_path: object) -> None:
    """max-bandwidth changes the batch size mid-pass; no page may be skipped or doubled."""
    src = make_node(wss_bytes=32 * MiB)
    dst = make_node(incoming=True, autostart=False, wss_bytes=32 * MiB)
    at_stop = src.hash_at_stop_point()
    await asyncio.sleep(0.3)
    src.manager.config.set_parameters({"max-bandwidth": 64 * MiB})
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    await wait_status(src, "active")
    for bw in (16 * MiB, 48 * MiB, 8 * MiB, 0):
        await asyncio.sleep(0.1)
        src.manager.config.set_parameters({"max-bandwidth": bw})
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    assert at_stop == [dst.ram_hash()]


async def test_paused_source_arrives_paused(make_node: NodeFactory, tmp_path: object) -> None:
    """QEMU's globalstate: a destination takes the source's run state when it was not
    running (even without -S); the source ends postmigrate."""
    src = make_node()
    dst = make_node(incoming=True)
    await progress(src)
    src.manager.vm.stop(RunState.PAUSED)
    src.drain()
    before = src.out.count(b"\n")
    src.manager.start(outgoing_uri(dst, "unix", str(tmp_path)))
    assert await wait_final(src) == "completed"
    assert await wait_final(dst) == "completed"
    assert src.runstate.state is RunState.POSTMIGRATE
    assert dst.runstate.state is RunState.PAUSED and not dst.machine.running
    dst.manager.vm.start()
    await progress(dst)
    assert before > 0
    check_stream(src, dst)
