"""auto-converge: QEMU 7.2's rule for throttling a guest that dirties faster than the link.

User: :class:`qmpd.migration.source.PrecopySource`, which calls :meth:`AutoConverge.sync`
at each dirty-bitmap sync and :meth:`AutoConverge.stop` when the migration ends in any
way (completed, failed, cancelled, or entering COLO, as QEMU's
``migration_iteration_finish``). The throttle itself is the machine's
(:meth:`qmpd.machine.Machine.set_cpu_throttle`).

As migration/ram.c (``migration_bitmap_sync`` → ``migration_trigger_throttle`` →
``mig_throttle_guest_down``): dirtied pages are summed over a period of more than one
second; at the sync that ends it, if the bytes dirtied exceed
``throttle-trigger-threshold`` % of the bytes transferred in it, a counter goes up, and
at 2 it is reset and the throttle starts at ``cpu-throttle-initial`` or rises by
``cpu-throttle-increment`` (with ``cpu-throttle-tailslow``, by no more than what would
bring the dirty rate to the threshold), never above ``max-cpu-throttle``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qmpd.migration.config import MigrationConfig

log = logging.getLogger(__name__)

#: QEMU: a period ends at the first sync more than this long after it started.
PERIOD_S = 1.0
#: QEMU's CPU_THROTTLE_PCT_MIN / _MAX (``cpu_throttle_set`` clamps to them).
PCT_MIN, PCT_MAX = 1, 99


def next_percentage(current: int, *, initial: int, increment: int, maximum: int,
                    tailslow: bool, dirty_bytes: int, threshold_bytes: int) -> int:
    """QEMU 7.2 ``mig_throttle_guest_down`` + ``cpu_throttle_set``'s clamp: the new
    throttle from the ``current`` one (0: not throttling yet)."""
    if not current:
        new = initial
    else:
        inc = increment
        if tailslow:
            cpu_now = 100 - current
            cpu_ideal = int(cpu_now * (threshold_bytes * 1.0 / dirty_bytes))
            inc = min(cpu_now - cpu_ideal, increment)
        new = min(current + inc, maximum)
    return min(max(new, PCT_MIN), PCT_MAX)


class AutoConverge:
    """One outgoing migration's throttle decisions.

    :param set_throttle: applies a percentage (0: lift), e.g. ``machine.set_cpu_throttle``.
    :param on_change: told each new percentage (the counters, for ``query-migrate``).
    """

    def __init__(self, config: MigrationConfig, page_size: int,
                 set_throttle: Callable[[int], None],
                 on_change: Callable[[int], None] = lambda pct: None) -> None:
        self.config = config
        self.page_size = page_size
        self._set = set_throttle
        self._on_change = on_change
        #: The throttle in force (0: none).
        self.percentage = 0
        #: Every percentage set, in order (QEMU's sequence).
        self.history: list[int] = []
        self._dirty_rate_high_cnt = 0
        self._period_start: float | None = None
        self._dirty_pages_period = 0
        self._xfer_prev = 0

    def sync(self, dirtied_pages: int, transferred: int, now: float) -> None:
        """One dirty-bitmap sync: ``dirtied_pages`` new dirty pages, ``transferred``
        bytes sent so far; throttles if QEMU's rule says so."""
        if self._period_start is None:  # the first sync (setup) starts the first period
            self._period_start, self._xfer_prev = now, transferred
            return
        self._dirty_pages_period += dirtied_pages
        if now <= self._period_start + PERIOD_S:
            return
        if self.config.capability("auto-converge"):
            self._trigger(transferred - self._xfer_prev)
        self._period_start, self._xfer_prev = now, transferred
        self._dirty_pages_period = 0

    def _trigger(self, xfer_bytes: int) -> None:
        cfg = self.config
        dirty_bytes = self._dirty_pages_period * self.page_size
        threshold_bytes = xfer_bytes * cfg.int_parameter("throttle-trigger-threshold") // 100
        if dirty_bytes <= threshold_bytes:
            return
        self._dirty_rate_high_cnt += 1
        if self._dirty_rate_high_cnt < 2:
            return
        self._dirty_rate_high_cnt = 0
        pct = next_percentage(
            self.percentage, initial=cfg.int_parameter("cpu-throttle-initial"),
            increment=cfg.int_parameter("cpu-throttle-increment"),
            maximum=cfg.int_parameter("max-cpu-throttle"),
            tailslow=bool(cfg.parameter("cpu-throttle-tailslow")),
            dirty_bytes=dirty_bytes, threshold_bytes=threshold_bytes)
        log.info("auto-converge: dirtied %d bytes against %d transferred: throttle %d%%",
                 dirty_bytes, xfer_bytes, pct)
        self._apply(pct)
        self.history.append(pct)

    def stop(self) -> None:
        """Lift the throttle (QEMU ``cpu_throttle_stop``); a no-op when not throttling."""
        if self.percentage:
            self._apply(0)

    def _apply(self, pct: int) -> None:
        self._set(pct)
        self.percentage = pct
        self._on_change(pct)
