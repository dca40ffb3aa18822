"""Fixtures for machine tests: real guests on KVM (where /dev/kvm exists) and on tcg."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from qmpd.machine import GuestConfig, Machine, MachineConfig

ACCELS = ["kvm", "tcg"] if os.path.exists("/dev/kvm") else ["tcg"]
MiB = 1 << 20

MachineFactory = Callable[..., Machine]


@pytest.fixture(params=ACCELS)
def accel(request: pytest.FixtureRequest) -> str:
    """Each accelerator in turn."""
    return str(request.param)


@pytest.fixture
def make_machine(accel: str) -> Iterator[MachineFactory]:
    """Build machines on ``accel`` (mem 32M, wss 4M unless given); all closed afterwards."""
    made: list[Machine] = []

    def make(mem: int = 32 * MiB, **guest: int) -> Machine:
        guest.setdefault("wss_bytes", 4 * MiB)
        m = Machine(MachineConfig(mem_bytes=mem, accel=accel, guest=GuestConfig(**guest)))
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def read_records(m: Machine, n: int, timeout: float = 10.0) -> list[bytes]:
    """Let ``m`` run until it has emitted at least ``n`` records; pause it; return them all."""
    lines: list[bytes] = []
    deadline = time.monotonic() + timeout
    if not m.running:
        m.resume()
    while len(lines) < n and time.monotonic() < deadline:
        time.sleep(0.005)
        lines += m.output.drain().splitlines()
    m.pause()
    lines += m.output.drain().splitlines()
    return lines
