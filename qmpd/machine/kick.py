"""Kicking a vCPU thread out of ``KVM_RUN``: a no-op C signal handler for a real-time signal.

Users: :class:`qmpd.machine.accel_kvm.KvmAccel` (``kick``). The handler is installed with
libc ``sigaction`` (not :func:`signal.signal`), so it works from any thread, never runs
Python code in the main thread and never wakes an asyncio loop. It is a C function that
ignores its argument (``getpid``); what matters is that a handler exists without
``SA_RESTART``, so the signal makes ``KVM_RUN`` return ``EINTR`` in the target thread.
:func:`set_thread_name` gives the vCPU thread QEMU's name (``CPU 0/KVM``) for ps/top.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading

_lock = threading.Lock()
_installed: int | None = None


class _Sigaction(ctypes.Structure):
    # glibc x86-64 userspace struct sigaction.
    _fields_ = [("sa_handler", ctypes.c_void_p), ("sa_mask", ctypes.c_uint64 * 16),
                ("sa_flags", ctypes.c_int), ("sa_restorer", ctypes.c_void_p)]


def kick_signal() -> int:
    """The signal number used for kicks, installing its handler on first use."""
    global _installed
    with _lock:
        if _installed is not None:
            return _installed
        libc = ctypes.CDLL(None, use_errno=True)
        for sig in range(signal.SIGRTMIN + 2, signal.SIGRTMAX):
            if signal.getsignal(sig) not in (signal.SIG_DFL, None):
                continue
            old = _Sigaction()
            # `old` is ours; sigaction only writes it during the call.
            if libc.sigaction(sig, None, ctypes.byref(old)) != 0 or old.sa_handler:
                continue
            act = _Sigaction()
            # The handler is libc's getpid: code owned by libc, mapped for the process' life.
            act.sa_handler = ctypes.cast(libc.getpid, ctypes.c_void_p).value
            act.sa_flags = 0  # no SA_RESTART: KVM_RUN must come back with EINTR
            # `act` is ours and only read during the call.
            if libc.sigaction(sig, ctypes.byref(act), None) == 0:
                _installed = sig
                return sig
        raise OSError("no free real-time signal for vCPU kicks")


def kick_thread(thread_ident: int) -> None:
    """Send the kick signal to the thread (a no-op if it has already exited)."""
    with contextlib.suppress(ProcessLookupError):
        signal.pthread_kill(thread_ident, kick_signal())


def set_thread_name(name: str) -> None:
    """Name the calling OS thread (``prctl(PR_SET_NAME)``; 15 bytes max), as QEMU names its
    vCPU threads ``CPU 0/KVM``. Best effort."""
    libc = ctypes.CDLL(None, use_errno=True)
    # The name buffer is a Python bytes object alive during the call; the kernel copies it.
    libc.prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # 15 = PR_SET_NAME
