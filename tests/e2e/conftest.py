"""Fixtures for end-to-end tests: real qmpd processes, real sockets, real qemu.qmp clients."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qmpd.testing.certs import make_ca, make_creds_dir, openssl_available
from qmpd.testing.harness import ColoPair, start_colo_pair, workdir

#: Accelerators to run the end-to-end tests on: KVM where /dev/kvm exists, and tcg.
ACCELS = ["kvm", "tcg"] if os.path.exists("/dev/kvm") else ["tcg"]


@pytest.fixture
def wd() -> Iterator[Path]:
    """A short temporary directory for sockets and logs, removed afterwards."""
    path = workdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=ACCELS)
async def pair(wd: Path, request: pytest.FixtureRequest) -> AsyncIterator[ColoPair]:
    """A COLO pair with 100 ms checkpoints, on KVM and on tcg."""
    p = await start_colo_pair(wd, delay_ms=100, extra=["-accel", request.param])
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tls-creds-x509 directory (CA, server and client certificates for localhost)."""
    if not openssl_available():
        pytest.skip("openssl is not installed")
    root = tmp_path_factory.mktemp("tls")
    return make_creds_dir(root / "creds", make_ca(root / "ca"))
