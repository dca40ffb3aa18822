"""Precopy destination: a step function over validated sections, then load and report.

User: :class:`qmpd.migration.manager.MigrationManager`. The receiver is a state
machine in the style of cloud-hypervisor's ``vm_receive_migration_step``: each state
owns its data; :func:`receive_step` consumes one validated section and returns the next
state, never touching the socket; :class:`PrecopyDestination` is the outer loop that
reads, steps, loads and answers on the return path.

::

    source                                   destination
      │── header ───────────────────────────► AwaitSections (header checked)
      │── RAM* PASS_END ... ────────────────► AwaitSections (pages written; pass n+1)
      │── RAM* CPU ─────────────────────────► AwaitEnd (state blob kept)
      │── END (run state) ──────────────────► Loaded: machine.load_state(blob)
      │◄──────────────────────────── SHUT(0)  then run (or -S: paused; or COLO)
    any error: ◄──────── ERROR text, SHUT(1); discard; the guest never runs

Every page index and length was checked by the decoder before a section reaches
:func:`receive_step`, so a RAM section writes only inside ``machine.pages``. Pages
the stream marks zero are written only if this RAM might hold something else there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qmpd.migration.guest import MigratableMachine, maybe_nonzero
from qmpd.migration.stream import (
    HEADER,
    End,
    MigrationStreamError,
    PassEnd,
    RamBatch,
    Section,
    StateBlob,
    StreamDecoder,
    StreamHeader,
)
from qmpd.migration.transport import MigrationConnection, MigrationTransportError, RpMessage

log = logging.getLogger(__name__)

#: How long a failed destination keeps reading (and discarding) before it closes, so
#: the source gets the error text instead of a reset.
DISCARD_SECONDS = 5.0


@dataclass(frozen=True)
class AwaitSections:
    """Receiving RAM; ``passes`` PASS_END sections seen."""

    header: StreamHeader
    passes: int = 0


@dataclass(frozen=True)
class AwaitEnd:
    """The CPU state arrived; only END may follow."""

    header: StreamHeader
    state: bytes


@dataclass(frozen=True)
class Loaded:
    """END arrived; the state blob is ready to load. ``runstate``: the source's at stop."""

    header: StreamHeader
    state: bytes
    runstate: str = ""


RecvState = AwaitSections | AwaitEnd | Loaded


class RamSink:
    """Writes validated RAM batches into guest RAM; knows which pages may be non-zero."""

    def __init__(self, pages: npt.NDArray[np.uint8]) -> None:
        self.pages = pages
        self.maybe_nonzero = maybe_nonzero(pages)
        self.pages_written = 0

    def apply(self, batch: RamBatch) -> None:
        """Write one batch (indices already bounds-checked by the decoder)."""
        if len(batch.normal):
            self.pages[batch.normal] = batch.data
            self.maybe_nonzero[batch.normal] = True
        if len(batch.zero):
            dirty = batch.zero[self.maybe_nonzero[batch.zero]]
            if len(dirty):
                self.pages[dirty] = 0
                self.maybe_nonzero[dirty] = False
        self.pages_written += len(batch.normal) + len(batch.zero)


def receive_step(state: RecvState, section: Section, sink: RamSink) -> RecvState:
    """Consume one validated section; return the next state.

    :raise MigrationStreamError: a section out of order.
    """
    match state:
        case AwaitSections(header, passes):
            if isinstance(section, RamBatch):
                sink.apply(section)
                return state
            if isinstance(section, PassEnd):
                if section.number <= passes:
                    raise MigrationStreamError(f"section PASS_END: pass {section.number} "
                                               f"after pass {passes}")
                return AwaitSections(header, section.number)
            if isinstance(section, StateBlob):
                return AwaitEnd(header, section.data)
            raise MigrationStreamError("section END: stream ended without CPU state")
        case AwaitEnd(header, blob):
            if isinstance(section, End):
                return Loaded(header, blob, section.runstate)
            raise MigrationStreamError(f"section {type(section).__name__}: only END may "
                                       f"follow the CPU state")
        case Loaded():
            raise MigrationStreamError("section after END")


class PrecopyDestination:
    """The outer loop: read → step → load; report the result on the return path."""

    def __init__(self, machine: MigratableMachine, conn: MigrationConnection) -> None:
        self.machine = machine
        self.conn = conn
        self.decoder = StreamDecoder(machine.npages, machine.page_size)
        self.header: StreamHeader | None = None

    async def read_header(self) -> StreamHeader:
        """Read and check the stream header."""
        try:
            raw = await self.conn.recv_exactly(HEADER.size)
        except MigrationTransportError as err:
            raise MigrationTransportError(f"stream header: {err}") from err
        self.header = self.decoder.header(raw)
        return self.header

    async def receive(self, header: StreamHeader) -> Loaded:
        """Receive sections until END, then load the state; the guest stays paused."""
        sink = await asyncio.to_thread(RamSink, self.machine.pages)
        state: RecvState = AwaitSections(header)
        while not isinstance(state, Loaded):
            section = await self.conn.recv_section(self.decoder)
            state = receive_step(state, section, sink)
        self.machine.load_state(state.state)
        log.info("migration destination: loaded %d pages and the machine state",
                 sink.pages_written)
        return state

    async def acknowledge(self) -> None:
        """Tell the source the load succeeded (SHUT 0)."""
        await self.conn.send_rp(RpMessage.SHUT, (0).to_bytes(4, "big"))

    async def report_failure(self, desc: str) -> None:
        """Best effort: ERROR text + SHUT(1), then discard input until EOF (bounded)."""
        await report_failure(self.conn, desc)


async def report_failure(conn: MigrationConnection, desc: str) -> None:
    """Tell the source why its stream is refused: ERROR text + SHUT(1) on the return
    path, then discard input until EOF (at most ``DISCARD_SECONDS``), then close.
    Also used by TLS for a plain source (qmpd/migration/tls.py)."""
    async def report() -> None:
        await conn.send_rp(RpMessage.ERROR, desc.encode("utf-8", "replace"))
        await conn.send_rp(RpMessage.SHUT, (1).to_bytes(4, "big"))
        conn.shutdown_write()
        scratch = memoryview(bytearray(1 << 20))
        while await conn.recv_some(scratch):  # discard until the source closes
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(report(), DISCARD_SECONDS)
    conn.close()
