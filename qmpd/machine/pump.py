"""The serial pump: moves guest output from the machine to the chardev backend.

Normally output leaves as soon as the vCPU thread reports it (``pass`` mode). COLO's
primary switches the pump to ``held`` mode: from then on only the COLO output commit
drains the guest's output (at each checkpoint pause) and releases it through
:meth:`OutputPump.write` once the checkpoint is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class OutputSource(Protocol):
    """The machine's guest-output buffer (see docs/INTERFACES.md, GuestOutput)."""

    def drain(self) -> bytes:
        """Take every byte emitted so far."""

    def set_notify(self, cb: Callable[[], None] | None) -> None:
        """Call ``cb`` from the vCPU thread when output becomes available."""


class OutputPump:
    """Guest output → chardev, with a held mode for output commit."""

    def __init__(self, source: OutputSource, sink: Callable[[bytes], None]) -> None:
        self._source = source
        self._sink = sink
        self._held = False
        self._first_held_at: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin pumping; notifications arrive from the vCPU thread."""
        def notify() -> None:
            loop.call_soon_threadsafe(self.flush)

        self._source.set_notify(notify)
        self.flush()

    def stop(self) -> None:
        """Stop reacting to notifications."""
        self._source.set_notify(None)

    @property
    def held(self) -> bool:
        """True while output commit owns the guest's output."""
        return self._held

    def flush(self) -> None:
        """In pass mode, send everything the guest has written so far."""
        if self._held:
            if self._first_held_at is None:
                self._first_held_at = time.perf_counter()
        else:
            data = self._source.drain()
            if data:
                self.write(data)

    def hold(self) -> None:
        """Flush what is pending, then leave draining to the output commit."""
        self.flush()
        self._held = True

    def take_first_held_time(self) -> float | None:
        """When output first arrived since the last call (held mode), or None."""
        t, self._first_held_at = self._first_held_at, None
        return t

    def unhold(self) -> None:
        """Back to pass mode; pending output leaves at once."""
        self._held = False
        self.flush()

    def write(self, data: bytes) -> None:
        """Release ``data`` to the chardev."""
        self._sink(data)
