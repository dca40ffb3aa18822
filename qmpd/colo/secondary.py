"""The secondary's checkpoint loop (periodic mode: the secondary VM does not run).

After the first migration has loaded, the secondary keeps the guest paused in run
state ``colo`` and serves checkpoints::

    primary                                   secondary
                           ◄── checkpoint-ready
    checkpoint-request ──►
                           ◄── checkpoint-reply
    vmstate-send, vmstate-size N ──►          N checked against the guest's size
    N bytes ──►                               read whole into the receive buffer,
                                              decode + verify (crc, bounds, version)
                                 load vCPU/devices  ┐ (validated first; a bad state
                           ◄── vmstate-received   │  raises before the ack)
                                 write RAM pages    ┘ no await in between
                           ◄── vmstate-loaded

A partial, corrupt or hostile checkpoint raises before anything is applied
(invariant 1); the guest then still holds the last good checkpoint. So does a whole
checkpoint whose primary has already closed the link: the primary releases an epoch's
output only on ``vmstate-received``, so a checkpoint it can no longer hear acknowledged
must not become the state the secondary resumes from (it would skip that output). The
remaining window, a primary dying after the acknowledgement reached its socket but
before it wrote the released output, is two adjacent steps of one event-loop callback.
"""

from __future__ import annotations

import logging
import time
import zlib

from qmpd.colo import messages as msg
from qmpd.colo.blob import Checkpoint, blob_limit, parse
from qmpd.colo.messages import ColoMessage, ColoProtocolError
from qmpd.colo.ports import ChannelPort, ColoMachine
from qmpd.colo.stats import CheckpointRecord, ColoStats

log = logging.getLogger(__name__)


class ColoSecondary:
    """One COLO session on the secondary side."""

    def __init__(self, chan: ChannelPort, machine: ColoMachine, stats: ColoStats,
                 hash_ram: bool = False) -> None:
        self.chan = chan
        self.machine = machine
        self.stats = stats
        self.hash_ram = hash_ram
        #: True while a checkpoint is being applied (QEMU's vmstate_loading).
        self.loading = False
        #: Number of the last checkpoint applied.
        self.applied_seq = 0
        self._buf = bytearray()
        self._limit = blob_limit(machine.npages)

    async def run(self) -> None:
        """Serve checkpoints until the link fails or the task is cancelled.

        :raise ColoProtocolError: on a link, protocol or payload error.
        """
        await msg.send_message(self.chan, ColoMessage.CHECKPOINT_READY)
        while True:
            got = await msg.receive_message(self.chan)
            if got is not ColoMessage.CHECKPOINT_REQUEST:
                raise ColoProtocolError(f"Got unknown COLO message: {int(got)}")
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Serve one checkpoint after its ``checkpoint-request``."""
        t0 = time.perf_counter()
        await msg.send_message(self.chan, ColoMessage.CHECKPOINT_REPLY)
        await msg.expect_message(self.chan, ColoMessage.VMSTATE_SEND)
        size = await msg.expect_size(self.chan, self._limit)
        if len(self._buf) < size:
            self._buf = bytearray(max(size, 2 * len(self._buf)))
        view = memoryview(self._buf)[:size]
        try:
            await self.chan.recv_into(view)
        except (OSError, EOFError, ConnectionError) as err:
            raise ColoProtocolError(
                f"Got less VMState data than the expected {size} bytes: {err}") from err
        ckpt = parse(view, self.machine.npages)
        if self.chan.peer_closed():
            # The primary is gone: it cannot have seen our acknowledgement, so it has
            # not released this epoch's output. Applying it would lose that output.
            raise ColoProtocolError(
                f"primary closed the link before checkpoint {ckpt.seq} was acknowledged")
        # From here to the end of apply() there is no await: the acknowledgement and the
        # apply are one step as far as every other task (failover included) can see.
        self.apply(ckpt)
        self.chan.write(msg.encode(ColoMessage.VMSTATE_LOADED))
        await self.chan.drain()
        self.stats.add(CheckpointRecord(
            seq=ckpt.seq, dirty_pages=int(ckpt.index.size), blob_bytes=size,
            round_trip_ms=(time.perf_counter() - t0) * 1000,
            ram_crc=zlib.crc32(self.machine.pages.data) if self.hash_ram else None))

    def apply(self, ckpt: Checkpoint) -> None:
        """Apply a verified checkpoint and acknowledge it.

        The machine state goes first because ``load_state`` validates before it changes
        anything; only then is ``vmstate-received`` queued and RAM written.
        """
        self.loading = True
        try:
            self.machine.load_state(ckpt.state)
            self.chan.write(msg.encode(ColoMessage.VMSTATE_RECEIVED))
            if ckpt.index.size:
                self.machine.pages[ckpt.index] = ckpt.pages
            self.applied_seq = ckpt.seq
        finally:
            self.loading = False
        log.debug("COLO secondary: applied checkpoint %d (%d pages)", ckpt.seq,
                  ckpt.index.size)
