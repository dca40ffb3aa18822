"""The TCG accelerator (software CPU, unicorn). Placeholder until implemented."""

from __future__ import annotations

from qmpd.machine.errors import KvmUnavailableError
from qmpd.machine.memory import GuestRam


class TcgAccel:
    """Not yet available."""

    accel = "tcg"

    def __init__(self, ram: GuestRam) -> None:
        raise KvmUnavailableError("tcg accelerator not implemented yet")
