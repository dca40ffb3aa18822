"""Named file descriptors (``getfd``/``closefd``) and ``fd:`` migration channels.

Users: the ``getfd``/``closefd`` handlers (qmpd/commands/migration.py) keep what a
client sent over SCM_RIGHTS in :class:`NamedFds` (the manager's ``fds``; one table per
daemon, where QEMU keeps one per monitor); :mod:`qmpd.migration.channels` resolves
``migrate fd:NAME`` (taken from the table, as QEMU's ``monitor_get_fd``) and
``-incoming fd:N`` / ``migrate-incoming fd:N|NAME`` (QEMU's ``monitor_fd_param``: a
number is a descriptor this process inherited, a name is looked up) and turns the
descriptor into a connection (``fd_connection``).

A socket descriptor is a full migration connection (return path, COLO). Any other
(a pipe, a file) is one-way like ``exec:``: ``cat`` copies between it and a socketpair.
"""

from __future__ import annotations

import contextlib
import os

from qmpd.errors import ArgumentRangeError, MigrationError


class FdNotFoundError(MigrationError):
    """No descriptor of that name; ``found`` picks QEMU's wording (``closefd``: "not
    found", ``migrate``: "has not been found")."""

    def __init__(self, name: str, found: str = "has not been found") -> None:
        super().__init__(name)
        self.name = name
        self.found = found

    def __str__(self) -> str:
        return f"File descriptor named '{self.name}' {self.found}"


class NoFdError(MigrationError):
    """``getfd`` of a command that came without a descriptor."""

    def __str__(self) -> str:
        return "No file descriptor supplied via SCM_RIGHTS"


class FdNumberError(MigrationError):
    """``fd:X`` where a descriptor number is needed (QEMU's ``qemu_parse_fd``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"Invalid file descriptor number '{self.text}'"


def _starts_with_digit(name: str) -> bool:
    return name[:1].isascii() and name[:1].isdigit()


class NamedFds:
    """The descriptors ``getfd`` stored, by name; this table owns (closes) them."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def add(self, name: str, fd: int) -> None:
        """``getfd``: keep ``fd`` as ``name`` (replacing and closing an older one).

        :raise ArgumentRangeError: a name starting with a digit (``fd`` is closed).
        """
        if _starts_with_digit(name):
            os.close(fd)
            raise ArgumentRangeError("fdname", "a name not starting with a digit")
        old = self._fds.get(name)
        self._fds[name] = fd
        if old is not None and old != fd:
            os.close(old)

    def remove(self, name: str) -> None:
        """``closefd``.

        :raise FdNotFoundError: ``File descriptor named 'X' not found``.
        """
        fd = self._fds.pop(name, None)
        if fd is None:
            raise FdNotFoundError(name, "not found")
        os.close(fd)

    def take(self, name: str) -> int:
        """``migrate fd:NAME``: the descriptor is the caller's now.

        :raise FdNotFoundError: ``File descriptor named 'X' has not been found``.
        """
        fd = self._fds.pop(name, None)
        if fd is None:
            raise FdNotFoundError(name)
        return fd

    def incoming(self, text: str) -> int:
        """``migrate-incoming fd:X``: a name is taken from the table, a number used as is.

        :raise FdNotFoundError, FdNumberError: QEMU's texts.
        """
        return parse_fd_number(text) if _starts_with_digit(text) else self.take(text)

    def close(self) -> None:
        """Close every stored descriptor (daemon shutdown)."""
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def parse_fd_number(text: str) -> int:
    """``-incoming fd:N``: a descriptor number.

    :raise FdNumberError: not a non-negative decimal number.
    """
    if not text.isascii() or not text.isdigit():
        raise FdNumberError(text)
    return int(text)
