"""Machine and guest configuration, and the ``-guest`` parser.

Users: the CLI (validates ``-m``, ``-accel`` and ``-guest`` together at parse time),
:class:`qmpd.machine.Machine`, migration (a destination builds a Machine from the same
config), the client tools (``parse_guest``). ``-m`` and ``-accel`` are parsed by
:mod:`qmpd.options`, as is the ``key=value`` syntax of ``-guest``. Errors are
:class:`MachineConfigError`, which names the option (and the value when known).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from qmpd.errors import ConfigError
from qmpd.machine.errors import MachineConfigError
from qmpd.machine.kvm.system import KVM_DEVICE
from qmpd.options import ACCELS, Accel, keyval, parse_size

MiB, GiB = 1 << 20, 1 << 30
PAGE_SIZE = 4096
#: Largest guest the page tables the VMM builds can map: one page directory per GiB,
#: 64 of them between layout.PD_GPA and layout.TSS_GPA.
MAX_MEM_BYTES = 64 * GiB


def host_memory_bytes() -> int:
    """Physical memory of the host."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


#: ``-guest`` keys -> GuestConfig fields.
_GUEST_KEYS = {"wss": "wss_bytes", "dirty": "dirty_pages", "pace": "pace",
               "check": "check_every", "batch": "batch"}


@dataclass(frozen=True)
class GuestConfig:
    """Parameters of the counter guest (``-guest counter,wss=64M,dirty=100,pace=1000,check=64``).

    ``batch`` (records per doorbell exit) is an extension; 0 picks one from ``pace``.
    """

    wss_bytes: int = 16 * MiB
    dirty_pages: int = 16
    pace: int = 0
    check_every: int = 64
    batch: int = 0

    @property
    def ws_pages(self) -> int:
        """W: pages in the working set."""
        return self.wss_bytes // PAGE_SIZE

    def effective_batch(self, dirty_logging: bool = False) -> int:
        """Records per doorbell: ``batch`` or, when 0, about one doorbell per 0.3 ms.

        A step's cost is estimated from the pace iterations, the pages written and the
        amortised full scan; while dirty logging is on (migration, COLO) each page written
        also pays a write-protect fault, which dominates. The machine switches between the
        two values when logging starts/stops (the guest rereads its config word every step),
        so output latency stays near 0.3 ms with logging and the doorbell exits stay few
        without it. The per-unit costs (ns) are the benchmark host's:
        bench/results/design-figures.md.
        """
        if self.batch:
            return self.batch
        per_page = 2_500 if dirty_logging else 10
        scan = self.ws_pages // self.check_every if self.check_every else 0
        step_ns = self.pace // 4 + per_page * self.dirty_pages + scan + 100
        return max(1, min(256, 300_000 // step_ns))

    def validate(self) -> None:
        """:raise MachineConfigError: if a value is out of range."""
        if self.wss_bytes < PAGE_SIZE or self.wss_bytes % PAGE_SIZE:
            raise MachineConfigError(
                "-guest", f"wss must be a positive multiple of 4K, not {self.wss_bytes}")
        for key, name in _GUEST_KEYS.items():
            value = getattr(self, name)
            if not 0 <= value < 1 << 63:
                raise MachineConfigError("-guest", f"{key}={value} is out of range")
        if self.dirty_pages > 1 << 24:
            raise MachineConfigError("-guest",
                                     f"dirty={self.dirty_pages} exceeds 16M pages per step")


@dataclass(frozen=True)
class MachineConfig:
    """What a :class:`Machine` is built from (``-m``, ``-accel``, ``-guest``)."""

    mem_bytes: int = 128 * MiB
    accel: Accel = "kvm:tcg"
    guest: GuestConfig = field(default_factory=GuestConfig)
    hugepages: bool = False
    #: The KVM device (``$QMPD_KVM_DEVICE``, read by the CLI: tests of -accel kvm errors).
    kvm_device: str = KVM_DEVICE

    def validate(self) -> None:
        """:raise MachineConfigError: for a size of 0, over the host's memory, a working set
        that does not fit, or an unknown accelerator."""
        from qmpd.machine.layout import WS_GPA

        if self.accel not in ACCELS:
            raise MachineConfigError("-accel", f"invalid accelerator {self.accel}")
        if self.mem_bytes <= 0:
            raise MachineConfigError("-m", "memory size must be greater than zero")
        if self.mem_bytes > MAX_MEM_BYTES:
            raise MachineConfigError("-m", f"{self.mem_bytes // MiB}M exceeds the maximum "
                                           f"{MAX_MEM_BYTES // GiB}G")
        host = host_memory_bytes()
        if self.mem_bytes > host:
            raise MachineConfigError("-m", f"{self.mem_bytes // MiB}M exceeds the host's "
                                           f"memory ({host // MiB}M)")
        if self.mem_bytes % (2 * MiB):
            raise MachineConfigError(
                "-m", f"memory size must be a multiple of 2M, not {self.mem_bytes}")
        self.guest.validate()
        if WS_GPA + self.guest.wss_bytes > self.mem_bytes:
            raise MachineConfigError(
                "-guest", f"wss={self.guest.wss_bytes // MiB}M does not fit in -m "
                f"{self.mem_bytes // MiB}M (needs {(WS_GPA + self.guest.wss_bytes) // MiB}M)")


def parse_guest(text: str) -> GuestConfig:
    """``-guest counter[,wss=SIZE][,dirty=N][,pace=N][,check=N][,batch=N]``.

    :raise MachineConfigError: for an unknown program or key, or a bad value (naming
        ``-guest`` and ``text``).
    """
    try:
        opts = keyval(text, _GUEST_KEYS, implied="program")
        if opts.pop("program") != "counter":
            raise ConfigError("unknown guest program (expected counter)")
        values: dict[str, int] = {}
        for key, value in opts.items():
            if key == "wss":
                values[_GUEST_KEYS[key]] = parse_size(value, "wss")
                continue
            try:
                values[_GUEST_KEYS[key]] = int(value, 0)
            except ValueError:
                raise ConfigError(f"Parameter '{key}' expects a number") from None
        guest = GuestConfig(**values)
        guest.validate()
    except MachineConfigError as err:
        raise MachineConfigError("-guest", err.reason, text) from None
    except ConfigError as err:
        raise MachineConfigError("-guest", str(err), text) from None
    return guest
