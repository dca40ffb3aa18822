"""The guest program: ``counter.S`` assembled with binutils on first use into a cache.

Users: :mod:`qmpd.machine.layout` (writes the image into guest RAM at boot/reset). The
binary is never committed: :func:`guest_image` runs ``as`` and ``objcopy -O binary`` on the
shipped source, keyed by the source's SHA-256, and caches the result under
``$QMPD_CACHE_DIR`` (default ``$XDG_CACHE_HOME/qmpd`` or ``~/.cache/qmpd``). Writes are
atomic (temp file + rename), so concurrent first uses from several processes are safe.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from qmpd.machine.errors import GuestBuildError

SOURCE = Path(__file__).with_name("counter.S")
#: The image must fit below the ring (layout.CODE_MAX).
MAX_IMAGE = 64 * 1024


def cache_dir() -> Path:
    """Where assembled images are kept."""
    env = os.environ.get("QMPD_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "qmpd"


def _assemble(source: Path, out: Path) -> None:
    for tool in ("as", "objcopy"):
        if shutil.which(tool) is None:
            raise GuestBuildError(f"cannot build the guest: '{tool}' (binutils) not found")
    with tempfile.TemporaryDirectory(prefix="qmpd-guest-") as tmp:
        obj = os.path.join(tmp, "counter.o")
        binary = os.path.join(tmp, "counter.bin")
        for argv in (["as", "--64", "-o", obj, str(source)],
                     ["objcopy", "-O", "binary", "-j", ".text", obj, binary]):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                first = (proc.stderr.strip().splitlines() or ["?"])[0]
                raise GuestBuildError(f"cannot build the guest: {argv[0]}: {first}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_out = tempfile.mkstemp(dir=out.parent, prefix=".counter-")
        with os.fdopen(fd, "wb") as f:
            f.write(Path(binary).read_bytes())
        os.replace(tmp_out, out)


@functools.cache
def guest_image() -> bytes:
    """The assembled guest (flat binary, entry at offset 0), built on first use.

    :raise GuestBuildError: if binutils are missing or the source does not assemble.
    """
    try:
        source = SOURCE.read_bytes()
    except OSError as err:
        raise GuestBuildError(f"cannot build the guest: {SOURCE}: {err.strerror}") from err
    digest = hashlib.sha256(source).hexdigest()[:16]
    cached = cache_dir() / f"counter-{digest}.bin"
    if not cached.exists():
        try:
            _assemble(SOURCE, cached)
        except OSError:
            # Cache not writable: build into a private temp dir instead.
            cached = Path(tempfile.mkdtemp(prefix="qmpd-cache-")) / cached.name
            _assemble(SOURCE, cached)
    image = cached.read_bytes()
    if not 0 < len(image) <= MAX_IMAGE:
        raise GuestBuildError(f"guest image has {len(image)} bytes (limit {MAX_IMAGE})")
    return image
