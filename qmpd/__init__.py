"""qmpd: a QMP-compatible control-plane server with COLO fault tolerance.

One qmpd process owns one virtual machine (a KVM or TCG guest with memory-mapped RAM)
and answers QMP exactly as QEMU 7.2 does. Two processes form a COLO pair.
"""

__version__ = "0.1.0"

#: The QEMU release whose QMP dialect qmpd speaks.
QEMU_VERSION = (7, 2, 0)
