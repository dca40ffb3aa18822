"""COLO state: mode, failover status (compare-and-set only), exit reason, status reply.

Names are QEMU's (qapi/migration.json). Both machines are the generic
:class:`qmpd.statemachine.StateMachine`; an edge outside their tables raises
:class:`ColoStateError`.

The mode (:func:`colo_mode_machine`) is ``none`` outside COLO; a session enters one role
and leaves it back to ``none``::

    none ──enter_primary──► primary ──(left COLO)──► none
    none ──enter_secondary──► secondary ──(left COLO)──► none

The failover status is the one shared flag between the QMP command
``x-colo-lost-heartbeat`` and the checkpoint loops; it changes only through
:meth:`FailoverState.cas`, as QEMU's ``failover_set_state(old, new)``::

    none ──request──► require ──bh──► active ──done──► completed ──(new session)──► none
                                         │
                                         └─(secondary loading a checkpoint)─► relaunch
    relaunch ──(checkpoint applied)──► none   (then the request is made again)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from qmpd.errors import ColoError
from qmpd.statemachine import StateError, StateMachine

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


class ColoStateError(StateError, ColoError):
    """A COLO mode or failover transition outside its table (a bug in the caller)."""


_M = ColoMode

#: The only mode transitions allowed.
MODE_TRANSITIONS: dict[ColoMode, frozenset[ColoMode]] = {
    _M.NONE: frozenset({_M.PRIMARY, _M.SECONDARY}),
    _M.PRIMARY: frozenset({_M.NONE}),
    _M.SECONDARY: frozenset({_M.NONE}),
}


def colo_mode_machine() -> StateMachine[ColoMode]:
    """This node's COLO mode, ``none`` at first (owned by the COLO manager)."""
    return StateMachine(ColoMode.NONE, MODE_TRANSITIONS, name="COLO mode",
                        error=ColoStateError, logger=log)


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
    """The failover status, changed only by compare-and-set (there is no ``set``).

    Everything runs on the event loop, so a CAS is atomic with respect to every other
    user; the CAS form is kept so that every change states what it expects to replace.
    """

    def __init__(self) -> None:
        self._sm = StateMachine(FailoverStatus.NONE, FAILOVER_TRANSITIONS,
                                name="failover status", error=ColoStateError, logger=log)

    @property
    def status(self) -> FailoverStatus:
        """The current failover status."""
        return self._sm.state

    def pending(self) -> bool:
        """True once failover has been requested (any state but ``none``)."""
        return self._sm.state is not FailoverStatus.NONE

    def cas(self, old: FailoverStatus, new: FailoverStatus) -> FailoverStatus:
        """Set ``new`` if the status is ``old``; return the status found.

        The caller compares the result with ``old``: equal means the change happened;
        anything else is the current status, unchanged.

        :raise ColoStateError: if ``old -> new`` is not in :data:`FAILOVER_TRANSITIONS`
            (whatever the current status).
        """
        return self._sm.cas(old, new)

    def reset(self) -> None:
        """Back to ``none`` at the start of a COLO session (``failover_init_state``).

        :raise ColoStateError: if a failover is still under way (the previous session
            must have ended in ``completed``, or never failed over).
        """
        found = self._sm.cas(FailoverStatus.COMPLETED, FailoverStatus.NONE)
        if found is not FailoverStatus.COMPLETED and found is not FailoverStatus.NONE:
            raise ColoStateError(found, FailoverStatus.NONE, self._sm.name)


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
