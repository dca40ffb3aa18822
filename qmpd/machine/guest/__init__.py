"""The guest program: ``counter.S``, shipped assembled as ``counter.bin`` (package data).

Users: :class:`qmpd.machine.Machine` (writes the image into guest RAM at boot/reset
through :mod:`qmpd.machine.layout`). Running qmpd needs no assembler: ``counter.bin`` is
committed next to its source and rebuilt with ``make guest``
(:mod:`qmpd.machine.guest.build`, binutils) whenever ``counter.S`` changes; a test checks
that the two agree byte for byte.
"""

from __future__ import annotations

import functools
from pathlib import Path

from qmpd.machine.errors import GuestBuildError

#: The guest's source (x86-64 assembly, GNU as syntax).
SOURCE = Path(__file__).with_name("counter.S")
#: The assembled guest: a flat binary whose entry is at offset 0.
IMAGE = Path(__file__).with_name("counter.bin")
#: The image must fit below the ring (layout.CODE_MAX).
MAX_IMAGE = 64 * 1024


@functools.cache
def guest_image() -> bytes:
    """The assembled guest, read once from the package.

    :raise GuestBuildError: if ``counter.bin`` is missing or has an impossible size.
    """
    try:
        image = IMAGE.read_bytes()
    except OSError as err:
        raise GuestBuildError(f"cannot load the guest: {IMAGE}: {err.strerror} "
                              "(build it with 'make guest')") from err
    if not 0 < len(image) <= MAX_IMAGE:
        raise GuestBuildError(f"guest image {IMAGE} has {len(image)} bytes "
                              f"(limit {MAX_IMAGE})")
    return image
