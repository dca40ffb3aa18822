"""The primary's checkpoint loop (periodic mode).

Runs on the migration connection once the first migration has completed with
``x-colo`` on. Every ``x-checkpoint-delay`` ms (or at once when triggered) it runs one
transaction of QEMU's seven messages::

    primary                                   secondary
    checkpoint-request ──►                    (sent when the previous one ended)
                           ◄── checkpoint-reply
    ... x-checkpoint-delay ...
    stop VM (run state colo, STOP)
    drain guest output → held for this epoch
    harvest dirty log, gather pages + vCPU/device state into the staging buffer
    [pipelined: start VM (RESUME) here]
    vmstate-send, vmstate-size N, N bytes ──►  buffered whole and verified
                           ◄── vmstate-received
                           ◄── vmstate-loaded   (staged: ready to become its state)
    release the epoch's output ┐ one step, no await between: the request tells the
    checkpoint-request ──►     ┘ secondary the output has left; it applies, then replies
    [QEMU order: start VM (RESUME) here]
                           ◄── checkpoint-reply

The message order is QEMU's. What differs is when the secondary makes a checkpoint its
state: on the next request, which shows the output has left, not on receipt as QEMU does
(why: docs/COLO.md, "Why the secondary applies on the *next* request").

Pipelined (the default): the guest is started again as soon as its dirty pages and
state are in the staging buffer; the transfer and acknowledgements overlap with the
next epoch, whose output is held until *its* checkpoint is acknowledged.

Failover or a link error ends the loop; :mod:`qmpd.colo.manager` decides what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np
import numpy.typing as npt

from qmpd.checksum import crc32
from qmpd.colo import messages as msg
from qmpd.colo.blob import Staging
from qmpd.colo.faults import FaultPlan
from qmpd.colo.messages import ColoMessage, ColoProtocolError
from qmpd.colo.output import OutputCommit
from qmpd.colo.ports import ChannelPort, ColoMachine, ParamsPort, PumpPort, VmPort
from qmpd.colo.state import FailoverState
from qmpd.colo.stats import CheckpointRecord, ColoStats
from qmpd.machine.runstate import RunState

log = logging.getLogger(__name__)

#: How often an adaptive epoch samples the dirty log.
SAMPLE_S = 0.005
#: How long before the epoch ends the staging buffer is warmed (see Staging.warm):
#: the gather in the pause then writes into cached lines, shortening the pause
#: (bench/results/design-figures.md).
WARM_LEAD_S = 0.001


class ColoPrimary:
    """One COLO session on the primary side.

    :param params: read at each epoch: ``x-checkpoint-delay`` (the period),
        ``x-colo-pipeline`` and ``x-colo-max-dirty-pages`` (adaptive epochs).
    :param hash_ram: record the crc32 of all of RAM at each checkpoint (tests).
    :param faults: the faults to inject (tests, soak benchmark); none by default.
    """

    def __init__(self, chan: ChannelPort, machine: ColoMachine, vm: VmPort,
                 pump: PumpPort, commit: OutputCommit, failover: FailoverState,
                 params: ParamsPort, stats: ColoStats, *, hash_ram: bool = False,
                 faults: FaultPlan | None = None) -> None:
        self.chan = chan
        self.machine = machine
        self.vm = vm
        self.pump = pump
        self.commit = commit
        self.failover = failover
        self.params = params
        self.stats = stats
        self.hash_ram = hash_ram
        self.seq = 0
        self.trigger = asyncio.Event()
        self._staging = Staging()
        self.faults = FaultPlan() if faults is None else faults
        self._last_blob = 0
        # Dirty pages sampled during the epoch (adaptive epochs only).
        self._acc = np.zeros(0, dtype=bool)
        self._acc_count = 0

    async def wait_ready(self) -> None:
        """Wait for the secondary's ``checkpoint-ready``."""
        await msg.expect_message(self.chan, ColoMessage.CHECKPOINT_READY)

    async def run(self) -> None:
        """Checkpoint until failover is requested or the link fails.

        :raise ColoProtocolError: on a link or protocol error.
        """
        await self.wait_ready()
        log.info("COLO primary: secondary ready, starting checkpoints")
        self.vm.start()
        await msg.send_message(self.chan, ColoMessage.CHECKPOINT_REQUEST)
        await msg.expect_message(self.chan, ColoMessage.CHECKPOINT_REPLY)
        last_start = time.monotonic()
        while not self.failover.pending():
            # Like QEMU's timer, re-armed when a checkpoint starts: the period is the
            # delay unless a checkpoint takes longer than that.
            await self._wait_epoch(last_start + self._delay_ms() / 1000.0)
            self.trigger.clear()
            if self.failover.pending():
                log.info("COLO primary: failover request")
                return
            last_start = time.monotonic()
            await self.checkpoint()

    def _delay_ms(self) -> int:
        return self.params.int_parameter("x-checkpoint-delay")

    async def _wait_epoch(self, deadline: float) -> None:
        """Wait for the end of the epoch, a trigger, or (adaptive) too many dirty pages.

        With ``x-colo-max-dirty-pages`` set, the dirty log is sampled every few ms and
        the checkpoint starts early once that many pages are dirty, so that no checkpoint
        carries more than about that much and output waits less (the epoch shortens).
        Shortly before the end, the staging buffer is warmed for the coming gather.
        """
        warm_at: float | None = deadline - WARM_LEAD_S
        while not self.trigger.is_set():
            now = time.monotonic()
            if warm_at is not None and now >= warm_at:
                warm_at = None
                self._staging.warm(self._last_blob)
            left = deadline - now
            if left <= 0:
                return
            limit = self.params.int_parameter("x-colo-max-dirty-pages")
            wake = min(left, SAMPLE_S) if limit else left
            if warm_at is not None:
                wake = min(wake, max(0.0, warm_at - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.trigger.wait(), wake)
            if limit and self._sample() >= limit:
                self.stats.early_checkpoints += 1
                return

    def _sample(self) -> int:
        """Fold the dirty log into the epoch's accumulated set; return its size."""
        if self._acc.size != self.machine.npages:
            self._acc = np.zeros(self.machine.npages, dtype=bool)
            self._acc_count = 0
        index = self.machine.dirty_log_harvest().astype(np.intp)
        if index.size:
            self._acc_count += int(np.count_nonzero(~self._acc[index]))
            self._acc[index] = True
        return self._acc_count

    def _merge(self, index: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        """The epoch's dirty pages: the final harvest ``index`` plus whatever was sampled."""
        if not self._acc_count:
            return index
        self._acc[index.astype(np.intp)] = True
        merged = np.flatnonzero(self._acc)
        self._acc[merged] = False
        self._acc_count = 0
        return merged.astype(np.uint64)

    def _capture(self, seq: int,
                 dirty: npt.NDArray[np.uint64]) -> tuple[bytearray, int, int | None]:
        """On the vCPU thread, guest paused (its state is being saved meanwhile): take the
        epoch's output and gather its dirty pages into the staging buffer. Returns the
        output, the dirty page count and (``hash_ram``, for tests) the crc32 of all of RAM
        at the pause."""
        held = self.machine.output.take()
        index = self._merge(dirty)
        self._staging.gather(seq, self.machine.pages, index)
        crc = crc32(self.machine.pages.data) if self.hash_ram else None
        return held, int(index.size), crc

    async def checkpoint(self) -> None:
        """Run one checkpoint; its request/reply were exchanged when the last one ended."""
        seq = self.seq + 1
        faults = self.faults
        faults.kill_if_due("kill-idle", seq)
        if self.failover.pending():
            return
        t_start = time.perf_counter()
        pipelined = bool(self.params.parameter("x-colo-pipeline"))
        # One vCPU round trip: stop, drain, save, harvest, gather, and (pipelined) run
        # again; the guest never waits for this thread.
        (held, dirty_pages, crc), state, times = self.vm.checkpoint(
            RunState.COLO, lambda dirty: self._capture(seq, dirty), resume=pipelined)
        # The guest runs until the vCPU leaves guest mode (the kick takes a while); it
        # is stopped from then until it is let go.
        t_stopped = max(t_start, times.stopped)
        t_resumed = times.resumed
        self.commit.hold(seq, held)
        first_output = self.pump.take_first_held_time()
        self._staging.add_state(state)
        blob = self._staging.seal()
        self._last_blob = len(blob)
        faults.kill_if_due("kill-paused", seq)
        self.chan.write(msg.encode(ColoMessage.VMSTATE_SEND))
        self.chan.write(msg.encode_size(len(blob)))
        if faults:
            await self._send_with_faults(seq, blob)
            await self.chan.drain()
        else:
            # Zero-copy: the staging buffer is not touched again before this returns.
            await self.chan.send([blob])
        await msg.expect_message(self.chan, ColoMessage.VMSTATE_RECEIVED)
        await msg.expect_message(self.chan, ColoMessage.VMSTATE_LOADED)
        # Release and open the next transaction in one step, with no await in between:
        # the request tells the secondary this epoch's output has left (docs/COLO.md,
        # "Why the secondary applies on the *next* request").
        self.commit.release_through(seq)
        self.chan.write(msg.encode(ColoMessage.CHECKPOINT_REQUEST))
        t_released = time.perf_counter()
        self.seq = seq
        faults.kill_if_due("kill-received", seq)
        if not pipelined:
            self.vm.start()
            t_resumed = time.perf_counter()
        t_end = time.perf_counter()
        await self.chan.drain()
        await msg.expect_message(self.chan, ColoMessage.CHECKPOINT_REPLY)
        self.stats.add(CheckpointRecord(
            seq=seq, dirty_pages=dirty_pages, blob_bytes=len(blob),
            pause_ms=(t_resumed - t_stopped) * 1000, stop_ms=(t_stopped - t_start) * 1000,
            round_trip_ms=(t_end - t_start) * 1000,
            ram_crc=crc,
            release_latency_ms=None if first_output is None
            else (t_released - first_output) * 1000,
            overrun=(t_end - t_start) * 1000 > self._delay_ms()))

    async def _send_with_faults(self, seq: int, blob: memoryview) -> None:
        """Send ``blob`` applying the planned faults (see :mod:`qmpd.colo.faults`)."""
        half = len(blob) // 2
        if self.faults.due("corrupt", seq):
            damaged = bytearray(blob)
            damaged[half] ^= 0x5A
            self.chan.write(damaged)
            return
        self.chan.write(blob[:half])
        await self.chan.drain()
        if self.faults.due("truncate", seq):
            self.chan.abort()
            raise ColoProtocolError(f"fault injection: link cut during checkpoint {seq}")
        self.faults.kill_if_due("kill-transfer", seq)
        self.chan.write(blob[half:])
