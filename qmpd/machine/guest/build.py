"""Assemble the guest: ``counter.S`` -> ``counter.bin`` (flat binary, entry at offset 0).

A developer tool, never run by qmpd: the assembled ``counter.bin`` is committed and shipped
as package data, so running qmpd needs no binutils. After editing ``counter.S`` run
``make guest`` (``python -m qmpd.machine.guest.build``) and commit both files;
``tests/machine/test_machine_guest.py`` re-assembles the source and checks that the
committed binary is byte for byte what it gives. Needs binutils' ``as`` and ``objcopy``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qmpd.machine.errors import GuestBuildError
from qmpd.machine.guest import IMAGE, MAX_IMAGE, SOURCE

#: The binutils programs the build runs.
TOOLS = ("as", "objcopy")


def missing_tools() -> list[str]:
    """The binutils programs not found on ``$PATH`` (empty when the build can run)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def assemble(source: Path = SOURCE) -> bytes:
    """Assemble ``source`` and return the flat binary of its ``.text`` section.

    :raise GuestBuildError: if binutils are missing, the source does not assemble or the
        image is empty or larger than :data:`MAX_IMAGE`.
    """
    if missing := missing_tools():
        raise GuestBuildError(f"cannot build the guest: '{missing[0]}' (binutils) not found")
    with tempfile.TemporaryDirectory(prefix="qmpd-guest-") as tmp:
        obj, binary = Path(tmp, "counter.o"), Path(tmp, "counter.bin")
        for argv in (["as", "--64", "-o", str(obj), str(source)],
                     ["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)]):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                first = (proc.stderr.strip().splitlines() or ["?"])[0]
                raise GuestBuildError(f"cannot build the guest: {argv[0]}: {first}")
        image = binary.read_bytes()
    if not 0 < len(image) <= MAX_IMAGE:
        raise GuestBuildError(f"guest image has {len(image)} bytes (limit {MAX_IMAGE})")
    return image


def main() -> int:
    """``python -m qmpd.machine.guest.build``: rewrite ``counter.bin`` from ``counter.S``."""
    try:
        image = assemble()
    except GuestBuildError as err:
        print(f"qmpd.machine.guest.build: {err}", file=sys.stderr)
        return 1
    IMAGE.write_bytes(image)
    print(f"{IMAGE}: {len(image)} bytes from {SOURCE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
