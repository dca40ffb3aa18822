"""Checkpoint statistics kept by both COLO roles, for the demo, benchmarks and tests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class CheckpointRecord:
    """One checkpoint as the primary (or the secondary) saw it."""

    seq: int
    dirty_pages: int
    blob_bytes: int
    #: primary: the guest stopped, from the vCPU leaving guest mode until it is let go
    pause_ms: float = 0.0
    #: primary: from the stop request until the vCPU left guest mode (the guest still
    #: runs meanwhile; the kick's latency)
    stop_ms: float = 0.0
    round_trip_ms: float = 0.0
    release_latency_ms: float | None = None
    #: the checkpoint took longer than its epoch (x-checkpoint-delay): the guest dirties
    #: more than the link and the secondary can take in one period
    overrun: bool = False
    ram_crc: int | None = None


@dataclass
class ColoStats:
    """Counters plus the most recent checkpoints (bounded)."""

    checkpoints: int = 0
    epoch_overruns: int = 0
    early_checkpoints: int = 0
    #: x-colo-lost-heartbeat to the guest running (the last failover), ms
    failover_ms: float | None = None
    last: deque[CheckpointRecord] = field(default_factory=lambda: deque(maxlen=512))

    def add(self, rec: CheckpointRecord) -> None:
        """Record a completed checkpoint."""
        self.checkpoints += 1
        self.epoch_overruns += rec.overrun
        self.last.append(rec)

    def to_qmp(self) -> dict[str, object]:
        """A JSON-ready summary."""
        recent = list(self.last)
        return {
            "checkpoints": self.checkpoints,
            "epoch-overruns": self.epoch_overruns,
            "early-checkpoints": self.early_checkpoints,
            **({"failover-us": round(self.failover_ms * 1000)}
               if self.failover_ms is not None else {}),
            "recent": [
                {"seq": r.seq, "dirty-pages": r.dirty_pages, "bytes": r.blob_bytes,
                 "pause-us": round(r.pause_ms * 1000),
                 "stop-us": round(r.stop_ms * 1000), "round-trip-us":
                 round(r.round_trip_ms * 1000), "overrun": r.overrun,
                 **({"ram-crc": r.ram_crc} if r.ram_crc is not None else {}),
                 **({"release-latency-us": round(r.release_latency_ms * 1000)}
                    if r.release_latency_ms is not None else {})}
                for r in recent[-64:]
            ],
        }
