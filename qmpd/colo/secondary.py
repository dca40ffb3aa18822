"""The secondary's checkpoint loop (periodic mode: the secondary VM does not run).

After the first migration has loaded, the secondary keeps the guest paused in run
state ``colo`` and serves checkpoints::

    primary                                   secondary
                           ◄── checkpoint-ready
    checkpoint-request ──►                    apply the staged checkpoint, if any
                           ◄── checkpoint-reply
    vmstate-send, vmstate-size N ──►          N checked against the guest's size
    N bytes ──►                               read whole into the receive buffer,
                                              decode + verify (crc, bounds, version);
                                              primary already gone? drop it
                           ◄── vmstate-received
                           ◄── vmstate-loaded  (sent together; the checkpoint is staged)

A checkpoint becomes the secondary's state when the primary's next
``checkpoint-request`` arrives, and one still staged at failover is dropped (why:
docs/COLO.md, "Why the secondary applies on the *next* request"). A partial, corrupt or
hostile checkpoint raises before it is staged; nothing of it is ever applied
(invariant 1).
"""

from __future__ import annotations

import logging
import time

from qmpd.checksum import crc32
from qmpd.colo import messages as msg
from qmpd.colo.blob import Checkpoint, blob_limit, parse
from qmpd.colo.messages import ColoMessage, ColoProtocolError
from qmpd.colo.ports import ChannelPort, ColoMachine
from qmpd.colo.stats import CheckpointRecord, ColoStats
from qmpd.machine.memory import AlignedBuffer

log = logging.getLogger(__name__)

_ACKS = msg.encode(ColoMessage.VMSTATE_RECEIVED) + msg.encode(ColoMessage.VMSTATE_LOADED)


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
        #: Number of the last checkpoint applied (0: the state of the first migration).
        self.applied_seq = 0
        self._staged: Checkpoint | None = None
        self._staged_at = 0.0
        self._buf = AlignedBuffer(0)
        self._limit = blob_limit(machine.npages)

    @property
    def staged_seq(self) -> int | None:
        """The checkpoint received and acknowledged but not applied yet, if any."""
        return None if self._staged is None else self._staged.seq

    async def run(self) -> None:
        """Serve checkpoints until the link fails or the task is cancelled.

        :raise ColoProtocolError: on a link, protocol or payload error.
        """
        await msg.send_message(self.chan, ColoMessage.CHECKPOINT_READY)
        while True:
            got = await msg.receive_message(self.chan)
            if got is not ColoMessage.CHECKPOINT_REQUEST:
                raise ColoProtocolError(f"Got unknown COLO message: {int(got)}")
            self.apply_staged()
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Serve one checkpoint after its ``checkpoint-request``: receive and stage it."""
        await msg.send_message(self.chan, ColoMessage.CHECKPOINT_REPLY)
        await msg.expect_message(self.chan, ColoMessage.VMSTATE_SEND)
        size = await msg.expect_size(self.chan, self._limit)
        t0 = time.perf_counter()
        if len(self._buf) < size:
            # Never more than the largest checkpoint this guest can need (invariant 5);
            # touched here, not while receiving; page-aligned like the primary's.
            self._buf = AlignedBuffer(min(max(size, 2 * len(self._buf)), self._limit))
        view = memoryview(self._buf.mm)[:size]
        try:
            await self.chan.recv_into(view)
        except (OSError, EOFError, ConnectionError) as err:
            raise ColoProtocolError(
                f"Got less VMState data than the expected {size} bytes: {err}") from err
        ckpt = parse(view, self.machine.npages)
        if self.chan.peer_closed():
            raise ColoProtocolError(
                f"primary closed the link before checkpoint {ckpt.seq} was acknowledged")
        self._staged, self._staged_at = ckpt, t0
        self.chan.write(_ACKS)
        await self.chan.drain()

    def apply_staged(self) -> None:
        """Make the staged checkpoint the guest's state (its output has left the primary).

        The machine state goes first because ``load_state`` validates before it changes
        anything; RAM pages follow. No await inside: nothing can interleave.
        """
        ckpt = self._staged
        if ckpt is None:
            return
        self._staged = None
        self.loading = True
        try:
            self.machine.load_state(ckpt.state)
            if ckpt.index.size:
                self.machine.pages[ckpt.index] = ckpt.pages
            self.applied_seq = ckpt.seq
        finally:
            self.loading = False
        self.stats.add(CheckpointRecord(
            seq=ckpt.seq, dirty_pages=int(ckpt.index.size),
            blob_bytes=len(ckpt.pages) * 4096,
            round_trip_ms=(time.perf_counter() - self._staged_at) * 1000,
            ram_crc=crc32(self.machine.pages.data) if self.hash_ram else None))
        log.debug("COLO secondary: applied checkpoint %d (%d pages)", ckpt.seq,
                  ckpt.index.size)

    def drop_staged(self) -> int | None:
        """Failover: forget a checkpoint whose output never left; return its number."""
        seq = self.staged_seq
        self._staged = None
        return seq
