"""Output commit: guest output leaves the host only once its checkpoint is safe.

The primary drains the guest's output at every checkpoint pause; what it drained is
the output of the epoch that the checkpoint ends. It is held here and released when
the secondary acknowledges ``vmstate-received`` for that checkpoint (DESIGN invariant
2). On failover of the primary (it runs alone from then on) everything held is
released in order.

Epochs are numbered by the checkpoint that ends them; releases happen in order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class OutputCommit:
    """Held guest output, per epoch, and the sink it is released to."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._held: deque[tuple[int, bytes | bytearray]] = deque()

    @property
    def held_bytes(self) -> int:
        """Bytes produced by the guest and not yet released."""
        return sum(len(data) for _, data in self._held)

    def hold(self, epoch: int, data: bytes | bytearray) -> None:
        """Hold the output ``data`` of ``epoch`` (the checkpoint number ending it)."""
        if data:
            self._held.append((epoch, data))

    def release_through(self, epoch: int) -> int:
        """Release every held epoch up to and including ``epoch``; return bytes released."""
        total = 0
        chunks: list[bytes | bytearray] = []
        while self._held and self._held[0][0] <= epoch:
            _, data = self._held.popleft()
            chunks.append(data)
            total += len(data)
        if chunks:
            self._sink(b"".join(chunks))
        return total

    def release_all(self) -> int:
        """Release everything held (the primary now runs alone)."""
        if not self._held:
            return 0
        return self.release_through(self._held[-1][0])
