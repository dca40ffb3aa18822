"""COLO end to end: two real qmpd processes on real guests, driven by qemu.qmp.

Each test reads as a specification of what an operator sees: statuses and events in
order, refusal texts, and the outside observer's stream across failover.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from qmpd.testing.harness import ColoPair, QmpdProcess, check_stream, joined_stream, start_colo_pair

from .conftest import ACCELS


def _events(p: QmpdProcess, *names: str) -> list[tuple[str, dict[str, object]]]:
    return [(e["event"], e.get("data", {})) for e in p.events if e["event"] in names]


GUEST = "counter,wss=8M,dirty=64,pace=20000"


def assert_intact(stream: bytes, min_records: int = 1) -> None:
    report = check_stream(stream, GUEST)
    assert report.ok, report
    assert report.records >= min_records


async def test_entering_colo_statuses_and_events_in_order(pair: ColoPair) -> None:
    assert [d["status"] for _, d in _events(pair.primary, "MIGRATION")] == [
        "setup", "active", "colo"]
    assert [d["status"] for _, d in _events(pair.secondary, "MIGRATION")] == [
        "setup", "active", "colo"]
    assert await pair.primary.cmd("query-migrate") == {"status": "colo"}
    assert await pair.primary.cmd("query-colo-status") == {
        "mode": "primary", "last-mode": "none", "reason": "none"}
    assert await pair.secondary.cmd("query-colo-status") == {
        "mode": "secondary", "last-mode": "none", "reason": "none"}
    status = await pair.secondary.cmd("query-status")
    assert status["status"] == "colo" and status["running"] is False


async def test_checkpoints_flow_at_the_configured_rate(pair: ColoPair) -> None:
    before = (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"]
    await asyncio.sleep(2.0)
    after = (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"]
    # 100 ms period: about 20 in two seconds.
    assert 12 <= after - before <= 22
    sec = (await pair.secondary.cmd("x-query-colo-stats"))["checkpoints"]
    assert sec >= after - 1


async def test_changing_checkpoint_delay_live_checkpoints_at_once(pair: ColoPair) -> None:
    await asyncio.sleep(0.3)
    await pair.primary.cmd("migrate-set-parameters", **{"x-checkpoint-delay": 5000})
    # The change triggers a checkpoint at once (one more may already be under way).
    await asyncio.sleep(0.4)
    base = (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"]
    await asyncio.sleep(1.0)
    # The change triggered one checkpoint; the next is 5 s away.
    assert (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"] == base
    await pair.primary.cmd("migrate-set-parameters", **{"x-checkpoint-delay": 50})
    await asyncio.sleep(1.0)
    assert (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"] >= base + 5


async def test_failover_to_secondary_after_primary_is_killed(pair: ColoPair) -> None:
    await pair.primary_out.wait_lines(50)
    await asyncio.sleep(0.5)
    pair.primary.kill(signal.SIGKILL)
    await pair.secondary.wait_event("COLO_EXIT", mode="secondary", reason="error")
    assert pair.secondary_out.data == b""
    await pair.secondary.cmd("x-colo-lost-heartbeat")
    await pair.secondary.wait_event("RESUME")
    n = len(pair.primary_out.lines())
    await pair.secondary_out.wait_lines(50)
    assert await pair.secondary.cmd("query-colo-status") == {
        "mode": "none", "last-mode": "secondary", "reason": "request"}
    assert (await pair.secondary.cmd("query-status"))["status"] == "running"
    assert (await pair.secondary.cmd("query-migrate"))["status"] == "completed"
    assert_intact(joined_stream(pair.primary_out, pair.secondary_out), n + 50)


async def test_lost_heartbeat_on_live_secondary_takes_over_and_primary_sees_error(
        pair: ColoPair) -> None:
    await asyncio.sleep(0.5)
    await pair.secondary.cmd("x-colo-lost-heartbeat")
    await pair.secondary.wait_event("COLO_EXIT", mode="secondary", reason="request")
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="error")
    assert _events(pair.secondary, "MIGRATION")[-1][1] == {"status": "completed"}


async def test_lost_heartbeat_on_primary_runs_it_alone(pair: ColoPair) -> None:
    await pair.primary_out.wait_lines(20)
    await pair.primary.cmd("x-colo-lost-heartbeat")
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="request")
    names = [n for n, _ in _events(pair.primary, "MIGRATION", "COLO_EXIT")]
    assert names[-2:] == ["MIGRATION", "COLO_EXIT"]
    assert await pair.primary.cmd("query-colo-status") == {
        "mode": "none", "last-mode": "primary", "reason": "request"}
    n = len(pair.primary_out.lines())
    await pair.primary_out.wait_lines(n + 50)
    assert (await pair.primary.cmd("query-status"))["status"] == "running"
    assert_intact(joined_stream(pair.primary_out), n + 50)


async def test_refusal_texts(pair: ColoPair) -> None:
    await pair.primary.cmd("x-colo-lost-heartbeat")
    with pytest.raises(ExecuteError) as err:
        await pair.primary.cmd("x-colo-lost-heartbeat")
    # Either still failing over or already out of COLO: QEMU 7.2's two texts.
    assert err.value.error_class == "GenericError"
    assert err.value.error_class == "GenericError" and str(err.value) in (
        "COLO failover is already activated", "The feature 'colo' is not enabled")
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="request")
    with pytest.raises(ExecuteError, match=r"^The feature 'colo' is not enabled$"):
        await pair.primary.cmd("x-colo-lost-heartbeat")


async def test_capabilities_can_change_during_colo_without_stopping_it(
        pair: ColoPair) -> None:
    await pair.primary.cmd("migrate-set-capabilities",
                           capabilities=[{"capability": "x-colo", "state": False}])
    base = (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"]
    await asyncio.sleep(0.5)
    assert (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"] > base
    assert (await pair.primary.cmd("query-migrate"))["status"] == "colo"


async def test_secondary_ram_equals_primary_ram_at_each_checkpoint(wd: Path) -> None:
    os.environ["QMPD_COLO_HASH"] = "1"
    try:
        pair = await start_colo_pair(wd, mem="32M", delay_ms=100,
                                     extra=["-accel", ACCELS[0]])
    finally:
        del os.environ["QMPD_COLO_HASH"]
    try:
        await asyncio.sleep(3.0)
        prim = {r["seq"]: r["ram-crc"]
                for r in (await pair.primary.cmd("x-query-colo-stats"))["recent"]}
        sec = {r["seq"]: r["ram-crc"]
               for r in (await pair.secondary.cmd("x-query-colo-stats"))["recent"]}
        common = sorted(set(prim) & set(sec))
        assert len(common) >= 8
        assert all(prim[s] == sec[s] for s in common)
    finally:
        await pair.close()


async def test_query_colo_status_and_refusals_before_colo(wd: Path) -> None:
    node = await QmpdProcess.start("alone", wd, extra=["-accel", ACCELS[0]])
    try:
        assert await node.cmd("query-colo-status") == {
            "mode": "none", "last-mode": "none", "reason": "none"}
        with pytest.raises(ExecuteError, match=r"^The feature 'colo' is not enabled$") as e:
            await node.cmd("x-colo-lost-heartbeat")
        assert e.value.error_class == "GenericError"
        assert await node.cmd("query-migrate") == {}
        caps = {c["capability"]: c["state"]
                for c in await node.cmd("query-migrate-capabilities")}
        assert caps["x-colo"] is False
    finally:
        await node.close()


async def test_failover_to_secondary_during_a_checkpoint(pair: ColoPair) -> None:
    await pair.primary_out.wait_lines(20)
    # The primary stops its guest at the start of every checkpoint: fail over the moment
    # one begins, with the checkpoint's bytes still on their way.
    stops = sum(1 for e in pair.primary.events if e["event"] == "STOP")
    while sum(1 for e in pair.primary.events if e["event"] == "STOP") == stops:
        await asyncio.sleep(0.0005)
    pair.primary.kill(signal.SIGKILL)
    await pair.secondary.cmd("x-colo-lost-heartbeat")
    await pair.secondary.wait_event("COLO_EXIT", mode="secondary")
    await pair.primary_out.eof.wait()
    n = len(pair.primary_out.lines())
    await pair.secondary_out.wait_lines(30)
    assert_intact(joined_stream(pair.primary_out, pair.secondary_out), n + 30)


async def test_lost_heartbeat_on_primary_during_a_checkpoint(pair: ColoPair) -> None:
    await pair.primary_out.wait_lines(20)
    stops = sum(1 for e in pair.primary.events if e["event"] == "STOP")
    while sum(1 for e in pair.primary.events if e["event"] == "STOP") == stops:
        await asyncio.sleep(0.0005)
    await pair.primary.cmd("x-colo-lost-heartbeat")
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="request")
    n = len(pair.primary_out.lines())
    await pair.primary_out.wait_lines(n + 50)
    assert (await pair.primary.cmd("query-status"))["status"] == "running"
    assert (await pair.primary.cmd("query-migrate"))["status"] == "completed"
    assert_intact(joined_stream(pair.primary_out), n + 50)


async def test_stop_and_cont_are_refused_in_colo(pair: ColoPair) -> None:
    """The COLO-mode gates over QMP (the full table: tests/qmp/test_gating.py)."""
    for node in (pair.primary, pair.secondary):
        with pytest.raises(ExecuteError, match=r"^Cannot stop the VM while it is in COLO"):
            await node.cmd("stop")
        with pytest.raises(ExecuteError, match=r"^Cannot continue the VM while it is in COLO"):
            await node.cmd("cont")
        with pytest.raises(ExecuteError, match=r"^Cannot reset the VM while it is in COLO"):
            await node.cmd("system_reset")
    with pytest.raises(ExecuteError, match=r"^'-incoming' was not specified on the command"):
        await pair.primary.cmd("migrate-incoming", uri="unix:/nonexistent/m.sock")
    with pytest.raises(ExecuteError, match=r"^The incoming migration has already been started$"):
        await pair.secondary.cmd("migrate-incoming", uri="unix:/nonexistent/m.sock")


async def test_yank_cuts_the_link_and_both_sides_exit_with_error(pair: ColoPair) -> None:
    await pair.primary.qmp.execute("yank", {"instances": [{"type": "migration"}]},
                                   oob=True)
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="error")
    await pair.secondary.wait_event("COLO_EXIT", mode="secondary", reason="error")
    # Both wait for the operator; the secondary then takes over.
    await pair.secondary.cmd("x-colo-lost-heartbeat")
    await pair.secondary_out.wait_lines(30)
    pair.primary.kill(signal.SIGKILL)
    await pair.primary_out.eof.wait()
    assert_intact(joined_stream(pair.primary_out, pair.secondary_out), 30)


async def test_quit_on_the_secondary_shuts_down_without_taking_over(pair: ColoPair) -> None:
    await pair.secondary.cmd("quit")
    assert await asyncio.wait_for(pair.secondary.proc.wait(), 10) == 0
    assert pair.secondary_out.data == b"", "a secondary that quits must not run the guest"
    await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="error")
    await pair.primary.cmd("x-colo-lost-heartbeat")
    n = len(pair.primary_out.lines())
    await pair.primary_out.wait_lines(n + 30)
    assert_intact(joined_stream(pair.primary_out), n + 30)
