"""A wheel built from a clean clone installs into a fresh venv and runs the README's example.

The wheel is built from a ``git clone`` of this repository (only committed files, as a
user or CI gets them) without build isolation, so nothing is fetched from a package index;
it is installed with ``--no-deps`` into a new venv that borrows the test venv's
dependencies through a ``.pth`` line (the test venv's own editable qmpd is not reachable
from there: its finder is only installed by ``.pth`` files of a site directory). The
installed ``qmpd`` then runs the "Running qmpd" command of README.md with only the venv's
``bin`` on PATH (so no binutils), answers ``query-qmp-schema`` over both monitors and
quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from qmpd.testing.harness import free_tcp_port

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> list[str]:
    """The command line of README.md's "Running qmpd" section, continuation lines joined."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running qmpd", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no ```sh block under 'Running qmpd'"
    return shlex.split(block.group(1).replace("\\\n", " "))


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command to completion; its standard output (it must succeed)."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with qmpd installed from a wheel built from a clean clone."""
    tmp = tmp_path_factory.mktemp("wheel")
    clone, dist, venv = tmp / "clone", tmp / "dist", tmp / "venv"
    run("git", "clone", "-q", "--local", REPO, clone)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", dist, clone)
    wheel, = dist.glob("qmpd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("qmpd/schema/schema.json", "qmpd/machine/guest/counter.bin",
                    "qmpd/py.typed"):
        assert shipped in names, f"{wheel.name} lacks {shipped}"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(run(venv / "bin/python", "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q",
        "--no-deps", "--no-index", wheel)
    where = run(venv / "bin/python", "-c", "import qmpd; print(qmpd.__file__)",
                cwd=tmp).strip()
    assert where.startswith(str(site)), where
    return venv


def test_the_readme_example_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    port = free_tcp_port()
    sock, pidfile = tmp_path / "qmpd.sock", tmp_path / "qmpd.pid"
    argv = readme_example()
    assert argv[0] == ".venv/bin/qmpd"
    argv[0] = str(installed / "bin/qmpd")
    argv = [a.replace("/tmp/qmpd.sock", str(sock)).replace("/tmp/qmpd.pid", str(pidfile))
            .replace("127.0.0.1:4444", f"127.0.0.1:{port}") for a in argv]
    assert argv[1:] == ["-name", "vm1", "-qmp", f"unix:{sock},server=on,wait=off",
                        "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off",
                        "-m", "512M", "-accel", "kvm:tcg", "-pidfile", str(pidfile)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": str(installed / "bin"), "HOME": str(tmp_path)})
    try:
        asyncio.run(_talk(sock, port, proc))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (0, b"", b"")
    assert not sock.exists() and not pidfile.exists()


def test_the_wheel_installs_the_stream_checker(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    proc = subprocess.run([installed / "bin/qmpd-check-stream", tmp_path / "empty"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"PATH": str(installed / "bin")}, check=False)
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (1, "BROKEN: no complete record")


async def _talk(sock: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
    clients = []
    for address in (str(sock), ("127.0.0.1", port)):
        qmp = QMPClient("wheel")
        for _ in range(200):
            try:
                await qmp.connect(address)
                break
            except Exception:
                assert proc.poll() is None, proc.communicate()
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"qmpd from the wheel never listened on {address}")
        clients.append(qmp)
        schema = await qmp.execute("query-qmp-schema")
        assert isinstance(schema, list)
        commands = {e["name"] for e in schema if e["meta-type"] == "command"}
        assert {"query-qmp-schema", "query-status", "quit", "migrate"} <= commands
        assert await qmp.execute("query-name") == {"name": "vm1"}
    assert (sock.parent / "qmpd.pid").read_text().strip() == str(proc.pid)
    await clients[1].disconnect()
    assert await clients[0].execute("quit") == {}
    with contextlib.suppress(EOFError):  # qmpd closes the monitor after quit, as QEMU does
        await clients[0].disconnect()
