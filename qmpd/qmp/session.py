"""One QMP connection: greeting, negotiation, request queue, out-of-band, replies, events.

Users: :mod:`qmpd.qmp.server` creates one :class:`QMPSession` per accepted connection.
Commands are reached only through the :class:`Dispatcher` protocol, injected by the
daemon, so the wire layer knows nothing of handlers::

    client                         QMPSession                         Dispatcher
      │◄── greeting ───────────────┤ (connection_made)
      ├── bytes ──────────────────►│ JSONStreamer.next() ─► message
      │                            │  exec-oob (oob on): run now ─────►│
      │                            │  else: in-band queue (max 8) ────►│ one at a time
      │◄── reply (+ id if sent) ───┤◄─────────── (class, value) ───────┤
      │◄── events (negotiated only)┤◄── EventBus.broadcast

Invariants: an id is echoed verbatim on every reply to a request that had one and never
added otherwise; in-band replies keep arrival order; a full queue or a client that
does not read its replies stops reading (bounded memory) without affecting others; an
event backlog beyond ``max_event_backlog`` bytes closes that session; no bad input ends
the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from qmpd.qmp.envelope import check_envelope
from qmpd.qmp.jsonstream import NEED_MORE, JSONStreamer, ParseError
from qmpd.qmp.wire import error_reply, return_reply
from qmpd.statemachine import StateMachine

log = logging.getLogger(__name__)

#: QEMU's QMP_REQ_QUEUE_LEN_MAX: in-band requests queued per session.
QUEUE_MAX = 8

#: A dispatch result: ``(None, return_value)`` or ``(error_class, desc)``.
Outcome = tuple[str | None, Any]


class Dispatcher(Protocol):
    """What a session needs from the command layer."""

    def dispatch(self, session: QMPSession, name: str, args: dict[str, Any],
                 oob: bool) -> Outcome | Awaitable[Outcome]:
        """Run command ``name``; return its outcome, or an awaitable of it."""


class SessionState(enum.Enum):
    """Connection life cycle, as QEMU's monitor: negotiation mode, then command mode."""

    NEGOTIATION = "negotiation"
    COMMAND = "command"
    CLOSED = "closed"


_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.NEGOTIATION: frozenset({SessionState.COMMAND, SessionState.CLOSED}),
    SessionState.COMMAND: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class QMPSession(asyncio.Protocol):
    """The protocol object of one QMP connection."""

    def __init__(self, dispatcher: Dispatcher, greeting: bytes, oob_offered: bool,
                 on_close: Callable[[QMPSession], None], name: str,
                 max_message_bytes: int = 64 << 20,
                 max_event_backlog: int = 8 << 20) -> None:
        self._dispatcher = dispatcher
        self._greeting = greeting
        self.oob_offered = oob_offered
        self.oob_enabled = False
        self.name = name
        self._on_close = on_close
        self._max_event_backlog = max_event_backlog
        self._stream = JSONStreamer(max_bytes=max_message_bytes)
        self._queue: collections.deque[object] = collections.deque()
        self._sm = StateMachine(SessionState.NEGOTIATION, _TRANSITIONS,
                                name=f"session {name} state", logger=log,
                                level=logging.DEBUG)
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._draining = False
        self._fds: list[int] = []  # SCM_RIGHTS descriptors of the latest read
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current session state."""
        return self._sm.state

    @property
    def negotiated(self) -> bool:
        """True once ``qmp_capabilities`` succeeded: commands and events flow."""
        return self._sm.state is SessionState.COMMAND

    def negotiate(self, oob: bool) -> None:
        """Leave negotiation mode (called by ``qmp_capabilities``)."""
        self.oob_enabled = oob
        self._sm.set(SessionState.COMMAND)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        transport.set_write_buffer_limits(high=256 << 10, low=64 << 10)
        log.info("session %s: connected", self.name)
        transport.write(self._greeting)

    def data_received(self, data: bytes) -> None:
        self._stream.feed(data)
        self._pump_input()

    def fds_received(self, fds: list[int]) -> None:
        """Descriptors sent with the next bytes (UNIX monitors; qmpd.qmp.fdsocket):
        they replace any the commands before did not take, as QEMU's socket chardev."""
        self._close_fds()
        self._fds = fds

    def take_fd(self) -> int | None:
        """``getfd``: the descriptor that came with the latest input, now the caller's."""
        return self._fds.pop() if self._fds else None

    def _close_fds(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump_queue()

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("session %s: disconnected%s", self.name, f" ({exc})" if exc else "")
        self._sm.set(SessionState.CLOSED)
        self._close_fds()
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_close(self)

    # -- input ---------------------------------------------------------------------

    def _pump_input(self) -> None:
        """Parse a batch (up to the queue limit), run it, repeat while possible.

        Out-of-band requests run as soon as they are parsed, so they overtake the
        in-band requests of their batch that are still queued.
        """
        stream = self._stream
        queue = self._queue
        more = True
        while more and self._sm.state is not SessionState.CLOSED and not self._draining:
            oob = self.oob_enabled
            while len(queue) < QUEUE_MAX:
                try:
                    msg = stream.next()
                except Exception as err:  # a splitter bug must not end the session
                    log.exception("session %s: JSON splitter failed; input dropped", self.name)
                    stream = self._stream = JSONStreamer(max_bytes=stream.max_bytes)
                    msg = ParseError(f"internal error: {err}")
                if msg is NEED_MORE:
                    more = False
                    break
                if oob and type(msg) is dict and "exec-oob" in msg and "execute" not in msg:
                    self._run(msg)
                else:
                    queue.append(msg)
            self._run_queue()
            if queue:
                break
        self._flow_control()

    def _pump_queue(self) -> None:
        self._run_queue()
        if not self._queue:
            self._pump_input()
        else:
            self._flow_control()

    def _run_queue(self) -> None:
        queue = self._queue
        while queue and self._task is None and not self._write_paused \
                and self._sm.state is not SessionState.CLOSED:
            self._run(queue.popleft())

    def _flow_control(self) -> None:
        transport = self._transport
        if transport is None or self._sm.state is SessionState.CLOSED:
            return
        want_pause = len(self._queue) >= QUEUE_MAX or self._write_paused or self._draining
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # -- execution -----------------------------------------------------------------

    def _run(self, msg: object) -> None:
        if type(msg) is not dict:
            if isinstance(msg, ParseError):
                self._write(error_reply("GenericError", msg.desc))
            else:
                self._write(error_reply("GenericError", "QMP input must be a JSON object"))
            return
        has_id = "id" in msg
        msg_id = msg.get("id")
        problem = check_envelope(msg, self.oob_enabled)
        if problem is not None:
            self._write(error_reply("GenericError", problem, msg_id, has_id))
            return
        name: str | None = msg.get("execute")
        oob = name is None
        if name is None:
            name = msg["exec-oob"]
        outcome = self._dispatcher.dispatch(self, name, msg.get("arguments", {}), oob)
        if type(outcome) is tuple:
            self._reply(outcome, msg_id, has_id)
        else:
            self._task = asyncio.get_running_loop().create_task(
                self._finish(outcome, msg_id, has_id))  # type: ignore[arg-type]

    async def _finish(self, pending: Awaitable[Outcome], msg_id: Any, has_id: bool) -> None:
        try:
            outcome = await pending
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the dispatcher maps errors; this is a last resort
            log.exception("session %s: command failed", self.name)
            outcome = ("GenericError", str(err))
        finally:
            self._task = None
        self._reply(outcome, msg_id, has_id)
        self._pump_queue()

    def _reply(self, outcome: Outcome, msg_id: Any, has_id: bool) -> None:
        error_class, value = outcome
        if error_class is None:
            try:
                data = return_reply(value, msg_id, has_id)
            except (TypeError, ValueError) as err:  # a handler returned non-JSON data
                log.error("session %s: cannot encode a reply: %s", self.name, err)
                data = error_reply("GenericError", f"internal error: {err}", msg_id, has_id)
            self._write(data)
        else:
            self._write(error_reply(error_class, value, msg_id, has_id))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and self._sm.state is not SessionState.CLOSED:
            self._transport.write(data)

    # -- events and shutdown -------------------------------------------------------

    def send_event(self, data: bytes) -> None:
        """Queue one encoded event; only negotiated sessions get events."""
        if self._sm.state is not SessionState.COMMAND or self._transport is None:
            return
        if self._transport.get_write_buffer_size() > self._max_event_backlog:
            log.warning("session %s: client does not read its events; closing", self.name)
            self._transport.abort()
            return
        self._transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Stop reading, let the command in flight finish, flush output, close.

        Bounded by ``timeout``; after it the connection is aborted.
        """
        self._draining = True
        self._flow_control()
        transport = self._transport
        if transport is None:
            return
        try:
            async with asyncio.timeout(timeout):
                if self._task is not None:
                    await asyncio.wait({self._task})
                transport.close()
                await asyncio.shield(self.closed)
        except TimeoutError:
            log.warning("session %s: drain timed out; aborting", self.name)
            transport.abort()
