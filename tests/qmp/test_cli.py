"""The QEMU-style command line, start-up and graceful shutdown of a real qmpd process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qmp_helpers import REPO, Raw, start_qmpd

from qmpd.cli import parse_args
from qmpd.config import MiB


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qmpd", *args], capture_output=True,
                          text=True, timeout=30, cwd=REPO)


def test_help_and_version() -> None:
    helped = run("--help")
    assert helped.returncode == 0 and "-qmp unix:PATH,server=on,wait=off" in helped.stdout
    assert run("-h").stdout == helped.stdout
    version = run("--version")
    assert (version.returncode, version.stdout) == (0, "qmpd version 0.1.0 (QMP of QEMU 7.2.0)\n")


@pytest.mark.parametrize("args,message", [
    (["-foo"], "qmpd: -foo: invalid option\n"),
    (["--bogus", "x"], "qmpd: --bogus: invalid option\n"),
    (["stray"], "qmpd: stray: invalid option\n"),
    (["-m"], "qmpd: -m: requires an argument\n"),
    (["-m", "lots"], "qmpd: -m lots: Parameter 'size' expects a non-negative number below "
                     "2^64\n"),
    (["-m", "0"], "qmpd: -m 0: memory size must be greater than zero\n"),
    (["-m", "0G"], "qmpd: -m 0G: memory size must be greater than zero\n"),
    (["-accel", "xen"], "qmpd: -accel xen: invalid accelerator xen\n"),
    (["-qmp", "unix:/tmp/x.sock"], "qmpd: -qmp unix:/tmp/x.sock: only server mode is supported "
                                   "(add server=on,wait=off)\n"),
    (["-qmp", "tcp:localhost,server=on"], "qmpd: -qmp tcp:localhost,server=on: host and port "
                                          "must be given as tcp:HOST:PORT\n"),
    (["-qmp", "pipe:x,server=on"], "qmpd: -qmp pipe:x,server=on: monitor address must be "
                                   "unix:PATH or tcp:HOST:PORT\n"),
    (["-qmp", "unix:/tmp/x,server=on,colour=red"],
     "qmpd: -qmp unix:/tmp/x,server=on,colour=red: Invalid parameter 'colour'\n"),
])
def test_bad_command_lines_exit_1_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message)


def test_every_option_lands_in_the_config() -> None:
    config = parse_args([
        "-qmp", "unix:/run/a.sock,server=on,wait=off", "-qmp", "tcp:127.0.0.1:4444,server,nowait",
        "-name", "guest=vm7,debug-threads=on", "-S", "-pidfile", "/run/q.pid", "-daemonize",
        "-m", "4G", "-accel", "tcg", "-serial", "unix:/run/s.sock,server=on,wait=off",
        "-serial", "null", "-chardev", "socket,id=c0,path=/run/c.sock,server=on,wait=off",
        "-guest", "counter,wss=16M,dirty=16,pace=0", "-incoming", "defer"])
    assert [(m.kind, m.path, m.host, m.port, m.wait) for m in config.monitors] == [
        ("unix", "/run/a.sock", "", 0, False), ("tcp", "", "127.0.0.1", 4444, False)]
    assert (config.name, config.start_paused, config.pidfile, config.daemonize) == \
        ("vm7", True, "/run/q.pid", True)
    assert (config.mem_bytes, config.accel) == (4 << 30, "tcg")
    assert config.serial == ["unix:/run/s.sock,server=on,wait=off", "null"]
    assert config.chardev == ["socket,id=c0,path=/run/c.sock,server=on,wait=off"]
    assert (config.guest, config.incoming) == ("counter,wss=16M,dirty=16,pace=0", "defer")


@pytest.mark.parametrize("text,size", [("512", 512 * MiB), ("512M", 512 * MiB),
                                       ("4G", 4 << 30), ("1048576k", 1 << 30),
                                       ("size=2G", 2 << 30), ("1.5G", 3 << 29)])
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_args(["-m", text]).mem_bytes == size


def test_defaults() -> None:
    config = parse_args([])
    assert (config.mem_bytes, config.accel, config.monitors, config.name) == \
        (128 * MiB, "kvm:tcg", [], None)


def test_sigterm_shutdown_event_socket_and_pidfile_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "qmpd.pid"
    d = start_qmpd(tmp_path, "-pidfile", str(pidfile))
    assert pidfile.read_text() == f"{d.proc.pid}\n"
    client = Raw(d.path)
    client.negotiate()
    d.proc.send_signal(signal.SIGTERM)
    event = client.read()
    assert (event["event"], event["data"]) == ("SHUTDOWN", {"guest": False,
                                                            "reason": "host-signal"})
    assert client.at_eof()
    assert d.proc.wait(10) == 0
    assert "qmpd: terminating on signal 15" in d.stderr()
    assert not Path(d.path).exists() and not pidfile.exists()


def test_sigint_is_graceful_too(tmp_path: Path) -> None:
    d = start_qmpd(tmp_path)
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(10) == 0
    assert not Path(d.path).exists()


def test_quit_drains_other_sessions(tmp_path: Path) -> None:
    d = start_qmpd(tmp_path, tcp=True)
    assert d.port is not None
    other = Raw(("127.0.0.1", d.port))
    other.negotiate()
    client = Raw(d.path)
    client.negotiate()
    client.send('{"execute":"quit","id":1}')
    assert client.read() == {"return": {}, "id": 1}
    assert other.read()["event"] == "SHUTDOWN"
    assert other.at_eof() and client.read()["event"] == "SHUTDOWN" and client.at_eof()
    assert d.proc.wait(10) == 0


def test_start_paused_and_incoming(tmp_path: Path) -> None:
    for args, status in ((["-S"], "prelaunch"), (["-incoming", "defer"], "inmigrate")):
        d = start_qmpd(tmp_path, *args, name=f"{status}.sock")
        client = Raw(d.path)
        client.negotiate()
        assert client.cmd({"execute": "query-status"}) == {
            "return": {"status": status, "singlestep": False, "running": False}}
        assert d.stop() == 0


def test_daemonize_returns_once_listening(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    pidfile = tmp_path / "d.pid"
    result = run("-daemonize", "-pidfile", str(pidfile),
                 "-qmp", f"unix:{sock},server=on,wait=off")
    assert result.returncode == 0 and sock.exists()
    pid = int(pidfile.read_text())
    client = Raw(str(sock))
    client.negotiate()
    assert client.cmd({"execute": "quit"}) == {"return": {}}
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists() and not sock.exists()
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_bind_failure_exits_1(tmp_path: Path) -> None:
    result = run("-qmp", f"unix:{tmp_path}/missing/dir/q.sock,server=on,wait=off")
    assert result.returncode == 1
    assert result.stderr.startswith("qmpd: ") and "No such file or directory" in result.stderr


def test_several_monitors_at_once(tmp_path: Path) -> None:
    second = tmp_path / "second.sock"
    d = start_qmpd(tmp_path, "-qmp", f"unix:{second},server=on,wait=off", "-name", "multi",
                   tcp=True)
    assert d.port is not None
    clients = [Raw(d.path), Raw(str(second)), Raw(("127.0.0.1", d.port))]
    for client in clients:
        client.negotiate()
        assert client.cmd({"execute": "query-name"}) == {"return": {"name": "multi"}}
    assert second.stat().st_mode & 0o777 == 0o600
    clients[1].send({"execute": "quit"})
    for client in clients:
        assert any(client.read().get("event") == "SHUTDOWN" for _ in range(2))
        assert client.at_eof()
    assert d.proc.wait(10) == 0
    assert not second.exists() and not Path(d.path).exists()
