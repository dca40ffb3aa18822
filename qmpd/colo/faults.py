"""Fault injection for the COLO primary, for tests and the soak benchmark.

``QMPD_COLO_FAULT=<point>:<checkpoint>`` (comma-separated for several) makes the
primary misbehave at an exact point of one checkpoint transaction:

==================  ==================================================================
``kill-idle``       SIGKILL itself between checkpoints (before checkpoint-request)
``kill-paused``     SIGKILL itself with the guest stopped, before anything is sent
``kill-transfer``   SIGKILL itself after sending half of the checkpoint's bytes
``kill-received``   SIGKILL itself right after releasing output on vmstate-received
``corrupt``         flip one byte of the checkpoint payload after its checksum
``truncate``        send half of the checkpoint payload, then cut the link
==================  ==================================================================

The kills are real ``SIGKILL`` signals to the real process; this only chooses the
instant more precisely than an outside timer can. Unset (the default), nothing happens.
The CLI reads the variable (:mod:`qmpd.cli`, ``DaemonConfig.colo_fault``); the VM stack
parses it before building anything, so a malformed value stops qmpd at start-up.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from qmpd.errors import ConfigError

POINTS = frozenset({"kill-idle", "kill-paused", "kill-transfer", "kill-received",
                    "corrupt", "truncate"})


class FaultPlan:
    """The faults requested by a ``QMPD_COLO_FAULT`` value (``""``: none).

    :raise ConfigError: a malformed value, naming the variable and the bad item.
    """

    def __init__(self, spec: str = "") -> None:
        self._plan: set[tuple[str, int]] = set()
        #: What "kill" does: SIGKILL this process. In-process tests replace it.
        self.kill: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGKILL)
        for item in filter(None, spec.split(",")):
            point, _, seq = item.partition(":")
            if point not in POINTS or not seq.isdigit():
                raise ConfigError(
                    f"QMPD_COLO_FAULT={spec}: bad item '{item}' (expected POINT:CHECKPOINT "
                    f"with POINT one of {', '.join(sorted(POINTS))})")
            self._plan.add((point, int(seq)))

    def __bool__(self) -> bool:
        return bool(self._plan)

    def due(self, point: str, seq: int) -> bool:
        """True if ``point`` is planned for checkpoint ``seq``."""
        return (point, seq) in self._plan

    def add(self, point: str, seq: int) -> None:
        """Plan ``point`` for checkpoint ``seq``."""
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}")
        self._plan.add((point, seq))

    def kill_if_due(self, point: str, seq: int) -> None:
        """Kill this process (SIGKILL) if ``point`` is planned for checkpoint ``seq``."""
        if self.due(point, seq):
            self.kill()
