"""What migration needs of the machine facade (docs/INTERFACES.md), as a typing Protocol.

Migration is written against this so it depends on behaviour, not on the class
:class:`qmpd.machine.Machine`. The resident-page helper reads ``/proc/self/pagemap``
to learn which pages of guest RAM were never touched (and so read as zero) without
touching them: a first read faults each untouched page in, seconds for a large guest,
while the pagemap answers for a whole GiB orders of magnitude faster
(bench/results/design-figures.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from qmpd.machine.vcpu_thread import PauseTimes

log = logging.getLogger(__name__)

Pages = npt.NDArray[np.uint8]
PageIndices = npt.NDArray[np.uint64]
T = TypeVar("T")


class MigratableMachine(Protocol):
    """The subset of :class:`qmpd.machine.Machine` a migration uses."""

    mem_bytes: int
    page_size: int
    npages: int
    pages: Pages

    def pause(self) -> None:
        """Stop the vCPU; return once it is out of guest mode."""

    def resume(self) -> None:
        """Let the vCPU run."""

    def dirty_log_start(self) -> None:
        """Start dirty logging from a clean bitmap."""

    def dirty_log_harvest(self) -> PageIndices:
        """Page indices dirtied since the last harvest (get + clear)."""

    def dirty_log_stop(self) -> None:
        """Stop dirty logging."""

    def set_cpu_throttle(self, pct: int) -> None:
        """Throttle the vCPU (1..99 percent of its time asleep); 0 lifts it."""

    def save_state(self) -> bytes:
        """vCPU + device state blob (paused only)."""

    def load_state(self, blob: bytes) -> None:
        """Validate, then apply a state blob (paused only); changes nothing on error."""

    def snapshot(self, fn: Callable[[np.ndarray], T],
                 resume: bool) -> tuple[T, bytes, PauseTimes]:
        """Pause; ``fn(dirty_pages)`` on the vCPU thread while the state is saved; resume
        if asked (what ``VmControl`` needs; migration itself does not call it)."""


_PRESENT = np.uint64(1 << 63)
_SWAPPED = np.uint64(1 << 62)


def maybe_nonzero(pages: Pages) -> npt.NDArray[np.bool_]:
    """For each page: False if it was never faulted in (so it reads as zero), else True.

    Falls back to all-True when the pagemap cannot be read. Pages that are present
    may still be zero; callers check those by content.
    """
    npages, page_size = pages.shape
    if page_size != os.sysconf("SC_PAGE_SIZE") or npages == 0:
        return np.ones(npages, dtype=np.bool_)
    addr = int(pages.__array_interface__["data"][0])
    entries = np.empty(npages, dtype=np.uint64)
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            got = os.preadv(fd, [entries.data.cast("B")], (addr // page_size) * 8)
        finally:
            os.close(fd)
    except OSError as err:
        log.debug("pagemap unavailable (%s): treating every page as touched", err)
        return np.ones(npages, dtype=np.bool_)
    if got != entries.nbytes:
        return np.ones(npages, dtype=np.bool_)
    result: npt.NDArray[np.bool_] = (entries & (_PRESENT | _SWAPPED)) != 0
    return result
