"""The VM stack: machine, serial chardev, output pump, VM control, migration and COLO.

Built by the composition root (:mod:`qmpd.daemon`) from the command line (and the
``QMPD_*`` environment the CLI read into :class:`DaemonConfig`), and closed by it at
shutdown as one component. Building order, each step given only the ones before::

    FaultPlan(QMPD_COLO_FAULT) -> Machine(-m, -accel, -guest, QMPD_KVM_DEVICE)
      -> chardev (-serial/-chardev) -> OutputPump -> VmControl
      -> MigrationManager(machine, VmControl)
      -> ColoManager(..., migration.config, migration.colo_completed, QMPD_COLO_HASH)
      -> migration.set_colo_hook(colo)
      -> run state: -incoming -> inmigrate (+ listen), -S -> prelaunch, else running

Closing runs the other way: COLO, migration, pump, vCPU and KVM objects, chardev.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from qmpd.colo.faults import FaultPlan
from qmpd.colo.manager import ColoManager
from qmpd.config import DaemonConfig
from qmpd.errors import MachineError, QmpdError
from qmpd.machine.chardev import Chardev, open_chardev
from qmpd.machine.config import GuestConfig, MachineConfig, parse_guest
from qmpd.machine.errors import KvmUnavailableError
from qmpd.machine.machine import Machine
from qmpd.machine.pump import OutputPump
from qmpd.machine.runstate import RunState, RunStateError, RunStateHolder
from qmpd.machine.vmctl import VmControl
from qmpd.migration.config import MigrationSpec
from qmpd.migration.manager import MigrationManager
from qmpd.objects import ObjectError, ObjectStore, parse_object
from qmpd.options import OptionError
from qmpd.schema import Schema

log = logging.getLogger(__name__)

Emit = Callable[[str, "dict[str, object] | None"], None]
#: Without ``-guest``: the counter guest paced, because flat out it would keep a host core
#: and the serial pump busy (rates: bench/results/design-figures.md).
DEFAULT_GUEST = GuestConfig(pace=200_000)

EmitSink = Callable[[str, "dict[str, Any] | None"], object]


class VmStack:
    """Everything below the command layer that makes up this node's VM."""

    def __init__(self, machine: Machine, chardev: Chardev, pump: OutputPump,
                 vm: VmControl, migration: MigrationManager, colo: ColoManager) -> None:
        self.machine = machine
        self.chardev = chardev
        self.pump = pump
        self.vm = vm
        self.migration = migration
        self.colo = colo

    @classmethod
    async def build(cls, config: DaemonConfig, runstate: RunStateHolder,
                    sink: EmitSink, schema: Schema) -> VmStack:
        """Build and start the stack; events go to ``sink`` (the event bus); migration
        takes its capabilities and parameters from ``schema``.

        :raise MachineError: bad -m/-accel/-guest/-serial, or no usable accelerator.
        :raise ConfigError: a malformed ``QMPD_COLO_FAULT``.
        """
        def emit(name: str, data: dict[str, object] | None) -> None:
            try:
                sink(name, data)
            except Exception:  # an event must never break the VM
                log.exception("emitting %s failed", name)

        faults = FaultPlan(config.colo_fault)
        objects = ObjectStore()
        for text in config.objects:   # -object: created first, as QEMU's early objects
            try:
                objects.add(*parse_object(text))
            except ObjectError as err:
                raise OptionError("-object", str(err), text) from err
        guest = parse_guest(config.guest) if config.guest else DEFAULT_GUEST
        try:
            machine = Machine(MachineConfig(mem_bytes=config.mem_bytes, accel=config.accel,
                                            guest=guest, kvm_device=config.kvm_device))
        except KvmUnavailableError as err:
            raise OptionError("-accel", str(err), config.accel) from err
        try:
            chardev = open_chardev(config.serial_backend())
            await chardev.start()
        except BaseException:
            machine.close()
            raise
        pump = OutputPump(machine.output, chardev.write)
        pump.start(asyncio.get_running_loop())
        vm = VmControl(machine, runstate, emit)
        migration = MigrationManager(machine, vm, emit, autostart=not config.start_paused,
                                     spec=MigrationSpec(schema), objects=objects)
        colo = ColoManager(machine, vm, pump, emit, migration.config, migration.colo_completed,
                           hash_ram=config.colo_hash, faults=faults)
        migration.set_colo_hook(colo)
        loop = asyncio.get_running_loop()

        def on_fault(why: str) -> None:
            # Called from the vCPU thread: the guest stopped on an error. As QEMU on a
            # KVM internal error: run state internal-error, STOP.
            loop.call_soon_threadsafe(_guest_fault, why)

        def _guest_fault(why: str) -> None:
            log.error("guest stopped: %s", why)
            try:
                vm.stop(RunState.INTERNAL_ERROR)
            except (RunStateError, MachineError) as err:
                log.error("guest fault in run state %s: %s", runstate.state.value, err)

        machine.set_fault_callback(on_fault)
        stack = cls(machine, chardev, pump, vm, migration, colo)
        if config.incoming is not None:
            runstate.set(RunState.INMIGRATE)
            if config.incoming != "defer":
                try:
                    migration.incoming(config.incoming)
                except QmpdError as err:
                    raise OptionError("-incoming", str(err), config.incoming) from err
        elif not config.start_paused:
            vm.start()
        log.info("VM: %s MiB, accel %s, serial %s", machine.mem_bytes >> 20, machine.accel,
                 chardev.filename)
        return stack

    async def aclose(self) -> None:
        """Close in reverse order of building; bounded."""
        await self.colo.close()
        await self.migration.close()
        self.pump.stop()
        with contextlib.suppress(Exception):
            self.pump.flush()
        self.machine.close()
        self.chardev.close()
