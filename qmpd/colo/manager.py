"""COLO manager: owns the COLO session tasks, failover, COLO_EXIT and query-colo-status.

Entry points:
- :meth:`ColoManager.enter_primary` / :meth:`enter_secondary`, awaited by the
  migration layer (its COLO hook) once the first migration completed/loaded with
  x-colo on; each returns when this node has left COLO.
- :meth:`lost_heartbeat` for ``x-colo-lost-heartbeat``.
- :meth:`query_status`, :meth:`checkpoint_now` (called when ``x-checkpoint-delay`` is
  set: the manager listens on the migration parameters it is given). ``yank`` cuts the
  link through the migration manager, which owns the connection.

Built by :mod:`qmpd.vmstack` after the migration manager, whose parameters and
``colo_completed`` it is given; the VM stack then registers it as that manager's COLO
hook (no construction cycle).

Failover follows QEMU (migration/colo.c, colo-failover.c)::

    x-colo-lost-heartbeat ── CAS none→require ──(next loop turn)── CAS require→active
      primary:   migration colo→completed, stop the checkpoint loop, CAS active→completed,
                 COLO_EXIT{primary, request}, release held output, VM runs alone
      secondary: (applying a checkpoint? CAS active→relaunch, retried after it)
                 migration colo→completed, drop any partial or unconfirmed checkpoint,
                 CAS active→completed, COLO_EXIT{secondary, request}, the guest resumes
                 from the last checkpoint whose output the primary released, and its
                 serial device carries the service

A link or protocol error ends the loop with COLO_EXIT{mode, error}; the node then waits
for x-colo-lost-heartbeat. The primary keeps its guest stopped (run state ``colo``) and
its output held meanwhile, so nothing unacknowledged leaves and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from qmpd.colo.errors import FailoverActiveError, NotInColoError
from qmpd.colo.faults import FaultPlan
from qmpd.colo.output import OutputCommit
from qmpd.colo.ports import ChannelPort, ColoMachine, ParamsPort, PumpPort, VmPort
from qmpd.colo.primary import ColoPrimary
from qmpd.colo.secondary import ColoSecondary
from qmpd.colo.state import (
    ColoExitReason,
    ColoMode,
    ColoStatus,
    FailoverState,
    FailoverStatus,
    colo_mode_machine,
    colo_status,
)
from qmpd.colo.stats import ColoStats
from qmpd.errors import ColoError, QmpdError
from qmpd.machine.runstate import RunState

log = logging.getLogger(__name__)

Emit = Callable[[str, "dict[str, object] | None"], None]

#: How long a secondary that has just taken over emits one record per doorbell.
TAKEOVER_LOW_LATENCY_S = 0.05

class ColoManager:
    """The single owner of this node's COLO session.

    :param params: the migration parameters (``x-checkpoint-delay``, ``x-colo-pipeline``,
        ``x-colo-max-dirty-pages``), read by the primary at each epoch.
    :param migration_completed: failover's ``colo → completed`` of the migration status.
    :param hash_ram: record the crc32 of all of RAM at each checkpoint, on both sides
        (tests; ``QMPD_COLO_HASH=1`` on the command line's environment).
    :param faults: faults the primary injects (tests; ``QMPD_COLO_FAULT``).
    """

    def __init__(self, machine: ColoMachine, vm: VmPort, pump: PumpPort, emit: Emit,
                 params: ParamsPort, migration_completed: Callable[[], None], *,
                 hash_ram: bool = False, faults: FaultPlan | None = None) -> None:
        self.machine = machine
        self.vm = vm
        self.pump = pump
        self._emit = emit
        self.params = params
        self._migration_completed = migration_completed
        self.failover = FailoverState()
        self._mode = colo_mode_machine()
        self.last_mode = ColoMode.NONE
        self.stats = ColoStats()
        self.hash_ram = hash_ram
        self.faults = FaultPlan() if faults is None else faults
        self._chan: ChannelPort | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._exit = asyncio.Event()
        self._primary: ColoPrimary | None = None
        self._secondary: ColoSecondary | None = None
        self._commit = OutputCommit(pump.write)
        self._failover_t0: float | None = None
        self._batch_reset: asyncio.TimerHandle | None = None
        self._closing = False
        params.add_listener(self._on_parameter)

    def _on_parameter(self, name: str, _value: object) -> None:
        if name == "x-checkpoint-delay":  # QEMU: a new delay re-arms the timer at once
            self.checkpoint_now()

    @property
    def mode(self) -> ColoMode:
        """This node's COLO mode (``none`` outside COLO)."""
        return self._mode.state

    # Section: entering COLO

    async def enter_primary(self, chan: ChannelPort) -> None:
        """Run COLO as primary on ``chan`` until this node leaves COLO."""
        self._begin(ColoMode.PRIMARY, chan)
        self.pump.hold()
        self.machine.dirty_log_start()
        self._primary = ColoPrimary(chan, self.machine, self.vm, self.pump, self._commit,
                                    self.failover, self.params, self.stats,
                                    hash_ram=self.hash_ram, faults=self.faults)
        await self._run_session(self._primary.run())
        if self._closing:
            return
        # Alone from here on: what was held leaves, in order, and the guest runs.
        self._commit.release_all()
        self.pump.unhold()
        self.vm.start()
        self._note_failover_done()
        self._end()

    async def enter_secondary(self, chan: ChannelPort) -> None:
        """Run COLO as secondary on ``chan`` until this node takes over or leaves COLO."""
        self._begin(ColoMode.SECONDARY, chan)
        self.vm.stop(RunState.COLO)
        self._secondary = ColoSecondary(chan, self.machine, self.stats,
                                        hash_ram=self.hash_ram)
        await self._run_session(self._secondary.run())
        if self._closing:
            return  # daemon shutdown: no takeover
        dropped = self._secondary.drop_staged()
        self._end()
        log.info("COLO secondary: taking over from checkpoint %d%s",
                 self._secondary.applied_seq,
                 "" if dropped is None else f" (checkpoint {dropped} dropped: its output "
                 "never left the primary)")
        # The service's first records should leave at once: one record per doorbell for a
        # moment, then the guest's normal batching.
        self.machine.set_batch_override(1)
        self.vm.start()
        self._note_failover_done()
        self._batch_reset = asyncio.get_running_loop().call_later(
            TAKEOVER_LOW_LATENCY_S, self.machine.set_batch_override, None)

    def _begin(self, mode: ColoMode, chan: ChannelPort) -> None:
        if self.mode is not ColoMode.NONE:
            raise ColoError("COLO is already running")
        self.failover.reset()
        self._mode.set(mode)
        self._chan = chan
        self._exit.clear()

    def _end(self) -> None:
        self.last_mode = self.mode
        self._mode.set(ColoMode.NONE)
        self._chan = None
        self._loop_task = None

    async def _run_session(self, body: Coroutine[Any, Any, None]) -> None:
        """Run the role's loop; on its end emit COLO_EXIT and wait for failover."""
        self._loop_task = asyncio.create_task(body, name=f"colo-{self.mode.value}")
        try:
            await self._loop_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # Cancelled by failover.
        except (QmpdError, OSError, EOFError) as err:
            log.error("COLO %s: %s", self.mode.value, err)
        if self._chan is not None:
            self._chan.abort()
        reason = (ColoExitReason.REQUEST
                  if self.failover.status is FailoverStatus.COMPLETED
                  else ColoExitReason.ERROR)
        self._emit("COLO_EXIT", {"mode": self.mode.value, "reason": reason.value})
        if reason is ColoExitReason.ERROR and self.mode is ColoMode.PRIMARY:
            # Nothing may leave until the operator decides (x-colo-lost-heartbeat): the
            # guest waits stopped, so held output and memory stay bounded.
            self.vm.stop(RunState.COLO)
        await self._exit.wait()

    # Section: failover

    def lost_heartbeat(self) -> None:
        """``x-colo-lost-heartbeat``: request failover (carried out on the next loop turn).

        :raise FailoverActiveError: a failover was already requested.
        :raise NotInColoError: not in COLO (the QMP command's gate refuses first).
        """
        if self.mode is ColoMode.NONE:
            raise NotInColoError()
        old = self.failover.cas(FailoverStatus.NONE, FailoverStatus.REQUIRE)
        if old is not FailoverStatus.NONE:
            raise FailoverActiveError(old)
        self._failover_t0 = time.perf_counter()
        asyncio.get_running_loop().call_soon(self._do_failover)

    def _do_failover(self) -> None:
        old = self.failover.cas(FailoverStatus.REQUIRE, FailoverStatus.ACTIVE)
        if old is not FailoverStatus.REQUIRE:
            log.error("Unknown error for failover, old_state = %s", old.value)
            return
        if self.mode is ColoMode.SECONDARY and self._secondary is not None \
                and self._secondary.loading:
            # Cannot happen while apply() runs without awaits; kept for the protocol.
            self.failover.cas(FailoverStatus.ACTIVE, FailoverStatus.RELAUNCH)
            asyncio.get_running_loop().call_soon(self._relaunch)
            return
        self._migration_completed()
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()
        if self._chan is not None:
            self._chan.abort()
        old = self.failover.cas(FailoverStatus.ACTIVE, FailoverStatus.COMPLETED)
        if old is not FailoverStatus.ACTIVE:
            log.error("Incorrect state (%s) while doing failover", old.value)
        self._exit.set()

    def _note_failover_done(self) -> None:
        if self._failover_t0 is not None:
            self.stats.failover_ms = (time.perf_counter() - self._failover_t0) * 1000
            log.info("COLO failover: guest running %.2f ms after x-colo-lost-heartbeat",
                     self.stats.failover_ms)
            self._failover_t0 = None

    def _relaunch(self) -> None:
        self.failover.cas(FailoverStatus.RELAUNCH, FailoverStatus.NONE)
        self.failover.cas(FailoverStatus.NONE, FailoverStatus.REQUIRE)
        self._do_failover()

    # Section: queries and triggers

    def query_status(self) -> ColoStatus:
        """``query-colo-status``."""
        return colo_status(self.mode, self.last_mode, self.failover.status,
                           outgoing_in_colo=self.mode is ColoMode.PRIMARY)

    def checkpoint_now(self) -> None:
        """Trigger a checkpoint at once and re-arm the timer (x-checkpoint-delay set)."""
        if self._primary is not None and self.mode is ColoMode.PRIMARY:
            self._primary.trigger.set()

    async def close(self) -> None:
        """Daemon shutdown: stop the loop and release waiters (no failover, no takeover)."""
        self._closing = True
        if self._batch_reset is not None:
            self._batch_reset.cancel()
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        self._exit.set()
