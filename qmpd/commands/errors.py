"""QMPError: a reply-ready QMP error, raised by command handlers only.

Users: the handlers in :mod:`qmpd.commands` when a refusal is theirs alone (an argument
combination QEMU refuses in its QMP function, e.g. ``migrate`` with ``blk``); the
dispatcher answers it with its own class and desc. Layers below the command boundary
never raise it: they raise typed errors from :mod:`qmpd.errors` (or their own
subclasses), which the dispatcher maps in one table (:mod:`qmpd.commands.dispatcher`).
A test (``tests/qmp/test_error_layers.py``) keeps it that way.
"""

from __future__ import annotations

from qmpd.errors import QmpdError


class QMPError(QmpdError):
    """A QMP error reply: ``{"class": error_class, "desc": desc}``.

    :param desc: QEMU's exact text.
    :param error_class: QEMU's error class (``GenericError`` unless QEMU uses another).
    """

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class

    def __str__(self) -> str:
        return f"{self.error_class}: {self.desc}"
