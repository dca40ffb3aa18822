"""The ``/dev/kvm`` system fd: API version, capabilities, supported CPUID, VM creation."""

from __future__ import annotations

import errno as _errno
import fcntl
import os

from qmpd.machine.errors import KvmError, KvmUnavailableError
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.vm import VmFd

KVM_DEVICE = "/dev/kvm"


class Kvm:
    """An open ``/dev/kvm`` (or the device ``path`` names: ``MachineConfig.kvm_device``).

    :raise KvmUnavailableError: if the device is missing, inaccessible or speaks another API.
    """

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise KvmUnavailableError(
                f"KVM is not available: {path}: {err.strerror}") from err
        try:
            version = fcntl.ioctl(self.fd, k.KVM_GET_API_VERSION, 0)
            if version != k.KVM_API_VERSION:
                raise KvmUnavailableError(f"KVM API version {version}, need {k.KVM_API_VERSION}")
            self.vcpu_mmap_size = fcntl.ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE, 0)
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, cap: k.Cap) -> int:
        """KVM_CHECK_EXTENSION: 0 if absent, else a capability-specific positive value."""
        result: int = fcntl.ioctl(self.fd, k.KVM_CHECK_EXTENSION, int(cap))
        return result

    def supported_cpuid(self) -> k.KvmCpuid2:
        """KVM_GET_SUPPORTED_CPUID into a fresh struct the caller owns."""
        cpuid = k.KvmCpuid2(nent=k.CPUID_ENTRIES)
        try:
            # The kernel writes into `cpuid` (ours, alive for the call).
            fcntl.ioctl(self.fd, k.KVM_GET_SUPPORTED_CPUID, cpuid)
        except OSError as err:
            raise KvmError("KVM_GET_SUPPORTED_CPUID", err.errno or _errno.EIO) from err
        return cpuid

    def create_vm(self) -> VmFd:
        """KVM_CREATE_VM: a new, empty VM."""
        try:
            fd = fcntl.ioctl(self.fd, k.KVM_CREATE_VM, 0)
        except OSError as err:
            raise KvmError("KVM_CREATE_VM", err.errno or _errno.EIO) from err
        return VmFd(fd, self)

    def close(self) -> None:
        """Close the system fd (VMs keep their own fds)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

