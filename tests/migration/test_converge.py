"""Migrations on QEMU 7.2's defaults, and auto-converge, between real qmpd processes.

- Every default (no parameter or capability set, the default guest, ``-m 512M``) over
  unix and over tcp: ``completed``, the destination running, its output continuing the
  source's exactly.
- A guest dirtying about twice what the link carries (``max-bandwidth`` set from the
  guest's own measured rate): without auto-converge it is still ``active`` after many
  passes; with it the throttle follows QEMU's sequence (initial, + increment, capped at
  ``max-cpu-throttle``; read from ``query-migrate``'s ``cpu-throttle-percentage``) and the
  migration completes. A cancelled throttled migration leaves the guest running at its
  full rate again. Orders and ratios are asserted, never durations.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qmpd.testing.harness import (
    QmpdProcess,
    SerialReader,
    check_stream,
    destination_continues,
    free_tcp_port,
    joined_stream,
)

from .test_e2e_qmp import Observer
from .test_e2e_qmp import wd as wd  # the fixture

#: 8192 pages written 4 per step, a few thousand steps/s: the whole working set in ~0.6 s.
BUSY = "counter,wss=32M,dirty=4,pace=500000"
BUSY_DIRTY, PAGE = 4, 4096
EVENTS = [{"capability": "events", "state": True}]


def _uri(wd: Path, transport: str) -> str:
    return f"unix:{wd}/mig.sock" if transport == "unix" else \
        f"tcp:127.0.0.1:{free_tcp_port()}"


async def _wait_status(proc: QmpdProcess, wanted: set[str], timeout: float) -> dict[str, object]:
    async with asyncio.timeout(timeout):
        while (info := await proc.cmd("query-migrate")).get("status") not in wanted:
            await asyncio.sleep(0.05)
    result: dict[str, object] = info
    return result


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_all_defaults_512m_default_guest_completes(wd: Path, transport: str) -> None:
    uri = _uri(wd, transport)
    src = await QmpdProcess.start("src", wd, mem="512M", guest=None)
    dst = await QmpdProcess.start("dst", wd, mem="512M", guest=None, extra=["-incoming", uri])
    readers = [Observer(src.serial_path), Observer(dst.serial_path)]
    try:
        for r in readers:
            await r.start()
        await readers[0].wait_lines(200)
        await src.cmd("migrate", uri=uri)
        info = await _wait_status(src, {"completed", "failed", "cancelled"}, timeout=60)
        assert info["status"] == "completed", info
        assert "cpu-throttle-percentage" not in info
        assert (await src.cmd("query-status"))["status"] == "postmigrate"
        assert (await dst.cmd("query-status"))["status"] == "running"
        await destination_continues(readers, "counter")
    finally:
        for r in readers:
            await r.close()
        for p in (src, dst):
            await p.close()


async def _records_per_window(reader: SerialReader, seconds: float = 0.5) -> int:
    before = len(reader.lines())
    await asyncio.sleep(seconds)
    return len(reader.lines()) - before


class Destinations:
    """A fresh ``-incoming`` qmpd per migration (a broken-off one stays failed)."""

    def __init__(self, wd: Path) -> None:
        self.wd = wd
        self.started: list[QmpdProcess] = []

    async def new(self) -> tuple[QmpdProcess, str]:
        uri = f"unix:{self.wd}/mig{len(self.started)}.sock"
        dst = await QmpdProcess.start(f"dst{len(self.started)}", self.wd, guest=BUSY,
                                      extra=["-incoming", uri])
        self.started.append(dst)
        return dst, uri

    async def close(self) -> None:
        for p in self.started:
            await p.close()


async def test_auto_converge_as_qemu(wd: Path) -> None:
    src = await QmpdProcess.start("src", wd, guest=BUSY)
    dsts = Destinations(wd)
    reader = Observer(src.serial_path)
    readers: list[SerialReader] = [reader]
    try:
        await reader.start()
        await src.cmd("migrate-set-capabilities", capabilities=EVENTS)
        await reader.wait_lines(200)

        # 1. without auto-converge. The link is set from the guest's rate measured while
        # it migrates (dirty logging on, the sender busy): half of what it dirties.
        await src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
        _dst, uri = await dsts.new()
        await src.cmd("migrate", uri=uri)
        await src.wait_event("MIGRATION", status="active")
        for _ in range(2):  # the second time with the sender busy at the link's rate
            steps = await _records_per_window(reader, 1.0)
            link = steps * BUSY_DIRTY * PAGE // 2
            await src.cmd("migrate-set-parameters", **{"max-bandwidth": link})
        passes = sum(e["event"] == "MIGRATION_PASS" for e in src.events)
        await src.wait_event("MIGRATION_PASS", timeout=60, **{"pass": passes + 6})
        info = await src.cmd("query-migrate")
        assert info["status"] == "active" and "cpu-throttle-percentage" not in info, info
        await src.cmd("migrate_cancel")
        assert await _wait_status(src, {"cancelled", "completed"}, timeout=30) == \
            {"status": "cancelled"}

        # 2. throttled at 90 %, cancelled: the guest runs at its full rate again
        await src.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "auto-converge", "state": True}])
        # (downtime-limit 0: a 90 %-throttled guest would converge before the cancel)
        await src.cmd("migrate-set-parameters",
                      **{"cpu-throttle-initial": 90, "downtime-limit": 0})
        _dst, uri = await dsts.new()
        await src.cmd("migrate", uri=uri)
        async with asyncio.timeout(60):
            while "cpu-throttle-percentage" not in (info := await src.cmd("query-migrate")):
                await asyncio.sleep(0.05)
        assert info["cpu-throttle-percentage"] == 90
        throttled = await _records_per_window(reader)
        await src.cmd("migrate_cancel")
        info = await _wait_status(src, {"cancelled", "completed"}, timeout=30)
        assert info == {"status": "cancelled"}
        after = await _records_per_window(reader)
        assert throttled * 3 < after, (throttled, after)

        # 3. QEMU's sequence: initial, + increment, capped; then completed
        # At 10 % the guest still dirties 1.8x the link; at 85 % (90, capped) 0.3x.
        await src.cmd("migrate-set-parameters", **{
            "cpu-throttle-initial": 10, "cpu-throttle-increment": 80, "max-cpu-throttle": 85,
            "downtime-limit": 300})
        dst, uri = await dsts.new()
        out = Observer(dst.serial_path)
        readers.append(out)
        await out.start()
        await src.cmd("migrate", uri=uri)
        seen: list[int] = []
        async with asyncio.timeout(90):
            while (info := await src.cmd("query-migrate"))["status"] == "active":
                pct = info.get("cpu-throttle-percentage")
                if pct is not None and (not seen or seen[-1] != pct):
                    seen.append(pct)
                await asyncio.sleep(0.05)
        assert info["status"] == "completed", info
        assert "cpu-throttle-percentage" not in info
        # Usually [10, 85]; a loaded host may slow the guest enough to converge at 10 %.
        # (The exact sequences, tailslow included: tests/migration/test_throttle.py.)
        assert seen and seen == [10, 85][:len(seen)], seen
        assert (await dst.cmd("query-status"))["status"] == "running"
        n = len(out.lines())
        await out.wait_lines(n + 200)
        report = check_stream(joined_stream(reader, out), BUSY)
        assert report.ok, str(report)
    finally:
        for r in readers:
            await r.close()
        await src.close()
        await dsts.close()
