"""Error roots shared by every layer, and the argument errors two layers share.

Each layer raises its own subclass of :class:`QmpdError` with structured fields and a
``str()`` that is the user-facing text (QEMU 7.2's wording where QEMU has one). Only the
command boundary (:mod:`qmpd.commands.dispatcher`) turns an error into a QMP
``{"class", "desc"}`` pair, by one table keyed on the error's type; the CLI prints
``str(err)`` on one line. Standard library only (layer L0).

::

    QmpdError
     ├── ArgumentError        a request argument fails QEMU's visitor or range checks
     │    ├── ArgumentTypeError        "Invalid parameter type for 'N', expected: T"
     │    ├── ArgumentValueError       "Parameter 'N' does not accept value 'V'"
     │    ├── ArgumentRangeError       "Parameter 'N' expects WHAT"
     │    ├── MissingArgumentError     "Parameter 'N' is missing"
     │    └── UnexpectedArgumentError  "Parameter 'N' is unexpected"
     ├── NotFoundError        a named object does not exist (QMP class DeviceNotFound)
     ├── ConfigError          qmpd.config / qmpd.options: a command-line value
     ├── MachineError         qmpd.machine (KVM/TCG, RAM, vCPU, devices)
     ├── MigrationError       qmpd.migration (status machine, stream, transport)
     └── ColoError            qmpd.colo (checkpoint protocol, failover)

(``SchemaError`` lives in :mod:`qmpd.schema`; ``QMPError``, a reply-ready error that only
command handlers raise, in :mod:`qmpd.commands.errors`.)
"""

from __future__ import annotations


class QmpdError(Exception):
    """Root of every error qmpd raises on purpose; ``str(err)`` is its one-line text."""


# Section: argument errors (QEMU's qobject-input-visitor and migrate_params_check texts)

class ArgumentError(QmpdError):
    """A request argument fails a check; ``name`` is the member as QEMU names it.

    :param name: the member's name (a dotted path such as ``capabilities[0].state``
        where QEMU reports one).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class ArgumentTypeError(ArgumentError):
    """A member of the wrong JSON type."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(name)
        self.expected = expected

    def __str__(self) -> str:
        return f"Invalid parameter type for '{self.name}', expected: {self.expected}"


class ArgumentValueError(ArgumentError):
    """A member whose value is not one of those accepted (an enum)."""

    def __init__(self, name: str, value: str) -> None:
        super().__init__(name)
        self.value = value

    def __str__(self) -> str:
        return f"Parameter '{self.name}' does not accept value '{self.value}'"


class ArgumentRangeError(ArgumentError):
    """A member outside its range; ``expects`` is QEMU's phrase (``uint8_t``, ...)."""

    def __init__(self, name: str, expects: str) -> None:
        super().__init__(name)
        self.expects = expects

    def __str__(self) -> str:
        return f"Parameter '{self.name}' expects {self.expects}"


class MissingArgumentError(ArgumentError):
    """A mandatory member is absent."""

    def __str__(self) -> str:
        return f"Parameter '{self.name}' is missing"


class UnexpectedArgumentError(ArgumentError):
    """A member the command does not have."""

    def __str__(self) -> str:
        return f"Parameter '{self.name}' is unexpected"


# Section: the other roots

class NotFoundError(QmpdError):
    """A named object (a yank instance, a chardev, ...) does not exist.

    :param text: QEMU's text, e.g. ``Instance not found``.
    """


class ConfigError(QmpdError):
    """A command-line option value that cannot be used (one line, naming the value)."""


class MachineError(QmpdError):
    """A failure of the virtual machine layer (KVM ioctl, guest RAM, vCPU, device)."""


class MigrationError(QmpdError):
    """A failure of a migration: stream, transport, or state machine."""


class ColoError(QmpdError):
    """A failure of the COLO checkpoint protocol or failover."""

