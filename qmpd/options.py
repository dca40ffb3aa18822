"""QEMU-style ``key=value`` option helpers shared by the command-line parsers.

Users: :mod:`qmpd.config` (``-qmp``) and :mod:`qmpd.machine.chardev` (``-serial``,
``-chardev``). Standard library only.
"""

from __future__ import annotations

_ON = ("on", "yes", "true")
_OFF = ("off", "no", "false")


def on_off(opts: dict[str, str], key: str, default: bool) -> bool:
    """QEMU's boolean option: ``on``/``yes``/``true`` or ``off``/``no``/``false``.

    :raise ValueError: for any other value (the caller words the message).
    """
    value = opts.get(key)
    if value is None:
        return default
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{key}={value}")
