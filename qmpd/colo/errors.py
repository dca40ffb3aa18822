"""The COLO layer's refusals: typed errors whose ``str()`` is QEMU 7.2's text.

Users: :class:`qmpd.colo.manager.ColoManager` raises them; the command dispatcher maps
them (GenericError, ``str(err)``). Whether ``x-colo-lost-heartbeat`` is allowed at all
(the node must be in COLO) is that command's gate, checked by the dispatcher.
"""

from __future__ import annotations

from qmpd.colo.state import FailoverStatus
from qmpd.errors import ColoError


class NotInColoError(ColoError):
    """A COLO operation on a node that is not in COLO (a caller's bug below QMP)."""

    def __str__(self) -> str:
        return "The feature 'colo' is not enabled"


class FailoverActiveError(ColoError):
    """A second failover request; ``status`` is the failover state it found."""

    def __init__(self, status: FailoverStatus) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return "COLO failover is already activated"
