"""Precopy source: named phases, from dirty logging to the destination's acknowledgement.

User: :class:`qmpd.migration.manager.MigrationManager`, which owns the task, the
status and the cleanup (resume the guest, stop dirty logging) on any failure.

::

    source (this)                                         destination
    SETUP     connect; header ───────────────────────────► check header
              dirty_log_start; MIGRATION_PASS 1; → active
    BULK      every page: untouched/zero pages as flags,
              others gathered (np.take) ── RAM ... PASS_END ► write pages
    ITERATE   harvest dirty pages; while they do not fit
              downtime-limit at the measured bandwidth:
              send them ───────────────── RAM ... PASS_END ► write pages
    STOP      pause vCPU (run state finish-migrate)
    FINAL     harvest; send ──────────────── RAM, CPU, END ► write pages, load_state
    AWAIT_ACK ◄──────────────────── return path: SHUT(0) ─── (or ERROR text, SHUT(1))
    DONE      (manager: completed + postmigrate, or colo)

Each dirty-bitmap sync also feeds auto-converge (:mod:`qmpd.migration.throttle`), whose
throttle is lifted when ``run`` ends, however it ends.
``max-bandwidth`` is honoured in ``BULK`` and ``ITERATE`` (100 ms windows, as QEMU);
the final pass is unthrottled. Parameters are re-read every batch, so changing
``downtime-limit`` or ``max-bandwidth`` mid-migration takes effect at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qmpd.errors import MigrationError
from qmpd.machine.runstate import RunState
from qmpd.migration.config import MigrationConfig
from qmpd.migration.guest import MigratableMachine, maybe_nonzero
from qmpd.migration.stream import (
    FLAG_COLO,
    FLAG_RETURN_PATH,
    StreamHeader,
    encode_end,
    encode_pass_end,
    encode_ram,
    encode_state,
)
from qmpd.migration.throttle import AutoConverge
from qmpd.migration.transport import MigrationConnection, RpMessage
from qmpd.statemachine import StateMachine

log = logging.getLogger(__name__)

#: Pages gathered and sent per RAM section.
BATCH_PAGES = 2048


class SourcePhase(enum.Enum):
    """The sender's phases, in order."""

    SETUP = "setup"
    BULK = "bulk"
    ITERATE = "iterate"
    STOP = "stop"
    FINAL = "final"
    AWAIT_ACK = "await-ack"
    DONE = "done"


_P = SourcePhase
#: Each phase leads to the next one only; a failure leaves the machine where it was.
PHASES: dict[SourcePhase, frozenset[SourcePhase]] = {
    _P.SETUP: frozenset({_P.BULK}),
    _P.BULK: frozenset({_P.ITERATE}),
    _P.ITERATE: frozenset({_P.STOP}),
    _P.STOP: frozenset({_P.FINAL}),
    _P.FINAL: frozenset({_P.AWAIT_ACK}),
    _P.AWAIT_ACK: frozenset({_P.DONE}),
    _P.DONE: frozenset(),
}


class DestinationError(MigrationError):
    """The destination reported a failure on the return path."""


@dataclass
class RamCounters:
    """What ``query-migrate`` reports in ``ram`` and the time members."""

    total: int = 0
    transferred: int = 0
    duplicate: int = 0
    normal: int = 0
    remaining: int = 0
    dirty_sync_count: int = 0
    dirty_pages_rate: int = 0
    mbps: float = 0.0
    pages_per_second: int = 0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    start: float = field(default_factory=time.monotonic)
    setup_time_ms: int = 0
    total_time_ms: int | None = None
    downtime_ms: int | None = None
    expected_downtime_ms: int = 0
    #: auto-converge's throttle in force (0: none; query-migrate shows it only then).
    cpu_throttle_percentage: int = 0

    def ram_info(self, page_size: int, *, done: bool) -> dict[str, object]:
        """``query-migrate``'s MigrationStats (``ram``); ``done``: completed."""
        return {
            "transferred": self.transferred, "remaining": 0 if done else self.remaining,
            "total": self.total, "duplicate": self.duplicate, "skipped": 0,
            "normal": self.normal, "normal-bytes": self.normal * page_size,
            "dirty-pages-rate": 0 if done else self.dirty_pages_rate, "mbps": self.mbps,
            "dirty-sync-count": self.dirty_sync_count, "postcopy-requests": 0,
            "page-size": page_size, "multifd-bytes": 0,
            "pages-per-second": self.pages_per_second, "precopy-bytes": self.precopy_bytes,
            "downtime-bytes": self.downtime_bytes, "postcopy-bytes": 0,
            "dirty-sync-missed-zero-copy": 0,
        }


class PrecopySource:
    """Runs one outgoing precopy migration on an open connection.

    :param vm_stop: stops the VM into a run state (``VmControl.stop``).
    :param on_active: called once setup is done (the manager sets ``active``).
    :param on_pass: called with the dirty-sync count (``MIGRATION_PASS``).
    :param global_state: the run state's name, read just before the stop and sent in
        END so the destination ends in it (QEMU's "globalstate" section).
    :param finish: for a one-way channel (``exec:``): no return path; AWAIT_ACK awaits
        this (the consumer has read the stream) instead of the destination's SHUT.
    """

    def __init__(self, machine: MigratableMachine, conn: MigrationConnection,
                 config: MigrationConfig, counters: RamCounters,
                 vm_stop: Callable[[RunState], None], on_active: Callable[[], None],
                 on_pass: Callable[[int], None],
                 global_state: Callable[[], str] = lambda: "running",
                 finish: Callable[[], Awaitable[None]] | None = None) -> None:
        self.machine = machine
        self.conn = conn
        self.config = config
        self.c = counters
        self._vm_stop = vm_stop
        self._on_active = on_active
        self._on_pass = on_pass
        self._global_state = global_state
        self._finish = finish
        self.runstate_at_stop = ""
        self._phase = StateMachine(SourcePhase.SETUP, PHASES,
                                   name="migration source phase", logger=log)
        self.dirty_logging = False
        self._rp_task: asyncio.Task[tuple[int, str]] | None = None
        n = min(BATCH_PAGES, machine.npages)
        self._gather = np.empty((max(n, 1), machine.page_size), dtype=np.uint8)
        self._compact = np.empty_like(self._gather)
        self._window_start = 0.0
        self._window_bytes = 0
        self._downtime_start = 0.0
        self._last_sync = time.monotonic()
        self.auto_converge = AutoConverge(config, machine.page_size, machine.set_cpu_throttle,
                                          on_change=self._throttle_changed)

    # -- the phases ---------------------------------------------------------------
    async def run(self) -> None:
        """SETUP → BULK → ITERATE → STOP → FINAL → AWAIT_ACK → DONE; raises on failure."""
        m, c = self.machine, self.c
        flags = FLAG_COLO if self.config.capability("x-colo") else 0
        if self._finish is None:
            flags |= FLAG_RETURN_PATH
        c.total = m.npages * m.page_size
        # queued: a failed write surfaces at the first RAM section, after ``active``
        # (as QEMU's buffered QEMUFile: setup, MIGRATION_PASS 1, active, failed)
        self.conn.write(StreamHeader(flags, c.total, m.page_size).encode())
        if self._finish is None:
            self._rp_task = asyncio.get_running_loop().create_task(
                self._read_return_path(), name="migration-return-path")
        m.dirty_log_start()
        self.dirty_logging = True
        self._sync_done()
        c.setup_time_ms = int((time.monotonic() - c.start) * 1000)
        c.expected_downtime_ms = self.config.int_parameter("downtime-limit")  # as QEMU
        self._on_active()
        try:
            await self._bulk()
            dirty = await self._iterate()
            self._stop()
            await self._final(dirty)
            await self._await_ack()
        finally:
            self.auto_converge.stop()  # QEMU's migration_iteration_finish
            rp = self._rp_task
            if rp is not None and not rp.done():
                rp.cancel()
            elif rp is not None and not rp.cancelled():
                rp.exception()  # retrieved: the error, if any, was reported already
        self._phase.set(SourcePhase.DONE)

    async def _bulk(self) -> None:
        self._phase.set(SourcePhase.BULK)
        m = self.machine
        touched = maybe_nonzero(m.pages)
        t0 = time.monotonic()
        start = 0
        while start < m.npages:  # one batch size per step: max-bandwidth may change
            end = min(m.npages, start + self._batch())
            cand = start + np.flatnonzero(touched[start:end])
            untouched = start + np.flatnonzero(~touched[start:end])
            await self._send_pages(cand, untouched, throttle=True)
            self.c.remaining = (m.npages - end) * m.page_size
            start = end
        await self._end_pass(t0)

    async def _iterate(self) -> npt.NDArray[np.intp]:
        self._phase.set(SourcePhase.ITERATE)
        m, c = self.machine, self.c
        while True:
            t0 = time.monotonic()
            dirty = self._harvest()
            pending = len(dirty) * m.page_size
            bandwidth = self._bandwidth()
            c.expected_downtime_ms = int(pending / bandwidth * 1000)
            c.remaining = pending
            limit = bandwidth * self.config.int_parameter("downtime-limit") / 1000
            log.debug("pass %d: %d dirty pages, bandwidth %.0f B/s, threshold %.0f B",
                      c.dirty_sync_count, len(dirty), bandwidth, limit)
            if pending <= limit:
                return dirty
            start = 0
            while start < len(dirty):
                end = start + self._batch()
                await self._send_pages(dirty[start:end], None, throttle=True)
                c.remaining = max(0, pending - end * m.page_size)
                start = end
            await self._end_pass(t0)

    def _stop(self) -> None:
        self._phase.set(SourcePhase.STOP)
        self._downtime_start = time.monotonic()
        self.runstate_at_stop = self._global_state()  # QEMU's global_state_store()
        self._vm_stop(RunState.FINISH_MIGRATE)

    async def _final(self, dirty: npt.NDArray[np.intp]) -> None:
        self._phase.set(SourcePhase.FINAL)
        before = self.conn.bytes_sent
        last = self._harvest()
        dirty = np.union1d(dirty, last).astype(np.intp)
        for start in range(0, len(dirty), BATCH_PAGES):
            await self._send_pages(dirty[start:start + BATCH_PAGES], None, throttle=False)
        blob = self.machine.save_state()
        self.machine.dirty_log_stop()
        self.dirty_logging = False
        await self.conn.send([*encode_state(blob), *encode_end(self.runstate_at_stop)])
        self.c.remaining = 0
        self.c.downtime_bytes = self.conn.bytes_sent - before

    async def _await_ack(self) -> None:
        self._phase.set(SourcePhase.AWAIT_ACK)
        if self._finish is not None:
            await self._finish()
        else:
            assert self._rp_task is not None
            status, desc = await self._rp_task
            if status != 0:
                raise DestinationError(desc or f"destination failed to load "
                                              f"(status {status})")
        self.c.downtime_ms = int((time.monotonic() - self._downtime_start) * 1000)
        self.c.total_time_ms = int((time.monotonic() - self.c.start) * 1000)
        self._update_rates()

    # -- helpers ------------------------------------------------------------------
    async def _read_return_path(self) -> tuple[int, str]:
        """Read return-path messages until SHUT; COLO owns the socket after that."""
        desc = ""
        while True:
            kind, payload = await self.conn.recv_rp()
            if kind is RpMessage.ERROR:
                desc = payload.decode("utf-8", "replace")
                log.warning("migration destination reports: %s", desc)
            elif kind is RpMessage.SHUT:
                if len(payload) != 4:
                    raise MigrationError("return path: bad SHUT message")
                return int.from_bytes(payload, "big"), desc

    def _check_destination(self) -> None:
        """Raise at once if the destination already gave up."""
        task = self._rp_task
        if task is not None and task.done():
            status, desc = task.result()  # re-raises a transport error
            if status != 0:
                raise DestinationError(desc or f"destination failed (status {status})")
            raise MigrationError("destination acknowledged before the stream ended")

    def _batch(self) -> int:
        bw = self.config.int_parameter("max-bandwidth")
        per_window = bw // 10 // self.machine.page_size
        return int(max(64, min(BATCH_PAGES, per_window or BATCH_PAGES)))

    def _harvest(self) -> npt.NDArray[np.intp]:
        dirty = self.machine.dirty_log_harvest().astype(np.intp)
        self._sync_done(len(dirty))
        return dirty

    def _sync_done(self, dirtied: int | None = None) -> None:
        """One dirty-bitmap sync: count it, update the dirty rate, MIGRATION_PASS."""
        c, now = self.c, time.monotonic()
        c.dirty_sync_count += 1
        if dirtied is not None:
            c.dirty_pages_rate = int(dirtied / max(now - self._last_sync, 1e-3))
        self._last_sync = now
        self.auto_converge.sync(dirtied or 0, c.transferred, now)
        self._on_pass(c.dirty_sync_count)

    def _throttle_changed(self, pct: int) -> None:
        self.c.cpu_throttle_percentage = pct

    def _bandwidth(self) -> float:
        """Bytes/s measured so far, capped by max-bandwidth (never 0)."""
        elapsed = max(time.monotonic() - self.c.start, 1e-3)
        measured = max(self.c.transferred / elapsed, 1e6)
        cap = self.config.int_parameter("max-bandwidth")
        return min(measured, cap) if cap else measured

    async def _end_pass(self, t0: float) -> None:
        await self.conn.send(encode_pass_end(self.c.dirty_sync_count))
        log.debug("pass %d sent in %.3f s", self.c.dirty_sync_count, time.monotonic() - t0)
        self._update_rates()

    def _update_rates(self) -> None:
        c = self.c
        elapsed = max(time.monotonic() - c.start, 1e-6)
        c.mbps = c.transferred * 8 / elapsed / 1e6
        c.pages_per_second = int((c.normal + c.duplicate) / elapsed)

    async def _send_pages(self, cand: npt.NDArray[np.intp],
                          known_zero: npt.NDArray[np.intp] | None, *, throttle: bool) -> None:
        """Gather ``cand`` pages, elide the all-zero ones, send one RAM section."""
        self._check_destination()
        k = len(cand)
        buf = self._gather[:k]
        np.take(self.machine.pages, cand, axis=0, out=buf, mode="clip")
        words = buf.view(np.uint64)
        nonzero = np.bitwise_or.reduce(words, axis=1) != 0 if k else np.ones(0, np.bool_)
        zero = cand[~nonzero]
        if len(zero) * 16 < k:  # a few zero pages: cheaper to send than to compact around
            zero, nonzero = zero[:0], np.ones(k, np.bool_)
        if len(zero):
            keep = np.flatnonzero(nonzero)
            np.take(buf, keep, axis=0, out=self._compact[:len(keep)], mode="clip")
            buf, normal = self._compact[:len(keep)], cand[keep]
        else:
            normal = cand
        if known_zero is not None and len(known_zero):
            zero = np.concatenate([zero, known_zero])
        parts = encode_ram(normal, zero, buf)
        nbytes = sum(memoryview(p).nbytes for p in parts)
        await self.conn.send(parts)
        c = self.c
        c.transferred += nbytes
        c.precopy_bytes += nbytes
        c.normal += len(normal)
        c.duplicate += len(zero)
        if throttle:
            await self._throttle(nbytes)
        else:
            await asyncio.sleep(0)

    async def _throttle(self, nbytes: int) -> None:
        """QEMU-style rate limit: at most max-bandwidth/10 bytes per 100 ms window."""
        bw = self.config.int_parameter("max-bandwidth")
        now = time.monotonic()
        if now - self._window_start >= 0.1:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += nbytes
        if bw and self._window_bytes >= bw / 10:
            delay = self._window_bytes / bw - (now - self._window_start)
            await asyncio.sleep(max(0.0, delay))
            self._window_start, self._window_bytes = time.monotonic(), 0
        else:
            await asyncio.sleep(0)
