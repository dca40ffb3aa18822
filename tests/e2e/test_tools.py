"""The user-facing client tools: ``qmpd-check-stream`` on files and on live serial
sockets of a real qmpd (UNIX and TCP), and the demo keeping its files when it fails."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpd.machine.guest_check import expected_sum
from qmpd.testing.harness import free_tcp_port

GUEST = "counter,wss=1M,dirty=4,pace=20000"
CHECK = [sys.executable, "-m", "qmpd.tools.check_stream"]


def record(n: int) -> str:
    return f"seq={n} sum={expected_sum(n, 4, 256):016x}\n"


def check(*args: str | Path, timeout: float = 30) -> tuple[int, str, str]:
    proc = subprocess.run([*CHECK, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_an_intact_file_passes_and_a_cut_last_line_is_ignored(tmp_path: Path) -> None:
    out = tmp_path / "serial.out"
    out.write_text("".join(record(n) for n in range(5, 105)) + "seq=105 su")
    assert check("--guest", GUEST, out) == (0, (
        f"{out}: 100 records seq 5..104: 0 gaps [], 0 repeats [], 0 bad sums [], "
        "0 malformed []\nINTACT: no gap, no repeat, checksums valid\n"), "")
    assert check("--guest", GUEST, "--start", "5", out)[0] == 0
    assert check("--guest", GUEST, "--start", "0", out)[1].startswith(
        f"{out}: 100 records seq 5..104: 1 gaps [(0, 5)],")


def test_gaps_repeats_bad_sums_and_junk_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "serial.out"
    lines = [record(n) for n in range(10)]
    lines[7] = "seq=7 sum=0000000000000000\n"
    out.write_text("".join(lines[:3] + lines[5:] + lines[8:9] + ["garbage\n"]))
    bad7 = f"{expected_sum(7, 4, 256):016x}"
    assert check("--guest", GUEST, out) == (1, (
        f"{out}: 9 records seq 0..8: 1 gaps [(3, 5)], 1 repeats [8], 1 bad sums "
        f"[(7, '0000000000000000', '{bad7}')], 1 malformed ['garbage']\nBROKEN\n"), "")
    # the default guest's parameters do not fit this stream: every sum is wrong
    assert "9 bad sums" in check(tmp_path / "serial.out")[1]


def test_nothing_to_check_or_nothing_to_read(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert check(tmp_path / "empty") == (1, (
        f"{tmp_path / 'empty'}: 0 records seq None..None: 0 gaps [], 0 repeats [], "
        "0 bad sums [], 0 malformed []\nBROKEN: no complete record\n"), "")
    assert check(tmp_path / "missing") == (
        2, "", f"qmpd-check-stream: {tmp_path / 'missing'}: No such file or directory\n")
    assert check("--guest", "counter,wss=1Q", tmp_path / "empty")[0] == 2
    assert check("tcp:localhost") == (2, "", "qmpd-check-stream: tcp:localhost: host and "
                                             "port must be given as tcp:HOST:PORT\n")


@pytest.fixture(params=["unix", "tcp"])
def serial(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A running qmpd whose guest's serial is a listening socket; yields its address."""
    if request.param == "unix":
        address = f"unix:{tmp_path / 's'}"
    else:
        address = f"tcp:127.0.0.1:{free_tcp_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "qmpd", "-name", "tools", "-m", "32M",
                             "-serial", f"{address},server=on,wait=off", "-guest", GUEST],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "qmpd's serial socket never listened"
            if request.param == "unix":
                if (tmp_path / "s").exists():
                    break
            else:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0:
                        break
            time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_a_live_serial_socket_is_checked(serial: str) -> None:
    status, out, err = check("--guest", GUEST, "--records", "300", "--seconds", "20", serial)
    assert (status, err) == (0, "")
    assert re.fullmatch(rf"{re.escape(serial)}: 300 records seq (\d+)\.\.(\d+): 0 gaps \[\], "
                        r"0 repeats \[\], 0 bad sums \[\], 0 malformed \[\]\n"
                        r"INTACT: no gap, no repeat, checksums valid\n", out), out


def test_the_demo_keeps_its_files_when_it_fails() -> None:
    proc = subprocess.run([sys.executable, "-m", "qmpd.testing.demo",
                           "--qmpd-arg=-no-such-option"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "-no-such-option" in failed[0], proc.stdout
    kept = re.search(r"^The demo failed; its files are kept in (/\S+):$", proc.stdout, re.M)
    assert kept is not None, proc.stdout
    wd = Path(kept.group(1))
    try:
        assert f"   {wd / 'secondary.log'} (" in proc.stdout
        assert "-no-such-option" in (wd / "secondary.log").read_text()
    finally:
        shutil.rmtree(wd)
