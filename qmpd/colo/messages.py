"""QEMU's COLO control messages and their framing.

A message is its COLOMessage index as a big-endian u32; ``vmstate-size`` is followed
by a big-endian u64 byte count, then that many bytes of checkpoint payload. Primary →
secondary messages travel on the migration stream, secondary → primary ones on the
return path (the same socket, the other direction)::

    primary                                   secondary
                           ◄── checkpoint-ready
    checkpoint-request ──►
                           ◄── checkpoint-reply
    vmstate-send ──►
    vmstate-size, u64 N, N bytes ──►
                           ◄── vmstate-received
                           ◄── vmstate-loaded

Receive errors use QEMU's texts (``Unexpected COLO message %d, expected %d``,
``Can't receive COLO message``, ...).
"""

from __future__ import annotations

import enum
import struct

from qmpd.colo.ports import ChannelPort
from qmpd.errors import ColoError

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ColoMessage(enum.IntEnum):
    """QEMU's COLOMessage; the value is the wire index."""

    CHECKPOINT_READY = 0
    CHECKPOINT_REQUEST = 1
    CHECKPOINT_REPLY = 2
    VMSTATE_SEND = 3
    VMSTATE_SIZE = 4
    VMSTATE_RECEIVED = 5
    VMSTATE_LOADED = 6

    @property
    def qapi_name(self) -> str:
        """The QAPI enum string, e.g. ``checkpoint-ready``."""
        return self.name.lower().replace("_", "-")


class ColoProtocolError(ColoError):
    """The peer sent something the COLO protocol does not allow, or the link failed."""


def encode(msg: ColoMessage) -> bytes:
    """The wire form of one message."""
    return _U32.pack(msg)


def encode_size(size: int) -> bytes:
    """``vmstate-size`` followed by its u64 value."""
    return _U32.pack(ColoMessage.VMSTATE_SIZE) + _U64.pack(size)


def decode(raw: bytes) -> ColoMessage:
    """Decode a u32 message index.

    :raise ColoProtocolError: ``colo_receive_message: Invalid message`` for an index
        outside the enum.
    """
    (index,) = _U32.unpack(raw)
    try:
        return ColoMessage(index)
    except ValueError:
        raise ColoProtocolError("colo_receive_message: Invalid message") from None


async def send_message(chan: ChannelPort, msg: ColoMessage) -> None:
    """Send one message; transport failures become ``Can't send COLO message``."""
    try:
        chan.write(encode(msg))
        await chan.drain()
    except (OSError, EOFError, ConnectionError) as err:
        raise ColoProtocolError(f"Can't send COLO message: {err}") from err


async def receive_message(chan: ChannelPort) -> ColoMessage:
    """Receive one message of any kind."""
    try:
        raw = await chan.recv_exactly(4)
    except (OSError, EOFError, ConnectionError) as err:
        text = str(err) or "Input/output error"
        raise ColoProtocolError(f"Can't receive COLO message: {text}") from err
    return decode(raw)


async def expect_message(chan: ChannelPort, expected: ColoMessage) -> None:
    """Receive one message and check it is ``expected``."""
    got = await receive_message(chan)
    if got is not expected:
        raise ColoProtocolError(
            f"Unexpected COLO message {int(got)}, expected {int(expected)}")


async def expect_size(chan: ChannelPort, limit: int) -> int:
    """Receive ``vmstate-size`` and its u64 value, which must be at most ``limit``."""
    await expect_message(chan, ColoMessage.VMSTATE_SIZE)
    try:
        (size,) = _U64.unpack(await chan.recv_exactly(8))
    except (OSError, EOFError, ConnectionError) as err:
        raise ColoProtocolError(
            f"Failed to get value for COLO message: {ColoMessage.VMSTATE_SIZE.qapi_name}"
        ) from err
    if size > limit:
        raise ColoProtocolError(f"COLO checkpoint of {size} bytes exceeds the limit of "
                                f"{limit} bytes")
    return int(size)
