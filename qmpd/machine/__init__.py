"""qmpd's virtual machine: KVM (or TCG) vCPU, mmap'd guest RAM, dirty log, guest output.

The public facade is :class:`Machine` built from :class:`MachineConfig` (see
docs/INTERFACES.md). This package knows nothing of QMP, migration or COLO; it reports
through callbacks.
"""

from qmpd.machine.config import GuestConfig, MachineConfig
from qmpd.machine.errors import MachineStateError
from qmpd.machine.machine import Machine
from qmpd.machine.output import GuestOutput

__all__ = ["GuestConfig", "GuestOutput", "Machine", "MachineConfig", "MachineStateError"]
