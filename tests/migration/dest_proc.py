"""A destination in its own process, for kill tests: a real Machine + MigrationManager.

Usage: ``python -m tests.migration.dest_proc URI MEM_BYTES WSS_BYTES``; prints
``listening`` once ready, then waits (the test kills it with SIGKILL).
"""

from __future__ import annotations

import asyncio
import sys

from qmpd.machine import GuestConfig, Machine, MachineConfig
from qmpd.machine.runstate import RunState, RunStateHolder
from qmpd.machine.vmctl import VmControl
from qmpd.migration.manager import MigrationManager


async def main(uri: str, mem: int, wss: int) -> None:
    machine = Machine(MachineConfig(mem_bytes=mem, guest=GuestConfig(
        wss_bytes=wss, dirty_pages=16, pace=2000)))
    runstate = RunStateHolder()
    runstate.set(RunState.INMIGRATE)
    manager = MigrationManager(machine, VmControl(machine, runstate, lambda n, d: None),
                               lambda name, data: None)
    manager.incoming(uri)
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
