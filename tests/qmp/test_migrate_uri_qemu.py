"""Migration URIs as QEMU 7.2 answers them, checked on qmpd and, where installed, on
QEMU 7.2 itself (``-machine none``; the texts were read from a real 7.2 and its
migration.c, exec.c, socket.c, io/channel-command.c).

Each ``migrate`` probe: the reply, then ``query-migrate``'s status and error-desc, then
the ``MIGRATION`` statuses emitted (capability ``events`` on). A scheme QEMU does not
know fails at once with ``setup`` and ``failed`` and no error-desc; a bad address fails
the same way with an error-desc; a command that does not read the stream fails after
``active`` with ``Unable to write to command: Broken pipe``; a command that reads the
stream completes whatever its exit status (QEMU 7.2 does not look at it).
``migrate-incoming`` of an unknown scheme gives ``unknown migration protocol: URI`` and
emits ``setup`` only.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import Raw, start_qemu_72, start_qmpd, wait_listening

ACCEL = ["-accel", "kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else []
EXPECTS_PROTOCOL = "Parameter 'uri' expects a valid migration protocol"
BROKEN_PIPE = "Unable to write to command: Broken pipe"
SETUP_FAILED = ["setup", "failed"]
ACTIVE_FAILED = ["setup", "active", "failed"]
DONE = ["setup", "active", "completed"]

# (uri, error reply or None, final query-migrate, MIGRATION statuses)
PROBES: list[tuple[str, str | None, dict[str, Any], list[str]]] = [
    ("foo:bar", EXPECTS_PROTOCOL, {"status": "failed"}, SETUP_FAILED),
    ("exec", EXPECTS_PROTOCOL, {"status": "failed"}, SETUP_FAILED),
    ("unix:", "invalid Unix socket address",
     {"status": "failed", "error-desc": "invalid Unix socket address"}, SETUP_FAILED),
    ("tcp:x", "error parsing address 'x'",
     {"status": "failed", "error-desc": "error parsing address 'x'"}, SETUP_FAILED),
    ("unix:/nonexistent/m.sock", None,
     {"status": "failed",
      "error-desc": "Failed to connect to '/nonexistent/m.sock': No such file or directory"},
     SETUP_FAILED),
    ("fd:nosuch", "File descriptor named 'nosuch' has not been found",
     {"status": "failed", "error-desc": "File descriptor named 'nosuch' has not been found"},
     SETUP_FAILED),
    ("fd:", "File descriptor named '' has not been found",
     {"status": "failed", "error-desc": "File descriptor named '' has not been found"},
     SETUP_FAILED),
    ("exec:", None, {"status": "failed", "error-desc": BROKEN_PIPE}, ACTIVE_FAILED),
    ("exec:false", None, {"status": "failed", "error-desc": BROKEN_PIPE}, ACTIVE_FAILED),
    ("exec:exit 3", None, {"status": "failed", "error-desc": BROKEN_PIPE}, ACTIVE_FAILED),
    ("exec:cat > /dev/null; exit 2", None, {"status": "completed"}, DONE),
]


class Client:
    """A raw QMP client that sets events aside."""

    def __init__(self, path: str) -> None:
        self.raw = Raw(path)
        self.raw.negotiate()
        self.events: list[dict[str, Any]] = []

    def cmd(self, name: str, fd: int | None = None, **args: Any) -> dict[str, Any]:
        data = (json.dumps({"execute": name, "arguments": args}) + "\n").encode()
        if fd is None:
            self.raw.send(data)
        else:  # the descriptor travels with the command (SCM_RIGHTS)
            self.raw.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            array.array("i", [fd]))])
        while True:
            msg = self.raw.read()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def migration_statuses(self) -> list[str]:
        return [e["data"]["status"] for e in self.events if e["event"] == "MIGRATION"]

    def wait_migration(self, timeout: float = 30.0) -> dict[str, Any]:
        """query-migrate until it leaves setup/active (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.cmd("query-migrate")["return"]
            if info.get("status") not in ("setup", "active", "device"):
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.02)


@pytest.fixture(scope="module", params=["qmpd", "qemu-7.2"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(monitor path, kind) of a running qmpd or QEMU 7.2 (-incoming defer: "incoming")."""
    tmp = tmp_path_factory.mktemp("uri")
    procs: list[subprocess.Popen[bytes]] = []
    if request.param == "qmpd":
        d = start_qmpd(tmp)
        wait_listening(d.path)
        procs.append(d.proc)
        path = d.path
    else:
        # a PC with RAM: -machine none's stream is so small that a command which
        # exits at once may still find it all in the pipe (then QEMU completes)
        proc, path = start_qemu_72(tmp, "-machine", "pc", "-m", "64", *ACCEL)
        procs.append(proc)
    yield path, request.param
    for proc in procs:
        proc.kill()
        proc.wait(10)


def _result(reply: dict[str, Any]) -> str | None:
    return reply["error"]["desc"] if "error" in reply else None


@pytest.mark.parametrize("uri,error,info,statuses", PROBES, ids=[p[0] for p in PROBES])
def test_migrate_uri(server: tuple[str, str], uri: str, error: str | None,
                     info: dict[str, Any], statuses: list[str]) -> None:
    client = Client(server[0])
    try:
        assert client.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "events", "state": True}]) == {"return": {}}
        # unlimited (0): completes fast on qmpd and QEMU alike
        assert client.cmd("migrate-set-parameters", **{"max-bandwidth": 0}) == {"return": {}}
        reply = client.cmd("migrate", uri=uri)
        assert _result(reply) == error
        final = client.wait_migration()
        assert {k: v for k, v in final.items() if k in ("status", "error-desc")} == info
        assert client.migration_statuses() == statuses
        expected_run = "postmigrate" if info["status"] == "completed" else "running"
        assert client.cmd("query-status")["return"]["status"] == expected_run
        if expected_run == "postmigrate":
            assert client.cmd("cont") == {"return": {}}
    finally:
        client.raw.close()


def test_migrate_incoming_unknown_protocol(tmp_path: Path) -> None:
    """On a ``-incoming defer`` process (its own, as the run state changes)."""
    for kind in ("qmpd", "qemu"):
        if kind == "qmpd":
            d = start_qmpd(tmp_path, "-incoming", "defer")
            wait_listening(d.path)
            proc, path = d.proc, d.path
        else:
            proc, path = start_qemu_72(tmp_path, "-incoming", "defer")
        client = Client(path)
        try:
            assert client.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "events", "state": True}]) == {"return": {}}
            for uri, text in (("foo:bar", "unknown migration protocol: foo:bar"),
                              ("unix:", "invalid Unix socket address")):
                reply = client.cmd("migrate-incoming", uri=uri)
                assert _result(reply) == text, kind
            assert client.cmd("query-migrate") == {"return": {}}
            assert client.migration_statuses() == ["setup", "setup"]
            assert client.cmd("query-status")["return"]["status"] == "inmigrate"
        finally:
            client.raw.close()
            proc.kill()
            proc.wait(10)


NO_FD = "No file descriptor supplied via SCM_RIGHTS"
# (command, fdname, send a descriptor?, error or None)
FD_PROBES: list[tuple[str, str, bool, str | None]] = [
    ("getfd", "a", False, NO_FD),
    ("getfd", "1a", True, "Parameter 'fdname' expects a name not starting with a digit"),
    ("getfd", "1a", False, NO_FD),
    ("getfd", "", True, None),
    ("getfd", "a", True, None),
    ("getfd", "a", True, None),  # replaces (and closes) the first
    ("closefd", "zz", False, "File descriptor named 'zz' not found"),
    ("closefd", "a", False, None),
    ("closefd", "a", False, "File descriptor named 'a' not found"),
    ("closefd", "", False, None),
]


def test_getfd_closefd(server: tuple[str, str]) -> None:
    client = Client(server[0])
    r, w = os.pipe()
    try:
        seen = []
        for command, name, send, _ in FD_PROBES:
            reply = client.cmd(command, fd=w if send else None, fdname=name)
            seen.append(_result(reply))
        assert seen == [p[3] for p in FD_PROBES]
        assert _result(client.cmd("getfd")) == "Parameter 'fdname' is missing"
        assert _result(client.cmd("getfd", fdname=1)) == (
            "Invalid parameter type for 'fdname', expected: string")
    finally:
        client.raw.close()
        os.close(r)
        os.close(w)
