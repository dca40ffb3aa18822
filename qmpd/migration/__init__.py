"""Live migration between two qmpd processes: QEMU's status machine, a checked stream.

Modules: :mod:`state` (MigrationStatus, transitions), :mod:`config` (capabilities,
parameters, from schema.json), :mod:`stream` (the wire format), :mod:`transport`
(sockets, return path, raw bytes for COLO), :mod:`source` (precopy phases),
:mod:`destination` (step-function receiver), :mod:`manager` (the sole owner). See
docs/INTERFACES.md.
"""

from qmpd.migration.config import MigrationConfig, MigrationSpec
from qmpd.migration.manager import ColoHook, MigrationManager
from qmpd.migration.state import MigrationStatus
from qmpd.migration.stream import MigrationStreamError
from qmpd.migration.transport import MigrationConnection, MigrationTransportError

__all__ = [
    "ColoHook",
    "MigrationConfig",
    "MigrationConnection",
    "MigrationManager",
    "MigrationSpec",
    "MigrationStatus",
    "MigrationStreamError",
    "MigrationTransportError",
]
