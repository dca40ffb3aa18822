"""A COLO pair on every default reaches ``colo`` every time (20 of 20).

The pair is what the README's "COLO by hand" starts: ``-m 256M``, the default guest,
capabilities ``events``, ``x-colo``, ``return-path`` and no parameter set. One primary
serves all 20 rounds, as QEMU's COLO how-to allows: after each entry into COLO it is
told the secondary is lost (``x-colo-lost-heartbeat``: COLO_EXIT, runs alone), the
secondary is killed, and a fresh secondary (started while the previous round ran) gets
the next initial sync. The primary's guest output stays one intact stream throughout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from qmpd.testing.harness import QmpdProcess, SerialReader, destination_continues, free_tcp_port

ROUNDS = 20
CAPS = [{"capability": c, "state": True} for c in ("events", "x-colo", "return-path")]


async def _event_after(proc: QmpdProcess, seen: int, name: str, timeout: float,
                       **data: object) -> int:
    """Wait for event ``name`` with ``data`` among the events after the first ``seen``;
    return how many events there are once it is found."""
    async with asyncio.timeout(timeout):
        while True:
            for i, ev in enumerate(proc.events[seen:], seen):
                if ev["event"] == name and all(ev.get("data", {}).get(k) == v
                                               for k, v in data.items()):
                    return i + 1
            await asyncio.sleep(0.01)


async def test_default_colo_pair_reaches_colo_20_of_20(wd: Path) -> None:
    async def secondary(i: int) -> QmpdProcess:
        return await QmpdProcess.start(f"sec{i}", wd, mem="256M", guest=None,
                                       extra=["-incoming", "defer"])

    primary = await QmpdProcess.start("pri", wd, mem="256M", guest=None)
    out = SerialReader(primary.serial_path)
    pending = asyncio.create_task(secondary(0))
    live: list[QmpdProcess] = [primary]
    reached: list[int] = []
    try:
        await out.start()
        await primary.cmd("migrate-set-capabilities", capabilities=CAPS)
        assert (await primary.cmd("query-migrate-parameters"))["max-bandwidth"] == 128 << 20
        seen = 0
        for i in range(ROUNDS):
            sec = await pending
            live.append(sec)
            if i + 1 < ROUNDS:
                pending = asyncio.create_task(secondary(i + 1))
            uri = f"tcp:127.0.0.1:{free_tcp_port()}"
            await sec.cmd("migrate-set-capabilities", capabilities=CAPS)
            await sec.cmd("migrate-incoming", uri=uri)
            await primary.cmd("migrate", uri=uri)
            seen = await _event_after(primary, seen, "MIGRATION", 40, status="colo")
            await _event_after(sec, 0, "MIGRATION", 40, status="colo")
            assert (await primary.cmd("query-migrate"))["status"] == "colo"
            reached.append(i)
            await primary.cmd("x-colo-lost-heartbeat")
            seen = await _event_after(primary, seen, "COLO_EXIT", 20, mode="primary",
                                      reason="request")
            sec.kill()
            await sec.close()
            live.remove(sec)
        assert reached == list(range(ROUNDS))
        assert (await primary.cmd("query-status"))["status"] == "running"
        await destination_continues([out], None, more=100)
    finally:
        await out.close()
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled() and pending.exception() is None:
            live.append(pending.result())
        for p in live:
            await p.close()
