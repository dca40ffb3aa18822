"""The vCPU thread: a run loop that answers requests (pause, resume, call, finish).

Users: :class:`qmpd.machine.Machine`. Nothing pokes the vCPU from outside except through
:meth:`VcpuThread.request`, which queues a request, kicks the CPU out of guest mode
(immediate_exit + signal for KVM, emu_stop for TCG) and waits a bounded time for the answer.

::

            resume                     unhandled guest exit
   PAUSED ─────────► RUNNING ─────────────────────────► FAULTED
     ▲  ◄─────────                                         │
     │     pause             FINISHED ◄── finish           │ call (reset, load_state)
     │                       (from any state; the thread   │
     │                        ends)                        │
     └─────────────────────────────────────────────────────┘

``call`` runs a function on the vCPU thread while not running (save/load state, reset);
``sync`` runs one between two guest runs in any state (dirty-log start/stop);
``snapshot`` pauses, runs a function and lets a vCPU that was running go on at once, so
that a COLO checkpoint's pause is one round trip and never waits for the caller's thread.
Doorbell exits drain the output ring; so does every pause, so when ``pause`` returns all
output the guest produced is in ``GuestOutput``.

:meth:`VcpuThread.set_throttle` is QEMU's ``cpu_throttle_set`` (softmmu/cpu-throttle.c),
used by migration's auto-converge: at ``pct`` percent the vCPU sleeps
``pct / (100 - pct)`` of each 10 ms timeslice it ran, between two guest runs; a kicker
thread takes it out of guest mode every timeslice. A request ends the sleep at once (as
QEMU's ``cpu->stop``) and the rest of the sleep follows it; at 0 nothing changes.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from qmpd.machine import layout
from qmpd.machine.errors import GuestFault, MachineStateError, VcpuTimeoutError
from qmpd.machine.kick import set_thread_name
from qmpd.machine.kvm import exits as ex
from qmpd.machine.output import OutputRing
from qmpd.statemachine import StateError, StateMachine

log = logging.getLogger(__name__)

#: Bound on every request/answer round trip.
REQUEST_TIMEOUT = 10.0
#: How often a waiting requester re-kicks the vCPU.
KICK_INTERVAL = 0.01
#: QEMU's CPU_THROTTLE_TIMESLICE_NS: the vCPU runs this long between throttle sleeps.
THROTTLE_TIMESLICE = 0.01
#: QEMU's CPU_THROTTLE_PCT_MIN / _MAX.
THROTTLE_PCT_MIN = 1
THROTTLE_PCT_MAX = 99


class Cpu(Protocol):
    """What the run loop needs of an accelerator (KvmAccel, TcgAccel)."""

    def arm(self) -> None: ...
    def run(self) -> ex.VcpuExit: ...
    def kick(self, thread_ident: int | None) -> None: ...


class VcpuRunState(enum.Enum):
    """Where the vCPU thread is."""

    PAUSED = "paused"
    RUNNING = "running"
    FAULTED = "faulted"
    FINISHED = "finished"


_S = VcpuRunState
TRANSITIONS: dict[VcpuRunState, frozenset[VcpuRunState]] = {
    _S.PAUSED: frozenset({_S.RUNNING, _S.FINISHED}),
    _S.RUNNING: frozenset({_S.PAUSED, _S.FAULTED, _S.FINISHED}),
    _S.FAULTED: frozenset({_S.PAUSED, _S.FINISHED}),
    _S.FINISHED: frozenset(),
}


class VcpuStateError(StateError, MachineStateError):
    """A vCPU run-state transition outside :data:`TRANSITIONS` (a bug in the run loop)."""


class Req(enum.Enum):
    """Requests the vCPU thread answers."""

    PAUSE = "pause"
    RESUME = "resume"
    CALL = "call"      # run a function on the vCPU thread while not running
    SYNC = "sync"      # run a function on the vCPU thread between two runs, in any state
    SNAPSHOT = "snapshot"  # pause, run a function, run again if it was running
    FINISH = "finish"


@dataclass
class _Request:
    kind: Req
    fn: Callable[[], object] | None = None
    clears_fault: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    times: PauseTimes | None = None
    #: Run by the requesting thread once the vCPU is out of guest mode, while ``fn``
    #: runs on the vCPU thread; the vCPU does not run the guest again before it is done.
    alongside: Callable[[], object] | None = None
    out_of_guest: threading.Event = field(default_factory=threading.Event)
    alongside_done: threading.Event = field(default_factory=threading.Event)
    alongside_result: object = None
    alongside_error: BaseException | None = None


@dataclass(frozen=True)
class PauseTimes:
    """``perf_counter()`` instants of a snapshot: when the guest last left guest mode
    before it was handled (earlier than the request if the vCPU was already out, e.g.
    draining output), and when it was let run again (or, if it stays paused, when the
    function ended)."""

    stopped: float
    resumed: float


class VcpuThread:
    """Owns the thread that runs ``cpu``; starts PAUSED."""

    def __init__(self, cpu: Cpu, ring: OutputRing,
                 on_fault: Callable[[str], None] | None = None) -> None:
        self.cpu = cpu
        self.ring = ring
        self.on_fault = on_fault
        self.fault: str | None = None
        #: Changed by the vCPU thread only; other threads only read ``state``.
        self._sm = StateMachine(VcpuRunState.PAUSED, TRANSITIONS, name="vCPU state",
                                error=VcpuStateError, logger=log, level=logging.DEBUG)
        #: perf_counter() when the guest last came out of guest mode (vCPU thread only).
        self._exit_at = 0.0
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        #: Throttle percentage (0: off); changed on the vCPU thread only (SYNC request).
        self._throttle_pct = 0
        self._slice_start = 0.0   # monotonic() when the vCPU last started a timeslice
        self._sleep_until = 0.0   # monotonic() end of the current throttle sleep
        self._kicker: threading.Thread | None = None
        self._kicker_stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="qmpd-vcpu0", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(REQUEST_TIMEOUT)

    # ------------------------------------------------------------------ caller side
    @property
    def state(self) -> VcpuRunState:
        """Where the vCPU thread is (read from any thread)."""
        return self._sm.state

    @property
    def native_id(self) -> int:
        """OS thread id (query-cpus-fast ``thread-id``)."""
        return self._thread.native_id or 0

    def request(self, kind: Req, fn: Callable[[], object] | None = None,
                timeout: float = REQUEST_TIMEOUT, clears_fault: bool = False) -> object:
        """Send a request and wait for its answer. A ``call`` with ``clears_fault`` (reset,
        load_state) takes a faulted vCPU back to PAUSED.

        :raise VcpuTimeoutError: no answer within ``timeout`` s.
        :raise MachineStateError: the request is not allowed in the current state.
        """
        return self._send(_Request(kind, fn, clears_fault), timeout).result

    def snapshot(self, fn: Callable[[], object], resume: bool,
                 alongside: Callable[[], object] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> tuple[object, object, PauseTimes]:
        """Pause, run ``fn`` on the vCPU thread and, with ``resume``, let a vCPU that was
        running go on, in one round trip. ``alongside``, if given, runs on this thread
        at the same time, once the vCPU is out of guest mode (e.g. reading its registers
        while the vCPU thread copies memory); the guest is not run again before it ends.
        Returns both results and when the guest stopped and went on (see
        :class:`PauseTimes`).

        :raise VcpuTimeoutError: no answer within ``timeout`` s.
        """
        req = _Request(Req.SNAPSHOT if resume else Req.PAUSE, fn, alongside=alongside)
        self._send(req, timeout)
        assert req.times is not None
        return req.result, req.alongside_result, req.times

    def _send(self, req: _Request, timeout: float) -> _Request:
        kind = req.kind
        if self._sm.state is VcpuRunState.FINISHED:
            raise MachineStateError("the vCPU has finished")
        if threading.get_ident() == self._thread.ident:
            raise MachineStateError(f"'{kind.value}' requested from the vCPU thread itself")
        self._queue.put(req)
        deadline = time.monotonic() + timeout
        # Only a running vCPU needs a kick (a paused one is waiting on the queue; only the
        # vCPU thread itself leaves RUNNING, and it then looks at the queue anyway).
        kick = self._sm.state is VcpuRunState.RUNNING
        first = req.out_of_guest if req.alongside is not None else req.done
        while True:
            if kick:
                self.cpu.kick(self._thread.ident)
            if first.wait(min(KICK_INTERVAL, max(0.0, deadline - time.monotonic()))) \
                    or req.done.is_set():
                break
            if time.monotonic() >= deadline:
                raise VcpuTimeoutError(
                    f"vCPU did not answer '{kind.value}' within {timeout:g}s")
            # Re-kick while waiting: a kick can land just before the CPU enters guest
            # mode (TCG has no immediate_exit); a repeated kick is harmless.
            kick = True
        if req.alongside is not None:
            try:
                if req.out_of_guest.is_set():
                    req.alongside_result = req.alongside()
            except BaseException as err:  # reported once the vCPU has answered
                req.alongside_error = err
            finally:
                req.alongside_done.set()
            if not req.done.wait(max(0.0, deadline - time.monotonic())):
                raise VcpuTimeoutError(
                    f"vCPU did not answer '{kind.value}' within {timeout:g}s")
        if req.error is not None:
            raise req.error
        if req.alongside_error is not None:
            raise req.alongside_error
        return req

    @property
    def throttle_percentage(self) -> int:
        """The throttle in force (0: the vCPU runs unthrottled)."""
        return self._throttle_pct

    def set_throttle(self, pct: int) -> None:
        """QEMU ``cpu_throttle_set`` (``pct`` clamped to 1..99) or, with 0,
        ``cpu_throttle_stop``. Takes effect before this returns; a finished vCPU
        ignores it."""
        if pct:
            pct = min(max(pct, THROTTLE_PCT_MIN), THROTTLE_PCT_MAX)
        if self._sm.state is VcpuRunState.FINISHED:
            return
        if pct and self._kicker is None:
            self._kicker_stop.clear()
            self._kicker = threading.Thread(target=self._kick_timeslices, daemon=True,
                                            name="qmpd-vcpu-throttle")
            self._kicker.start()
        try:
            self.request(Req.SYNC, lambda: self._apply_throttle(pct))
        finally:
            if not self._throttle_pct and self._kicker is not None:
                self._kicker_stop.set()
                self._kicker.join(REQUEST_TIMEOUT)
                self._kicker = None

    def _kick_timeslices(self) -> None:
        """Take a running, unthrottled-this-instant vCPU out of guest mode every
        timeslice, so that the run loop can sleep its share (QEMU's throttle timer)."""
        while not self._kicker_stop.wait(THROTTLE_TIMESLICE):
            if self._sm.state is VcpuRunState.RUNNING and \
                    self._sleep_until <= time.monotonic():
                self.cpu.kick(self._thread.ident)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ vCPU thread
    def _main(self) -> None:
        set_thread_name(f"CPU 0/{getattr(self.cpu, 'accel', 'vcpu').upper()}")
        self._started.set()
        sm = self._sm
        while (state := sm.state) is not VcpuRunState.FINISHED:
            if state is VcpuRunState.RUNNING:
                self.cpu.arm()
                try:
                    req = self._queue.get_nowait()
                except queue.Empty:
                    if self._throttle_pct and (woke := self._throttle_sleep()) is not None:
                        self._answer(woke)
                        continue
                    try:
                        self._run_once()
                    except Exception as err:  # never let the thread die: stop the guest
                        log.debug("vCPU run failed", exc_info=True)
                        self._fail(f"vCPU run failed: {err}")
                    continue
            else:
                req = self._queue.get()
                self.cpu.arm()
            self._answer(req)

    def _answer(self, req: _Request) -> None:
        try:
            req.result = self._handle(req)
        except BaseException as err:  # answered to the caller, never lost
            req.error = err
        req.done.set()

    def _handle(self, req: _Request) -> object:
        state = self._sm.state
        if req.kind is Req.PAUSE or req.kind is Req.SNAPSHOT:
            stopped = self._exit_at if state is VcpuRunState.RUNNING else time.perf_counter()
            if state is VcpuRunState.RUNNING:
                self._sm.set(VcpuRunState.PAUSED)
            self.ring.drain(force=True)  # pause hands over everything, cap or not
            req.out_of_guest.set()
            try:
                # e.g. save the state (and gather a checkpoint) in the same round trip
                return req.fn() if req.fn is not None else None
            finally:
                if req.alongside is not None:
                    req.alongside_done.wait(REQUEST_TIMEOUT)
                # A snapshot runs again even if fn failed: the caller decides what to do,
                # the guest is not left stopped behind its back.
                if req.kind is Req.SNAPSHOT and state is VcpuRunState.RUNNING:
                    self._sm.set(VcpuRunState.RUNNING)
                req.times = PauseTimes(stopped, time.perf_counter())
        elif req.kind is Req.RESUME:
            if state is VcpuRunState.FAULTED:
                raise GuestFault(f"the guest has stopped: {self.fault}")
            self._sm.set(VcpuRunState.RUNNING)
        elif req.kind is Req.SYNC:
            return req.fn() if req.fn is not None else None
        elif req.kind is Req.FINISH:
            self._kicker_stop.set()
            self.ring.drain(force=True)
            self._sm.set(VcpuRunState.FINISHED)
        else:
            if state is VcpuRunState.RUNNING:
                raise MachineStateError("the vCPU is running; pause it first")
            result = req.fn() if req.fn is not None else None
            if state is VcpuRunState.FAULTED and req.clears_fault:
                self.fault = None
                self._sm.set(VcpuRunState.PAUSED)
            return result
        return None

    def _apply_throttle(self, pct: int) -> None:
        if pct and not self._throttle_pct:
            self._slice_start = time.monotonic()
        self._throttle_pct = pct
        if not pct:
            self._sleep_until = 0.0

    def _throttle_sleep(self) -> _Request | None:
        """QEMU ``cpu_throttle_thread``: once a timeslice has run, sleep
        ``pct / (100 - pct)`` of it. A request ends the wait and is returned; the rest
        of the sleep follows once it is answered."""
        now = time.monotonic()
        if self._sleep_until <= now:
            if now - self._slice_start < THROTTLE_TIMESLICE:
                return None
            pct = self._throttle_pct
            self._sleep_until = now + pct / (100 - pct) * THROTTLE_TIMESLICE
        while (left := self._sleep_until - time.monotonic()) > 0:
            try:
                return self._queue.get(timeout=left)
            except queue.Empty:
                continue
        self._slice_start = time.monotonic()
        return None

    def _run_once(self) -> None:
        exit_ = self.cpu.run()
        self._exit_at = time.perf_counter()
        if isinstance(exit_, ex.Interrupted):
            return
        if isinstance(exit_, ex.IoOut) and exit_.port == layout.PORT_DOORBELL:
            drained = self.ring.drain()
            if exit_.value == layout.DOORBELL_FULL and not drained:
                self._backpressure()
            return
        if isinstance(exit_, ex.IoOut) and exit_.port == layout.PORT_ERROR:
            self._fail(f"guest reported error {exit_.value} (bad config page)")
        else:
            self._fail(f"unexpected vCPU exit {exit_}")

    def _backpressure(self) -> None:
        """Ring still full because GuestOutput is over its cap: wait for a reader (or a
        request) instead of spinning through doorbell exits."""
        while self.ring.output.full() and self._queue.empty():
            self.ring.output.wait_space(0.01)
        self.ring.drain()

    def _fail(self, why: str) -> None:
        log.error("vCPU stopped: %s", why)
        self.ring.drain(force=True)
        self.fault = why
        self._sm.set(VcpuRunState.FAULTED)
        if self.on_fault is not None:
            self.on_fault(why)
