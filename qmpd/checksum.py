"""The one CRC-32 every checksummed format uses (migration stream, COLO checkpoint blob,
machine state blob, RAM hashes in COLO statistics).

A low-layer helper with no qmpd imports, so any layer may use it. ISA-L's CRC-32
(``isal``, a declared dependency) is the same function as zlib's and several times faster
(bench/results/design-figures.md); zlib's is the fallback where ``isal`` is absent.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from typing import cast


def _crc32_impl() -> Callable[..., int]:
    """ISA-L's ``crc32`` when installed, else zlib's (same results)."""
    try:
        return cast("Callable[..., int]", importlib.import_module("isal.isal_zlib").crc32)
    except ImportError:  # pragma: no cover - the optional accelerator is absent
        return zlib.crc32


#: ``crc32(data, start=0) -> int``: zlib's CRC-32 of ``data`` continuing from ``start``.
crc32 = _crc32_impl()
