"""KVM objects following the kernel's fd hierarchy: :class:`Kvm` → :class:`VmFd` → :class:`VcpuFd`.

Only this package (and the RAM/TCG modules beside it) issues ioctls. Each object owns its
fd and is created by its parent's factory (``Kvm().create_vm()``, ``vm.create_vcpu(0)``);
``close()`` releases it. ``VcpuFd.run()`` returns a typed :mod:`.exits` value.
"""

from qmpd.machine.kvm.system import Kvm
from qmpd.machine.kvm.vcpu import VcpuFd
from qmpd.machine.kvm.vm import VmFd

__all__ = ["Kvm", "VcpuFd", "VmFd"]
