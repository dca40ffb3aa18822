"""The migration layer's refusals: typed errors whose ``str()`` is QEMU 7.2's text.

Users: :class:`qmpd.migration.manager.MigrationManager` (and its config) raise them;
the command dispatcher maps them (GenericError, ``str(err)``). Failures of a running
migration (stream, transport) are :class:`qmpd.errors.MigrationError` subclasses of
their own modules and end in status ``failed`` instead.
"""

from __future__ import annotations

from typing import ClassVar

from qmpd.errors import MigrationError


class MigrationStatusError(MigrationError):
    """A request refused because of a migration's status; ``status`` is that status.

    Subclasses set :attr:`text`, QEMU's wording.
    """

    text: ClassVar[str]

    def __init__(self, status: str | None = None) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return self.text


class MigrationInProgressError(MigrationStatusError):
    """A migration runs (or COLO holds its connection)."""

    text = "There's a migration process in progress"


class IncomingStartedError(MigrationStatusError):
    """``migrate-incoming`` while an incoming migration listens, loads or is in COLO."""

    text = "The incoming migration has already been started"


class NoPausedMigrationError(MigrationError):
    """``migrate`` with ``resume`` and no postcopy-paused migration (qmpd has none)."""

    def __str__(self) -> str:
        return "Cannot resume if there is no paused migration"


class NotSupportedError(MigrationError):
    """A QEMU feature qmpd does not implement; ``what`` names it as the text does
    (``TLS migration``, ``Migration capability 'postcopy-ram'``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return f"{self.what} is not supported by qmpd"
