"""One test per point of the server conformance checklist (qmp-clients.md §5)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol
from qmp_helpers import REPO, Qmpd, Raw, error

from qmpd.commands.base import qmp_capabilities
from qmpd.commands.errors import QMPError


def test_01_listen_unix_and_tcp(daemon: Qmpd) -> None:
    async def probe(address: str | tuple[str, int]) -> object:
        qmp = QMPClient("t1")
        await qmp.connect(address)
        try:
            return await qmp.execute("query-name")
        finally:
            await qmp.disconnect()
    assert daemon.port is not None
    assert asyncio.run(probe(daemon.path)) == {"name": "testvm"}
    assert asyncio.run(probe(("127.0.0.1", daemon.port))) == {"name": "testvm"}
    addr = QEMUMonitorProtocol.parse_address(f"127.0.0.1:{daemon.port}")
    legacy = QEMUMonitorProtocol(addr)
    legacy.connect()
    assert legacy.cmd("query-name") == {"name": "testvm"}
    legacy.close()


def test_02_greeting_first_and_equal_to_query_version(daemon: Qmpd) -> None:
    client = Raw(daemon.path, read_greeting=False)
    first = client.line()
    assert first == (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
                     b'"package": "qmpd 0.1.0"}, "capabilities": ["oob"]}}\r\n')
    client.negotiate()
    version = client.cmd({"execute": "query-version"})["return"]
    assert version == json.loads(first)["QMP"]["version"]


def test_03_output_framing_one_compact_line_crlf(raw: Raw) -> None:
    raw.send('{"execute":"query-status","id":"a"}{"execute":"query-commands","id":"b"}')
    for _ in range(2):
        line = raw.line()
        assert line.endswith(b"\r\n") and line.count(b"\n") == 1
        assert b"\r" not in line[:-2]
        assert line.startswith(b'{"return": ')  # QEMU's ", " / ": " separators
    raw.send('{"execute":"query-status"}')
    assert raw.line() == b'{"return": {"status": "running", "singlestep": false, ' \
                         b'"running": true}}\r\n'


def test_04_input_framing_any_separator_split_or_merged(daemon: Qmpd) -> None:
    client = Raw(daemon.path, read_greeting=False)
    # sent before the greeting was read: kept
    client.send('{"execute":"qmp_capabilities"}')
    assert "QMP" in client.read()
    assert client.read() == {"return": {}}
    client.send('{"execute":"query-name","id":1}{"execute":"query-name","id":2}\r\n'
                '{"execute":"query-name","id":3}\n')
    assert [client.read()["id"] for _ in range(3)] == [1, 2, 3]
    for byte in b'{"execute": "query-name", "id": 4}':
        client.send(bytes([byte]))
        time.sleep(0.0005)
    assert client.read() == {"return": {"name": "testvm"}, "id": 4}


@pytest.mark.parametrize("request_text,reply", [
    ('{"execute":"qmp_capabilities","arguments":{}}', {"return": {}}),
    ('{"execute":"qmp_capabilities"}', {"return": {}}),
    ('{"execute":"qmp_capabilities","id":"neg"}', {"return": {}, "id": "neg"}),
])
def test_05_negotiation_forms(daemon: Qmpd, request_text: str, reply: dict[str, object]) -> None:
    client = Raw(daemon.path)
    assert client.cmd(request_text) == reply


def test_06_oob_offered_and_working(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    assert client.greeting is not None and client.greeting["QMP"]["capabilities"] == ["oob"]
    client.negotiate(oob=True)
    assert client.cmd({"exec-oob": "qmp_capabilities", "id": 9}) == error(
        "The command qmp_capabilities does not support OOB", id=9)
    assert client.cmd({"exec-oob": "migrate-pause", "id": 10}) == error(
        "migrate-pause is currently only supported during postcopy-active state", id=10)
    # a capability not offered is refused with QEMU's text (session without oob offered)
    session = _Session(offered=False)
    with pytest.raises(QMPError) as info:
        qmp_capabilities(None, session, enable=["oob"])  # type: ignore[arg-type]
    assert (info.value.error_class, info.value.desc) == ("GenericError",
                                                        "Capability oob not available")
    assert not session.negotiated


class _Session:
    def __init__(self, offered: bool) -> None:
        self.oob_offered = offered
        self.oob_enabled = False
        self.negotiated = False

    def negotiate(self, oob: bool) -> None:
        self.negotiated = True

    def take_fd(self) -> int | None:
        return None


def test_07_pre_negotiation_errors(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    assert client.cmd({"execute": "query-status", "id": 1}) == error(
        "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound", id=1)
    assert client.cmd({"execute": "no-such-command"}) == error(
        "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")
    client.negotiate()
    assert client.cmd({"execute": "qmp_capabilities", "id": 2}) == error(
        "Capabilities negotiation is already complete, command ignored", "CommandNotFound",
        id=2)


def test_08_no_events_before_negotiation(own_daemon: Qmpd) -> None:
    silent = Raw(own_daemon.path)
    listener = Raw(own_daemon.path)
    listener.negotiate()
    assert listener.cmd({"execute": "quit"}) == {"return": {}}
    assert listener.read()["event"] == "SHUTDOWN"
    assert silent.at_eof()
    assert own_daemon.proc.wait(10) == 0


@pytest.mark.parametrize("msg_id", ["str", 7, -1.5, [1, {"a": None}], {"k": [True]}, None,
                                    False, "__qmp#00001"])
def test_09_id_echoed_verbatim_on_success_and_errors(raw: Raw, msg_id: object) -> None:
    assert raw.cmd({"execute": "query-name", "id": msg_id}) == \
        {"return": {"name": "testvm"}, "id": msg_id}
    assert raw.cmd({"execute": "query-name", "id": msg_id, "x": 1}) == \
        error("QMP input member 'x' is unexpected", id=msg_id)
    assert raw.cmd({"execute": "nope", "id": msg_id}) == \
        error("The command nope has not been found", "CommandNotFound", id=msg_id)
    assert raw.cmd({"execute": "query-name", "id": msg_id, "arguments": {"a": 1}}) == \
        error("Parameter 'a' is unexpected", id=msg_id)


def test_10_never_an_id_on_id_less_requests(raw: Raw) -> None:
    raw.send('{"execute":"query-status"}{"execute":"nope"}{"execute":"query-status",'
             '"arguments":{"x":1}}{"bad":1}')
    replies = [raw.read() for _ in range(4)]
    assert all("id" not in r for r in replies)
    assert [("return" in r) for r in replies] == [True, False, False, False]


def test_11_reply_shape(raw: Raw) -> None:
    ok = raw.cmd({"execute": "query-kvm", "id": 1})
    assert set(ok) == {"return", "id"}
    bad = raw.cmd({"execute": "query-kvm", "id": 1, "arguments": {"z": 0}})
    assert set(bad) == {"error", "id"} and set(bad["error"]) == {"class", "desc"}
    client = Raw(raw.sock.getpeername())
    assert client.cmd({"execute": "qmp_capabilities"}) == {"return": {}}  # no result: {}


def test_12_arguments_empty_or_missing_for_every_command(raw: Raw) -> None:
    names = [c["name"] for c in raw.cmd({"execute": "query-commands"})["return"]]
    for name in names:  # a bad argument is refused before the handler runs: no side effect
        assert raw.cmd({"execute": name, "arguments": {"bogus": 1}, "id": name}) in (
            error("Parameter 'bogus' is unexpected", id=name),
            *(error(f"Parameter '{m}' is missing", id=name) for m in _required(raw, name)))
    for name in names:  # read-only commands: {} and no arguments give the same answer
        if not name.startswith("query-") and name != "human-monitor-command":
            continue
        a = raw.cmd({"execute": name, "arguments": {}})
        b = raw.cmd({"execute": name})
        if name == "human-monitor-command":
            assert a == b == error("Parameter 'command-line' is missing")
        else:
            assert "return" in a and "return" in b, name


def _required(raw: Raw, command: str) -> list[str]:
    schema = {e["name"]: e for e in raw.cmd({"execute": "query-qmp-schema"})["return"]}
    args = schema[schema[command]["arg-type"]]
    return [m["name"] for m in args.get("members", []) if "default" not in m]


def test_13_pipelined_replies_in_arrival_order(raw: Raw) -> None:
    raw.send("".join(json.dumps({"execute": "query-status", "id": i}) for i in range(100)))
    assert [raw.read()["id"] for _ in range(100)] == list(range(100))


def test_14_event_format(own_daemon: Qmpd) -> None:
    client = Raw(own_daemon.path)
    client.negotiate()
    client.send({"execute": "quit"})
    assert client.line() == b'{"return": {}}\r\n'
    line = client.line()
    event = json.loads(line)
    assert line.startswith(b'{"timestamp": {"seconds": ') and line.endswith(b"}\r\n")
    assert list(event) == ["timestamp", "event", "data"]
    assert type(event["timestamp"]["seconds"]) is int
    assert 0 <= event["timestamp"]["microseconds"] < 1_000_000
    assert abs(event["timestamp"]["seconds"] - time.time()) < 30
    assert event["data"] == {"guest": False, "reason": "host-qmp-quit"}


def test_15_query_commands_lists_every_command(raw: Raw) -> None:
    names = [c["name"] for c in raw.cmd({"execute": "query-commands"})["return"]]
    schema = json.loads((REPO / "qmpd/schema/schema.json").read_text())
    expected = [d["command"] for d in schema["definitions"] if "command" in d]
    assert sorted(names) == sorted(expected)
    assert all(isinstance(n, str) for n in names)


def test_16_human_monitor_command_help_and_info(raw: Raw) -> None:
    def hmp(line: str) -> str:
        reply = raw.cmd({"execute": "human-monitor-command",
                         "arguments": {"command-line": line, "cpu-index": 0}})
        return str(reply["return"])
    for text in (hmp("help"), hmp("info")):
        assert text.endswith("\r\n")
        lines = text[:-2].split("\r\n")
        assert all(line.strip() and "\n" not in line for line in lines)
    # a help text of several lines continues on lines starting with a tab (QEMU's)
    assert [line.split()[0] for line in hmp("help")[:-2].split("\r\n")
            if not line.startswith("\t")] == \
        ["cont|c", "cpu", "help|?", "info", "migrate", "migrate_cancel", "migrate_incoming",
         "migrate_pause", "migrate_recover", "migrate_set_capability",
         "migrate_set_parameter", "migrate_start_postcopy", "quit|q", "stop|s",
         "system_reset", "x_colo_lost_heartbeat"]
    info = hmp("info")[:-2].split("\r\n")
    assert all(line.startswith("info ") and " -- " in line for line in info)
    assert {line.split()[1] for line in info} >= {"version", "status", "name"}
    assert hmp("info version") == "7.2.0 (qmpd 0.1.0)\r\n"
    assert hmp("info status") == "VM status: running\r\n"
    assert hmp("info name") == "testvm\r\n"


@pytest.mark.parametrize("command,check", [
    ("query-version", lambda r: isinstance(r, dict) and isinstance(r["package"], str)),
    ("query-target", lambda r: r == {"arch": "x86_64"}),
    ("query-kvm", lambda r: set(r) == {"enabled", "present"}
     and all(type(v) is bool for v in r.values())),
])
def test_17_probe_queries_types(raw: Raw, command: str, check: object) -> None:
    reply = raw.cmd({"execute": command, "id": "libvirt-1"})
    assert callable(check) and check(reply["return"])


@pytest.mark.parametrize("command", ["qom-list-types", "qom-list-properties",
                                     "device-list-properties", "query-machines",
                                     "query-command-line-options", "query-cpu-definitions"])
def test_17_unimplemented_probe_commands_answer_command_not_found(raw: Raw,
                                                                  command: str) -> None:
    assert raw.cmd({"execute": command, "id": "libvirt-9"}) == error(
        f"The command {command} has not been found", "CommandNotFound", id="libvirt-9")


def test_18_query_qmp_schema_lists_commands_and_events(raw: Raw) -> None:
    info = raw.cmd({"execute": "query-qmp-schema"})["return"]
    names = {e["name"]: e for e in info}
    assert len(names) == len(info)
    assert names["query-status"]["meta-type"] == "command"
    assert names["SHUTDOWN"]["meta-type"] == "event"
    enums = [e for e in info if e["meta-type"] == "enum"]
    assert enums and all(e["values"] == [m["name"] for m in e["members"]] for e in enums)


def _commands(raw: Raw) -> set[str]:
    return {c["name"] for c in raw.cmd({"execute": "query-commands"})["return"]}


def _reply_if_present(raw: Raw, name: str) -> dict[str, Any] | None:
    """``name``'s reply; None where the server has no such command (QEMU's refusal checked)."""
    reply = raw.cmd({"execute": name, "id": 1})
    if name in _commands(raw):
        return reply
    assert reply == error(f"The command {name} has not been found", "CommandNotFound", id=1)
    return None


def test_19_migration_capabilities(raw: Raw) -> None:
    reply = _reply_if_present(raw, "query-migrate-capabilities")
    if reply is None:
        return
    caps = {c["capability"]: c["state"] for c in reply["return"]}
    assert "events" in caps and "x-colo" in caps
    assert raw.cmd({"execute": "migrate-set-capabilities", "arguments": {
        "capabilities": [{"capability": "events", "state": True}]}}) == {"return": {}}


def test_20_query_migrate(raw: Raw) -> None:
    reply = _reply_if_present(raw, "query-migrate")
    if reply is None:
        return
    assert isinstance(reply["return"], dict)


def test_21_parse_errors_have_no_id_and_parsing_continues(raw: Raw) -> None:
    raw.send('{"execute": "query-name", "id": 1, }[1, 2]{"execute":"query-name","id":2}')
    assert raw.read() == error("JSON parse error, expecting value")
    assert raw.read() == error("QMP input must be a JSON object")
    assert raw.read() == {"return": {"name": "testvm"}, "id": 2}


def test_22_disconnects_do_not_disturb_others(daemon: Qmpd, raw: Raw) -> None:
    for _ in range(20):
        quitter = Raw(daemon.path)
        quitter.negotiate()
        quitter.send('{"execute":"query-qmp-schema"}' * 5 + '{"execute":"query-st')
        quitter.close()
    assert raw.cmd({"execute": "query-status", "id": 1})["id"] == 1
    fresh = Raw(daemon.path)
    assert fresh.cmd({"execute": "query-status"}) == error(
        "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")


def test_23_readme_documents_qmp_shell_l_hazard() -> None:
    readme = (REPO / "README.md").read_text()
    assert "qmp-shell -l" in readme and "unlink" in readme


def test_socket_file_mode_0600(daemon: Qmpd) -> None:
    assert Path(daemon.path).stat().st_mode & 0o777 == 0o600


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_is_bounded_and_does_not_stall_others(daemon: Qmpd, raw: Raw) -> None:
    before = _rss_kib(daemon.proc.pid)
    hog = Raw(daemon.path)
    hog.negotiate()
    hog.sock.setblocking(False)
    request = b'{"execute":"query-qmp-schema"}' * 100  # ~2 MB of replies per write
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            sent += hog.sock.send(request)
        except BlockingIOError:  # qmpd stopped reading: its queue and output are full
            time.sleep(0.01)
    assert sent < 200 * len(request)  # far fewer than 20,000 requests were accepted
    started = time.monotonic()
    assert raw.cmd({"execute": "query-name", "id": "other"})["id"] == "other"
    assert time.monotonic() - started < 1.0
    assert _rss_kib(daemon.proc.pid) - before < 64 * 1024
    hog.close()
