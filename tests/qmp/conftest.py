"""Fixtures for the QMP server tests (defined in qmp_helpers)."""

from qmp_helpers import daemon, own_daemon, raw

__all__ = ["daemon", "own_daemon", "raw"]
