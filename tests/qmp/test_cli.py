"""The QEMU-style command line, start-up and graceful shutdown of a real qmpd process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qmp_helpers import REPO, Raw, error, start_qmpd

from qmpd.cli import parse_args
from qmpd.config import ChardevSpec, MiB
from qmpd.options import SocketAddress


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qmpd", *args], capture_output=True,
                          text=True, timeout=30, cwd=REPO)


def test_help_and_version() -> None:
    helped = run("--help")
    assert helped.returncode == 0 and "-qmp unix:PATH,server=on,wait=off" in helped.stdout
    assert run("-h").stdout == helped.stdout
    version = run("--version")
    assert (version.returncode, version.stdout) == (0, "qmpd version 0.1.0 (QMP of QEMU 7.2.0)\n")


LONG = "/tmp/" + "x" * 103  # 108 bytes: one more than sun_path holds


@pytest.mark.parametrize("args,message", [
    (["-foo"], "qmpd: -foo: invalid option"),
    (["--bogus", "x"], "qmpd: --bogus: invalid option"),
    (["stray"], "qmpd: stray: invalid option"),
    (["-m"], "qmpd: -m: requires an argument"),
    # -qmp
    (["-qmp", "unix:/tmp/x.sock"],
     "qmpd: -qmp unix:/tmp/x.sock: only server mode is supported (add server=on,wait=off)"),
    (["-qmp", "unix:"], "qmpd: -qmp unix:: a socket path must be given (unix:PATH)"),
    (["-qmp", "foo:bar"],
     "qmpd: -qmp foo:bar: unknown address type 'foo' (expected unix:PATH or tcp:HOST:PORT)"),
    (["-qmp", "pipe:x,server=on"], "qmpd: -qmp pipe:x,server=on: unknown address type 'pipe' "
                                   "(expected unix:PATH or tcp:HOST:PORT)"),
    (["-qmp", "tcp:localhost,server=on"],
     "qmpd: -qmp tcp:localhost,server=on: host and port must be given as tcp:HOST:PORT"),
    (["-qmp", "tcp:127.0.0.1:99999,server=on"],
     "qmpd: -qmp tcp:127.0.0.1:99999,server=on: port 99999 is out of range (0-65535)"),
    (["-qmp", "tcp:127.0.0.1:http,server=on"],
     "qmpd: -qmp tcp:127.0.0.1:http,server=on: invalid port 'http'"),
    (["-qmp", "unix:/tmp/x,server=on,colour=red"],
     "qmpd: -qmp unix:/tmp/x,server=on,colour=red: Invalid parameter 'colour'"),
    (["-qmp", "unix:/tmp/x,server=maybe"],
     "qmpd: -qmp unix:/tmp/x,server=maybe: Parameter 'server' expects 'on' or 'off'"),
    (["-qmp", f"unix:{LONG},server=on"],
     f"qmpd: -qmp unix:{LONG},server=on: socket path is 108 bytes long, the limit is 107"),
    # -serial, -chardev
    (["-serial", "bogus"], "qmpd: -serial bogus: unknown backend 'bogus' (expected null, "
                           "stdio, file:PATH, unix:PATH, tcp:HOST:PORT or chardev:ID)"),
    (["-serial", "unix:"], "qmpd: -serial unix:: a socket path must be given (unix:PATH)"),
    (["-serial", "tcp::70000,server=on"],
     "qmpd: -serial tcp::70000,server=on: port 70000 is out of range (0-65535)"),
    (["-serial", "file:"], "qmpd: -serial file:: file: needs a path after ':'"),
    (["-serial", "unix:/tmp/s,wait=soon"],
     "qmpd: -serial unix:/tmp/s,wait=soon: Parameter 'wait' expects 'on' or 'off'"),
    (["-serial", "chardev:c9"], "qmpd: -serial chardev:c9: chardev 'c9' not found"),
    (["-chardev", "socket,id=c0"],
     "qmpd: -chardev socket,id=c0: a socket needs path=PATH or port=PORT"),
    (["-chardev", "socket,path=/tmp/s"], "qmpd: -chardev socket,path=/tmp/s: Parameter 'id' "
                                         "is missing"),
    (["-chardev", "pty,id=p"], "qmpd: -chardev pty,id=p: unknown backend 'pty' (expected "
                               "null, stdio, file or socket)"),
    (["-chardev", "socket,id=c,port=x"], "qmpd: -chardev socket,id=c,port=x: invalid port 'x'"),
    (["-chardev", "null,id=a", "-chardev", "stdio,id=a"],
     "qmpd: -chardev stdio,id=a: duplicate chardev id 'a'"),
    # -m, -accel, -guest (the last cases need the whole machine config)
    (["-m", "lots"], "qmpd: -m lots: Parameter 'size' expects a non-negative number below "
                     "2^64"),
    (["-m", "0"], "qmpd: -m 0: memory size must be greater than zero"),
    (["-m", "0G"], "qmpd: -m 0G: memory size must be greater than zero"),
    (["-m", "size=1G,slots=2"], "qmpd: -m size=1G,slots=2: Invalid parameter 'slots'"),
    (["-m", "3M"], "qmpd: -m 3M: memory size must be a multiple of 2M, not 3145728"),
    (["-m", "1T"], "qmpd: -m 1T: 1048576M exceeds the maximum 64G"),
    (["-accel", "xen"], "qmpd: -accel xen: invalid accelerator xen"),
    (["-accel", "kvm,kernel-irqchip=on"],
     "qmpd: -accel kvm,kernel-irqchip=on: Invalid parameter 'kernel-irqchip'"),
    (["-guest", "linux"], "qmpd: -guest linux: unknown guest program (expected counter)"),
    (["-guest", "counter,wss=1X"], "qmpd: -guest counter,wss=1X: Parameter 'wss' expects a "
                                   "non-negative number below 2^64"),
    (["-guest", "counter,dirty=abc"],
     "qmpd: -guest counter,dirty=abc: Parameter 'dirty' expects a number"),
    (["-guest", "counter,speed=3"], "qmpd: -guest counter,speed=3: Invalid parameter 'speed'"),
    (["-guest", "counter,wss=6K"],
     "qmpd: -guest counter,wss=6K: wss must be a positive multiple of 4K, not 6144"),
    (["-guest", "counter,pace=-1"], "qmpd: -guest counter,pace=-1: pace=-1 is out of range"),
    (["-m", "64M", "-guest", "counter,wss=64M"],
     "qmpd: -guest counter,wss=64M: wss=64M does not fit in -m 64M (needs 66M)"),
    # -name, -pidfile, -incoming
    (["-name", "vm,colour=red"], "qmpd: -name vm,colour=red: Invalid parameter 'colour'"),
    (["-name", "vm,debug-threads=maybe"],
     "qmpd: -name vm,debug-threads=maybe: Parameter 'debug-threads' expects 'on' or 'off'"),
    (["-pidfile", ""], "qmpd: -pidfile : a file name must be given"),
    (["-incoming", "garbage"], "qmpd: -incoming garbage: unknown migration protocol "
                               "(expected tcp:HOST:PORT, unix:PATH, "
                               "exec:COMMAND, fd:N or defer)"),
    (["-incoming", "unix:"], "qmpd: -incoming unix:: a socket path must be given (unix:PATH)"),
    (["-incoming", "tcp:host"],
     "qmpd: -incoming tcp:host: host and port must be given as tcp:HOST:PORT"),
])
def test_bad_command_lines_exit_1_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def _resolve_error(host: str) -> str:
    try:
        socket.getaddrinfo(host, 4444, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return str(err.strerror)
    raise AssertionError(f"{host} resolves")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 someone else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_start_up_failures_name_the_option_and_value(tmp_path: Path, busy_port: int) -> None:
    missing = tmp_path / "missing"
    qmp = f"unix:{tmp_path}/q.sock,server=on,wait=off"
    bad_host = "no-such-host.invalid"
    cases = [
        (["-qmp", f"unix:{missing}/q.sock,server=on,wait=off"],
         f"-qmp unix:{missing}/q.sock,server=on,wait=off: cannot listen: No such file or "
         "directory"),
        (["-qmp", f"tcp:{bad_host}:4444,server=on,wait=off"],
         f"-qmp tcp:{bad_host}:4444,server=on,wait=off: cannot listen: "
         f"{_resolve_error(bad_host)}"),
        (["-pidfile", f"{tmp_path}/q.pid",
          "-qmp", f"tcp:127.0.0.1:{busy_port},server=on,wait=off"],
         f"-qmp tcp:127.0.0.1:{busy_port},server=on,wait=off: cannot listen: Address already "
         "in use"),
        (["-qmp", qmp, "-serial", f"unix:{missing}/s.sock,server=on,wait=off"],
         f"-serial unix:{missing}/s.sock,server=on,wait=off: cannot listen: No such file or "
         "directory"),
        (["-qmp", qmp, "-serial", f"unix:{tmp_path}/nobody.sock"],
         f"-serial unix:{tmp_path}/nobody.sock: cannot connect: No such file or directory"),
        (["-qmp", qmp, "-chardev", f"socket,id=c0,path={missing}/s.sock,server=on,wait=off",
          "-serial", "chardev:c0"],
         f"-chardev socket,id=c0,path={missing}/s.sock,server=on,wait=off: cannot listen: "
         "No such file or directory"),
        (["-qmp", qmp, "-serial", f"file:{missing}/out.log"],
         f"-serial file:{missing}/out.log: cannot open '{missing}/out.log': No such file or "
         "directory"),
        (["-qmp", qmp, "-pidfile", f"{missing}/q.pid"],
         f"-pidfile {missing}/q.pid: cannot write: No such file or directory"),
        (["-qmp", qmp, "-incoming", f"tcp:127.0.0.1:{busy_port}"],
         f"-incoming tcp:127.0.0.1:{busy_port}: Failed to bind socket: Address already in use"),
        (["-qmp", qmp, "-incoming", f"unix:{missing}/m.sock"],
         f"-incoming unix:{missing}/m.sock: Failed to bind socket to {missing}/m.sock: No such "
         "file or directory"),
    ]
    for args, message in cases:
        result = run(*args)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"qmpd: {message}\n")
        assert not (tmp_path / "q.sock").exists()
        assert not (tmp_path / "q.pid").exists()  # written before the monitors, removed


def test_help_describes_every_option() -> None:
    helped = run("--help").stdout
    for text in ("-serial SPEC", "null | stdio | file:PATH", "unix:PATH[,server=on][,wait=off]",
                 "tcp:[HOST]:PORT[,server=on][,wait=off]", "chardev:ID", "-chardev SPEC",
                 "socket,id=ID,path=PATH[,server=on][,wait=off]", "file,id=ID,path=PATH",
                 "wss=SIZE", "dirty=N", "pace=N", "check=N", "batch=N",
                 "-incoming tcp:[HOST]:PORT|unix:PATH|defer"):
        assert text in helped, text


def test_every_option_lands_in_the_config() -> None:
    config = parse_args([
        "-qmp", "unix:/run/a.sock,server=on,wait=off", "-qmp", "tcp:127.0.0.1:4444,server,nowait",
        "-name", "guest=vm7,debug-threads=on", "-S", "-pidfile", "/run/q.pid", "-daemonize",
        "-m", "4G", "-accel", "tcg", "-serial", "unix:/run/s.sock,server=on,wait=off",
        "-serial", "null", "-chardev", "socket,id=c0,path=/run/c.sock,server=on,wait=off",
        "-guest", "counter,wss=16M,dirty=16,pace=0", "-incoming", "defer"])
    assert [(m.address, m.wait) for m in config.monitors] == [
        (SocketAddress("unix", path="/run/a.sock"), False),
        (SocketAddress("tcp", host="127.0.0.1", port=4444), False)]
    assert (config.name, config.start_paused, config.pidfile, config.daemonize) == \
        ("vm7", True, "/run/q.pid", True)
    assert (config.mem_bytes, config.accel) == (4 << 30, "tcg")
    assert config.serial == [
        ChardevSpec(backend="socket", spec="unix:/run/s.sock,server=on,wait=off",
                    address=SocketAddress("unix", path="/run/s.sock"), server=True),
        ChardevSpec(backend="null", spec="null")]
    assert config.chardev == [
        ChardevSpec(backend="socket", option="-chardev", id="c0",
                    spec="socket,id=c0,path=/run/c.sock,server=on,wait=off",
                    address=SocketAddress("unix", path="/run/c.sock"), server=True)]
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


def test_bad_migration_uris_over_qmp_keep_qemus_texts(tmp_path: Path) -> None:
    """The address parser the command line uses answers QMP with QEMU 7.2's texts."""
    texts = {"unix:": "invalid Unix socket address",  # socket_parse, not the CLI's
             "tcp:host": "error parsing address 'host'",
             "tcp:127.0.0.1:99999": "error parsing address '127.0.0.1:99999'"}
    unknown = {"migrate": "Parameter 'uri' expects a valid migration protocol",
               "migrate-incoming": "unknown migration protocol: foo:cat"}
    for command, args in (("migrate", ["-S"]), ("migrate-incoming", ["-incoming", "defer"])):
        d = start_qmpd(tmp_path, *args, name=f"{command}.sock")
        client = Raw(d.path)
        client.negotiate()
        for uri, desc in {**texts, "foo:cat": unknown[command]}.items():
            reply = client.cmd({"execute": command, "arguments": {"uri": uri}})
            while "event" in reply:  # migrate-incoming: QEMU's MIGRATION setup, always
                reply = client.read()
            assert reply == error(desc)
        assert d.stop() == 0


def test_accel_kvm_without_kvm_names_the_option() -> None:
    result = subprocess.run([sys.executable, "-m", "qmpd", "-accel", "kvm"], capture_output=True,
                            text=True, timeout=30, cwd=REPO,
                            env={**os.environ, "QMPD_KVM_DEVICE": "/dev/nonexistent-kvm"})
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "qmpd: -accel kvm: KVM is not available: /dev/nonexistent-kvm: No such file or "
               "directory\n")
