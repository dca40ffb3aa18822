"""QMP wire answers of QEMU 7.2, checked on qmpd and, where installed, on QEMU 7.2 itself.

Each probe is raw bytes and the exact replies QEMU 7.2 gives (read from a real
``qemu-system-x86_64 -machine none`` 7.2 and from its sources: json-lexer.c,
json-streamer.c, json-parser.c, util/unicode.c, qapi/qmp-dispatch.c, migration.c).
The same probes run against qmpd and against QEMU; both must give exactly the expected
replies, so qmpd and QEMU cannot differ. Without QEMU the QEMU half is skipped with a
reason (it fails instead when CI is set).

Covered: strings that are not valid (modified) UTF-8 or escape a noncharacter or a
lone surrogate; keywords and numbers ended by a non-ASCII byte; parse error texts cut
at QEMU's 1023 bytes; ``exec-oob`` of ``qmp_capabilities`` before and after
negotiation; the postcopy-only commands outside postcopy (``execute`` and
``exec-oob``); the 64 MiB token limit for a huge bare keyword and number with no newline
(replies, connection kept, bounded memory; these three run on qmpd only, see
``qmpd_server``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import Raw, error, start_qemu_72, start_qmpd, wait_listening

BAD_UTF8 = "JSON parse error, invalid UTF-8 sequence in string"
NOT_OBJECT = "QMP input must be a JSON object"
TOKEN_SIZE = "JSON token size limit exceeded"
PAUSE = "migrate-pause is currently only supported during postcopy-active state"
RECOVER = "Migrate recover can only be run when postcopy is paused."
START_POSTCOPY = "Enable postcopy with migrate_set_capability before the start of migration"


def _bad_cp(text: str) -> str:
    return f"JSON parse error, {text} is not a valid Unicode character"


# (bytes sent after negotiation with oob, then "\n" to resync; exact replies)
PROBES: list[tuple[bytes, list[dict[str, Any]]]] = [
    # raw bytes inside strings: modified UTF-8 (util/unicode.c mod_utf8_codepoint)
    (b'"\xc3\x28"', [error(BAD_UTF8)]),
    (b'"\xc3"', [error(BAD_UTF8)]),
    (b'"\x80"', [error(BAD_UTF8)]),
    (b'"\xe0\x80\x80"', [error(BAD_UTF8)]),                # overlong
    (b'"\xc1\xbf"', [error(BAD_UTF8)]),                    # overlong
    (b'"\xed\xa0\x80"', [error(BAD_UTF8)]),                # surrogate
    (b'"\xf4\x90\x80\x80"', [error(BAD_UTF8)]),            # beyond U+10FFFF
    (b'"\xf8\x88\x80\x80\x80"', [error(BAD_UTF8)]),        # 5-byte form
    (b'"\xef\xbf\xbf"', [error(BAD_UTF8)]),                # noncharacter U+FFFF
    (b'"\xef\xb7\x90"', [error(BAD_UTF8)]),                # noncharacter U+FDD0
    (b'"\xf0\x9f\xbf\xbe"', [error(BAD_UTF8)]),            # noncharacter U+1FFFE
    (b"'\xc3('", [error(BAD_UTF8)]),                       # single-quoted too
    (b'"\\u00e9\xc3"', [error(BAD_UTF8)]),                 # after an escape
    (b'{"execute": "a\xc3", "id": 1}', [error(BAD_UTF8)]),  # no id: it did not parse
    (b'"\xef\xb7\xb0"', [error(NOT_OBJECT)]),              # U+FDF0 is fine
    (b'"\xf0\x9f\x98\x80"', [error(NOT_OBJECT)]),
    (b'"a\xc0\x80b"', [error(NOT_OBJECT)]),                # C0 80 is U+0000
    (b'{"execute": "\xc0\x80"}', [error("The command \x00 has not been found",
                                        "CommandNotFound")]),
    (b'{"execute": "\xc3\xa9", "id": 2}', [error("The command \xe9 has not been found",
                                                 "CommandNotFound", id=2)]),
    # \u escapes (json-parser.c parse_string + mod_utf8_encode)
    (b'"\\uFFFF"', [error(_bad_cp("\\uFFFF"))]),
    (b'"\\uFDD0"', [error(_bad_cp("\\uFDD0"))]),
    (b'"\\uD800"', [error(_bad_cp("\\uD800"))]),
    (b'"\\uDC00"', [error(_bad_cp("\\uDC00"))]),
    (b'"\\uD83D\\u0041"', [error(_bad_cp("\\uD83D"))]),
    (b'"\\uD83D\\u"', [error(_bad_cp("\\uD83D"))]),
    (b'"\\uD83F\\uDFFF"', [error(_bad_cp("\\uD83F\\uDFFF"))]),
    (b'"\\u12"', [error(_bad_cp('\\u12"'))]),
    (b'"\\u12G4"', [error(_bad_cp("\\u12G4"))]),
    (b'"\\u1\xc3"', [error(_bad_cp('\\u1\ufffd"'))]),
    (b'"\\uD83D\\uDE00\\u0000"', [error(NOT_OBJECT)]),
    # stray bytes: one U+FFFD per invalid sequence, as QEMU's JSON writer shows them
    (b'"\xed\xa0\x80\x01', [error("JSON parse error, stray '\"\ufffd\x01'")]),
    (b'"\xc0\x80\xc3\xa9\xef\xbf\xbf\xe2\x82\x01',
     [error("JSON parse error, stray '\"\x00\xe9\ufffd\ufffd\x01'")]),
    (b"\xc3\xa9", [error("JSON parse error, stray '\ufffd'")]),
    (b'"\\\xfe', [error("JSON parse error, stray '\"\\\ufffd'")]),
    # a keyword or number ends at any byte that cannot continue it
    (b"tru\xc3", [error("JSON parse error, invalid keyword 'tru'"),
                  error("JSON parse error, stray '\ufffd'")]),
    (b"1\xc3\xa9", [error(NOT_OBJECT), error("JSON parse error, stray '\ufffd'")]),
    (b"-\xc3\xa9", [error("JSON parse error, stray '-\ufffd'")]),
    # parse_error's 1024-byte buffer
    (b"a" * 2000, [error("JSON parse error, invalid keyword '" + "a" * 1006)]),
    (b"1" * 5000, [error(NOT_OBJECT)]),
    # OOB (qapi/qmp-dispatch.c) and the postcopy-only commands (migration/migration.c)
    (b'{"exec-oob": "qmp_capabilities", "id": 3}',
     [error("The command qmp_capabilities does not support OOB", id=3)]),
    (b'{"execute": "qmp_capabilities", "id": 4}',
     [error("Capabilities negotiation is already complete, command ignored",
            "CommandNotFound", id=4)]),
    (b'{"exec-oob": "migrate-pause", "id": 5}', [error(PAUSE, id=5)]),
    (b'{"execute": "migrate-pause", "id": 6}', [error(PAUSE, id=6)]),
    (b'{"exec-oob": "migrate-recover", "arguments": {"uri": "tcp:127.0.0.1:4446"}, "id": 7}',
     [error(RECOVER, id=7)]),
    (b'{"execute": "migrate-recover", "arguments": {"uri": "unix:/tmp/x"}, "id": 8}',
     [error(RECOVER, id=8)]),
    (b'{"exec-oob": "migrate-recover", "id": 9}', [error("Parameter 'uri' is missing", id=9)]),
    (b'{"execute": "migrate-recover", "arguments": {"uri": 1}, "id": 10}',
     [error("Invalid parameter type for 'uri', expected: string", id=10)]),
    (b'{"execute": "migrate-start-postcopy", "id": 11}', [error(START_POSTCOPY, id=11)]),
    (b'{"exec-oob": "migrate-start-postcopy", "id": 12}',
     [error("The command migrate-start-postcopy does not support OOB", id=12)]),
    (b'{"execute": "migrate-pause", "arguments": {"x": 1}, "id": 13}',
     [error("Parameter 'x' is unexpected", id=13)]),
]

# (bytes sent before negotiation; exact replies)
PRE_NEGOTIATION: list[tuple[bytes, list[dict[str, Any]]]] = [
    (b'{"exec-oob": "qmp_capabilities", "id": 1}',
     [error("QMP input member 'exec-oob' is unexpected", id=1)]),
    (b'{"exec-oob": "migrate-pause", "id": 2}',
     [error("QMP input member 'exec-oob' is unexpected", id=2)]),
    (b'{"execute": "migrate-pause", "id": 3}',
     [error("Expecting capabilities negotiation with 'qmp_capabilities'",
            "CommandNotFound", id=3)]),
]


@pytest.fixture(scope="module", params=["qmpd", "qemu-7.2"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    """(monitor path, pid, kind) of a fresh qmpd, or of a real QEMU 7.2 where installed."""
    tmp = tmp_path_factory.mktemp("wire")
    if request.param == "qmpd":
        d = start_qmpd(tmp)
        wait_listening(d.path)
        yield d.path, d.proc.pid, "qmpd"
        assert d.stop() == 0
        return
    proc, path = start_qemu_72(tmp)
    try:
        yield path, proc.pid, "qemu"
    finally:
        proc.kill()
        proc.wait(10)


def _client(path: str, oob: bool = True) -> Raw:
    client = Raw(path)
    if oob:
        client.negotiate(oob=True)
    return client


@pytest.mark.parametrize("data,replies", PROBES, ids=[repr(p[0][:40]) for p in PROBES])
def test_probe(server: tuple[str, int, str], data: bytes, replies: list[dict[str, Any]]) -> None:
    with _client(server[0]) as client:
        client.send(data + b"\n")
        assert [client.read() for _ in replies] == replies
        assert client.cmd({"execute": "query-status", "id": "after"})["id"] == "after"


@pytest.mark.parametrize("data,replies", PRE_NEGOTIATION,
                         ids=[repr(p[0][:40]) for p in PRE_NEGOTIATION])
def test_probe_before_negotiation(server: tuple[str, int, str], data: bytes,
                                  replies: list[dict[str, Any]]) -> None:
    with _client(server[0], oob=False) as client:
        client.send(data + b"\n")
        assert [client.read() for _ in replies] == replies


def test_postcopy_commands_introspected_as_72(server: tuple[str, int, str]) -> None:
    with _client(server[0]) as client:
        schema = client.cmd({"execute": "query-qmp-schema"})["return"]
    by_name = {e["name"]: e for e in schema}
    seen = {}
    for name in ("qmp_capabilities", "migrate-pause", "migrate-recover",
                 "migrate-start-postcopy"):
        entry = by_name[name]
        members = [(m["name"], m["type"], "default" in m)
                   for m in by_name[entry["arg-type"]]["members"]
                   if m["type"] in ("str", "int", "bool")]
        seen[name] = (entry.get("allow-oob", False), members)
    assert seen == {"qmp_capabilities": (False, []),
                    "migrate-pause": (True, []),
                    "migrate-recover": (True, [("uri", "str", False)]),
                    "migrate-start-postcopy": (False, [])}


@pytest.fixture(scope="module")
def qmpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    """The 64 MiB probes run on qmpd only, by design (not a skip): QEMU 7.2 reads QMP
    input one byte per main-loop turn (~75 KB/s here), so 64 MiB would take 15 minutes a
    probe. Their expected replies come from json-lexer.c and json-streamer.c
    (MAX_TOKEN_SIZE 64 MiB, checked after each byte; MAX_TOKEN_COUNT, MAX_NESTING)."""
    d = start_qmpd(tmp_path_factory.mktemp("wire-big"))
    wait_listening(d.path)
    yield d.path, d.proc.pid, "qmpd"
    assert d.stop() == 0


def _mem_mib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) >> 10
    return out


@pytest.mark.parametrize("byte", [b"a", b"7"], ids=["keyword", "number"])
def test_huge_bare_token_without_newline(qmpd_server: tuple[str, int, str],
                                         byte: bytes) -> None:
    """256 MiB of one keyword/number: every 64 MiB + 1 bytes QEMU cuts the token with
    ``JSON token size limit exceeded`` and starts a new one (json-lexer.c); the
    connection stays usable; the 64 MiB - 3 left are ended by the newline."""
    path, pid, _ = qmpd_server
    with _client(path) as client:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _mem_mib(pid)["VmHWM"]
        block = byte * (1 << 20)
        for _ in range(256):
            client.sock.sendall(block)
        client.sock.settimeout(60)
        assert [client.read() for _ in range(3)] == [error(TOKEN_SIZE)] * 3
        hwm = _mem_mib(pid)["VmHWM"]
        # one token of at most 64 MiB is held, never the whole 256 MiB
        assert hwm - base < 100, (base, hwm)
        client.send(b"\n")
        rest = (256 << 20) - 3 * ((64 << 20) + 1)
        assert rest == (64 << 20) - 3
        if byte == b"a":
            expected = error("JSON parse error, invalid keyword '" + "a" * 1006)
        else:
            expected = error(NOT_OBJECT)  # 67108861 digits: a double (inf), not an object
        assert client.read() == expected
        assert client.cmd({"execute": "query-status", "id": 1})["id"] == 1


def test_huge_string_token_is_cut_and_parsing_resumes(
        qmpd_server: tuple[str, int, str]) -> None:
    with _client(qmpd_server[0]) as client:
        client.sock.sendall(b'{"execute": "query-status", "id": "' + b" " * (64 << 20)
                            + b'{"execute": "query-status", "id": "after"}')
        client.sock.settimeout(60)
        assert client.read() == error(TOKEN_SIZE)
        assert client.read()["id"] == "after"


def test_message_size_limit_sums_tokens(qmpd_server: tuple[str, int, str]) -> None:
    """Tokens each below the limit, 64 MiB together (json-streamer.c)."""
    with _client(qmpd_server[0]) as client:
        item = b'"' + b"x" * ((1 << 20) - 3) + b'",'
        client.sock.sendall(b"[" + item * 64 + b'"end"]{"execute": "query-status", "id": 1}')
        client.sock.settimeout(60)
        # the 64th string hits the limit; the rest is parsed afresh: ',' '"end"' ']'
        expecting = error("JSON parse error, expecting value")
        assert [client.read() for _ in range(4)] == \
            [error(TOKEN_SIZE), expecting, error(NOT_OBJECT), expecting]
        assert client.read()["id"] == 1

