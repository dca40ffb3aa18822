"""Machine and guest configuration, and parsers for QEMU-style ``-m``, ``-accel`` and ``-guest``.

Users: the CLI (parses argv into :class:`MachineConfig`), :class:`qmpd.machine.Machine`,
migration (a destination builds a Machine from the same config). Parsers raise
:class:`MachineConfigError` with a one-line text the CLI prints as-is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from qmpd.machine.errors import MachineConfigError

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PAGE_SIZE = 4096
ACCELS = ("kvm", "tcg", "kvm:tcg", "tcg:kvm")
#: Largest guest the page tables the VMM builds can map (layout.MAX_PDS GiB).
MAX_MEM_BYTES = 64 * GiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*$")
_SUFFIX = {"": MiB, "k": KiB, "m": MiB, "g": GiB, "t": TiB}


def parse_size(text: str, default_suffix: str = "M", what: str = "-m") -> int:
    """Parse a QEMU size: ``512M``, ``4G``, ``1.5G``, ``131072K``; a bare number is in
    ``default_suffix`` units (MiB for ``-m``, as QEMU).

    :raise MachineConfigError: on anything else.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise MachineConfigError(f"{what}: invalid size '{text}' (expected e.g. 512M or 4G)")
    number, suffix = match.groups()
    unit = _SUFFIX[suffix.lower()] if suffix else _SUFFIX[default_suffix.lower()]
    return int(float(number) * unit)


def host_memory_bytes() -> int:
    """Physical memory of the host."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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

        A step costs about 0.25 ns per pace iteration, a few ns per page written and the
        amortised full scan; while dirty logging is on (migration, COLO) each page written
        also pays a 2-3 µs write-protect fault. The machine switches between the two
        values when logging starts/stops (the guest rereads its config word every step),
        so output latency stays near 0.3 ms with logging and the doorbell exits (~30 µs
        each) stay cheap without it.
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
                f"-guest: wss must be a positive multiple of 4K, not {self.wss_bytes}")
        for name in ("dirty_pages", "pace", "check_every", "batch"):
            value = getattr(self, name)
            if not 0 <= value < 1 << 63:
                raise MachineConfigError(f"-guest: {name} out of range: {value}")
        if self.dirty_pages > 1 << 24:
            raise MachineConfigError(f"-guest: dirty={self.dirty_pages} exceeds 16M pages/step")


@dataclass(frozen=True)
class MachineConfig:
    """What a :class:`Machine` is built from (``-m``, ``-accel``, ``-guest``)."""

    mem_bytes: int = 128 * MiB
    accel: str = "kvm:tcg"
    guest: GuestConfig = field(default_factory=GuestConfig)
    hugepages: bool = False

    def validate(self) -> None:
        """:raise MachineConfigError: for a size of 0, over the host's memory, a working set
        that does not fit, or an unknown accelerator."""
        from qmpd.machine.layout import WS_GPA

        if self.accel not in ACCELS:
            raise MachineConfigError(
                f"-accel: invalid accelerator '{self.accel}' (expected kvm, tcg or kvm:tcg)")
        if self.mem_bytes <= 0:
            raise MachineConfigError("-m: memory size must be greater than 0")
        if self.mem_bytes > MAX_MEM_BYTES:
            raise MachineConfigError(f"-m: {self.mem_bytes // MiB}M exceeds the maximum "
                                     f"{MAX_MEM_BYTES // GiB}G")
        host = host_memory_bytes()
        if self.mem_bytes > host:
            raise MachineConfigError(f"-m: {self.mem_bytes // MiB}M exceeds the host's memory "
                                     f"({host // MiB}M)")
        if self.mem_bytes % (2 * MiB):
            raise MachineConfigError(
                f"-m: memory size must be a multiple of 2M, not {self.mem_bytes}")
        self.guest.validate()
        if WS_GPA + self.guest.wss_bytes > self.mem_bytes:
            raise MachineConfigError(
                f"-guest: wss={self.guest.wss_bytes // MiB}M does not fit in -m "
                f"{self.mem_bytes // MiB}M (needs {(WS_GPA + self.guest.wss_bytes) // MiB}M)")


def parse_mem(text: str) -> int:
    """``-m`` value: ``512M``, ``4G``, ``size=4G`` (QEMU's long form); bare numbers are MiB."""
    spec = text.strip()
    if spec.startswith("size="):
        spec = spec.split(",", 1)[0][len("size="):]
    size = parse_size(spec, "M", "-m")
    if size <= 0:
        raise MachineConfigError("-m: memory size must be greater than 0")
    return size


def parse_accel(text: str) -> str:
    """``-accel`` value (``kvm``, ``tcg``, ``kvm:tcg``; QEMU's ``accel=`` prefix allowed)."""
    spec = text.strip()
    if spec.startswith("accel="):
        spec = spec[len("accel="):]
    spec, _, options = spec.partition(",")
    if options:
        raise MachineConfigError(f"-accel: invalid parameter '{options.split(',')[0]}'")
    if spec not in ACCELS:
        raise MachineConfigError(
            f"-accel: invalid accelerator '{text}' (expected kvm, tcg or kvm:tcg)")
    return spec


_GUEST_KEYS = {"wss": "wss_bytes", "dirty": "dirty_pages", "pace": "pace",
               "check": "check_every", "batch": "batch"}


def parse_guest(text: str) -> GuestConfig:
    """``-guest counter[,wss=SIZE][,dirty=N][,pace=N][,check=N][,batch=N]``.

    :raise MachineConfigError: for an unknown program or key, or a bad value.
    """
    parts = [p for p in text.split(",") if p]
    if not parts or parts[0] != "counter":
        raise MachineConfigError(f"-guest: unknown guest program in '{text}' (expected counter)")
    values: dict[str, int] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in _GUEST_KEYS:
            raise MachineConfigError(f"-guest: invalid option '{part}' "
                                     f"(expected one of {', '.join(_GUEST_KEYS)})")
        if key == "wss":
            values[_GUEST_KEYS[key]] = parse_size(value, "M", "-guest wss")
        else:
            try:
                values[_GUEST_KEYS[key]] = int(value, 0)
            except ValueError:
                raise MachineConfigError(f"-guest: {key}: invalid number '{value}'") from None
    guest = GuestConfig(**values)
    guest.validate()
    return guest
