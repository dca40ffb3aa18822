"""The promise: whatever happens to one host, the outside stream has no gap and no repeat.

The primary is killed with SIGKILL at chosen points of the checkpoint transaction (the
process kills itself there, see qmpd.colo.faults) and at random instants from outside;
the secondary then fails over and the stream an outside reader collected from the
primary and then the secondary must be one intact sequence with valid guest checksums.
The same for killing the secondary: the primary then runs on alone.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from qmpd.testing.harness import ColoPair, start_colo_pair

from .conftest import ACCELS

#: A guest that dirties enough memory per epoch for transfer and apply to take a while.
BUSY_GUEST = "counter,wss=16M,dirty=256,pace=20000"


async def _pair(wd: Path, fault: str | None = None, transport: str = "tcp",
                tls_dir: Path | None = None) -> ColoPair:
    if fault is not None:
        os.environ["QMPD_COLO_FAULT"] = fault
    try:
        return await start_colo_pair(wd, mem="64M", guest=BUSY_GUEST, delay_ms=50,
                                     extra=["-accel", ACCELS[0]], transport=transport,
                                     tls_dir=tls_dir)
    finally:
        os.environ.pop("QMPD_COLO_FAULT", None)


async def _fail_over_and_check(pair: ColoPair) -> None:
    took = await pair.secondary_takes_over(BUSY_GUEST)
    assert took.early_output == b"", "the secondary spoke before failover"
    assert took.report.ok, took.report
    assert took.report.records >= took.from_primary + 30


async def _checkpoints(pair: ColoPair, n: int, timeout: float = 20.0) -> None:
    """Wait until the secondary has applied ``n`` checkpoints."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await pair.secondary.cmd("x-query-colo-stats"))["checkpoints"] < n:
        assert loop.time() < deadline, "no checkpoints over the COLO channel"
        await asyncio.sleep(0.02)


POINTS = ["kill-idle", "kill-paused", "kill-transfer", "kill-received"]


@pytest.mark.parametrize("seq", [2, 3, 5, 8])
@pytest.mark.parametrize("point", POINTS)
async def test_primary_killed_at_a_transaction_point(wd: Path, point: str, seq: int) -> None:
    pair = await _pair(wd, f"{point}:{seq}")
    try:
        await _fail_over_and_check(pair)
    finally:
        await pair.close()


@pytest.mark.parametrize(("transport", "round_", "tls"),
                         [("tcp", r, False) for r in range(10)]
                         + [("unix", r, False) for r in range(2)]
                         + [("tcp", r, True) for r in range(4)] + [("unix", 0, True)])
async def test_primary_killed_at_a_random_instant(wd: Path, transport: str, round_: int,
                                                  tls: bool,
                                                  request: pytest.FixtureRequest) -> None:
    """Also over TLS: the COLO channel is the migration's TLS connection."""
    rng = random.Random(1000 + round_ + (100 if transport == "unix" else 0))
    tls_dir: Path | None = request.getfixturevalue("tls_dir") if tls else None
    pair = await _pair(wd, transport=transport, tls_dir=tls_dir)
    try:
        if tls:
            params = await pair.primary.cmd("query-migrate-parameters")
            assert params["tls-creds"] == "tls0"
            await _checkpoints(pair, 2)
        await asyncio.sleep(0.2 + rng.random() * 0.6)
        pair.primary.kill(signal.SIGKILL)
        await _fail_over_and_check(pair)
    finally:
        await pair.close()


@pytest.mark.parametrize("round_", range(4))
async def test_secondary_killed_primary_runs_on_alone(wd: Path, round_: int) -> None:
    rng = random.Random(2000 + round_)
    pair = await _pair(wd)
    try:
        await asyncio.sleep(0.2 + rng.random() * 0.5)
        pair.secondary.kill(signal.SIGKILL)
        report = await pair.primary_runs_on(BUSY_GUEST)
        assert report.ok, report
    finally:
        await pair.close()


@pytest.mark.parametrize("fault", ["corrupt:3", "truncate:3"])
async def test_damaged_checkpoint_is_rejected_and_failover_uses_the_last_good_one(
        wd: Path, fault: str) -> None:
    pair = await _pair(wd, fault)
    try:
        await pair.secondary.wait_event("COLO_EXIT", mode="secondary", reason="error")
        await pair.primary.wait_event("COLO_EXIT", mode="primary", reason="error")
        stats = await pair.secondary.cmd("x-query-colo-stats")
        assert stats["checkpoints"] == 2
        pair.primary.kill(signal.SIGKILL)
        await _fail_over_and_check(pair)
    finally:
        await pair.close()

