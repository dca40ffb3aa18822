"""COLO state: mode, failover status (compare-and-set only), exit reason, status reply.

Names are QEMU's (qapi/migration.json). The failover status is the one shared flag
between the QMP command ``x-colo-lost-heartbeat`` and the checkpoint loops; it changes
only through :meth:`FailoverState.cas`, as QEMU's ``failover_set_state(old, new)``::

    none ──request──► require ──bh──► active ──done──► completed
                                         │
                                         └─(secondary loading a checkpoint)─► relaunch
    relaunch ──(checkpoint applied)──► none   (then the request is made again)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class ColoMode(enum.Enum):
    """QEMU's COLOMode."""

    NONE = "none"
    PRIMARY = "primary"
    SECONDARY = "secondary"


class FailoverStatus(enum.Enum):
    """QEMU's FailoverStatus."""

    NONE = "none"
    REQUIRE = "require"
    ACTIVE = "active"
    COMPLETED = "completed"
    RELAUNCH = "relaunch"


class ColoExitReason(enum.Enum):
    """QEMU's COLOExitReason."""

    NONE = "none"
    REQUEST = "request"
    ERROR = "error"
    PROCESSING = "processing"


_F = FailoverStatus

#: The only failover transitions allowed.
FAILOVER_TRANSITIONS: dict[FailoverStatus, frozenset[FailoverStatus]] = {
    _F.NONE: frozenset({_F.REQUIRE}),
    _F.REQUIRE: frozenset({_F.ACTIVE}),
    _F.ACTIVE: frozenset({_F.COMPLETED, _F.RELAUNCH}),
    _F.RELAUNCH: frozenset({_F.NONE}),
    _F.COMPLETED: frozenset({_F.NONE}),
}


class FailoverState:
    """The failover status, changed only by compare-and-set.

    Everything runs on the event loop, so a CAS is atomic with respect to every other
    user; the CAS form is kept so that every change states what it expects to replace.
    """

    def __init__(self, on_change: Callable[[FailoverStatus, FailoverStatus], None]
                 | None = None) -> None:
        self._status = FailoverStatus.NONE
        self._on_change = on_change

    @property
    def status(self) -> FailoverStatus:
        """The current failover status."""
        return self._status

    def pending(self) -> bool:
        """True once failover has been requested (any state but ``none``)."""
        return self._status is not FailoverStatus.NONE

    def cas(self, old: FailoverStatus, new: FailoverStatus) -> FailoverStatus:
        """Set ``new`` if the status is ``old``; return the status found.

        The caller compares the result with ``old``: equal means the change happened.
        A transition outside :data:`FAILOVER_TRANSITIONS` is never made.
        """
        found = self._status
        if found is old and new in FAILOVER_TRANSITIONS[old]:
            self._status = new
            log.info("failover status %s -> %s", old.value, new.value)
            if self._on_change is not None:
                self._on_change(old, new)
        return found

    def reset(self) -> None:
        """Back to ``none`` at the start of a COLO session (``failover_init_state``)."""
        if self._status is not FailoverStatus.NONE:
            log.info("failover status %s -> none (init)", self._status.value)
        self._status = FailoverStatus.NONE


@dataclass(frozen=True)
class ColoStatus:
    """The reply of ``query-colo-status``."""

    mode: ColoMode
    last_mode: ColoMode
    reason: ColoExitReason

    def to_qmp(self) -> dict[str, str]:
        """As QEMU's COLOStatus object."""
        return {"mode": self.mode.value, "last-mode": self.last_mode.value,
                "reason": self.reason.value}


def colo_status(mode: ColoMode, last_mode: ColoMode, failover: FailoverStatus,
                outgoing_in_colo: bool) -> ColoStatus:
    """Compute query-colo-status as QEMU does.

    ``reason``: failover ``none`` gives ``none``, ``completed`` gives ``request``, any
    other gives ``processing`` while the outgoing side is in COLO, else ``error`` (QEMU's
    quirk: a secondary in the middle of failing over reports ``error``).
    """
    if failover is FailoverStatus.NONE:
        reason = ColoExitReason.NONE
    elif failover is FailoverStatus.COMPLETED:
        reason = ColoExitReason.REQUEST
    elif outgoing_in_colo:
        reason = ColoExitReason.PROCESSING
    else:
        reason = ColoExitReason.ERROR
    return ColoStatus(mode, last_mode, reason)
