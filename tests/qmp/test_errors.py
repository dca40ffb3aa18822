"""Every applicable error text of qemu-colo-facts.md §1.3-1.7: class and exact text.

Wire-level errors are checked against a real qmpd; argument-visitor errors for types
our own commands do not use (nested objects, sized integers, ...) are checked on the
real visitor compiled from a test schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import Qmpd, Raw, error

from qmpd.errors import ArgumentError
from qmpd.qmp.wire import qdict_order
from qmpd.schema import load

# -- §1.3 capability negotiation --------------------------------------------------------


def test_unknown_capability_is_an_enum_error(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    assert client.cmd({"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}) \
        == error("Parameter 'null' does not accept value 'bogus'")
    assert client.cmd({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}) \
        == error("Invalid parameter type for 'enable', expected: array")
    assert client.cmd({"execute": "qmp_capabilities", "arguments": {"enable": [1]}}) \
        == error("Invalid parameter type for 'enable[0]', expected: string")
    client.negotiate()  # still in negotiation mode after the errors


def test_negotiation_mode_rewrites_only_command_not_found(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    expecting = "Expecting capabilities negotiation with 'qmp_capabilities'"
    assert client.cmd({"execute": "quit", "id": "q"}) == error(expecting, "CommandNotFound",
                                                               id="q")
    assert client.cmd({"execute": "query-status", "bogus": 1}) == \
        error("QMP input member 'bogus' is unexpected")
    assert client.cmd({"exec-oob": "qmp_capabilities"}) == \
        error("QMP input member 'exec-oob' is unexpected")


# -- §1.4 request envelope ------------------------------------------------------------


@pytest.mark.parametrize("request_text,desc", [
    ('"text"', "QMP input must be a JSON object"),
    ("42 ", "QMP input must be a JSON object"),  # a number ends at the next byte
    ("[{}]", "QMP input must be a JSON object"),
    ("null\n", "QMP input must be a JSON object"),
    ('{"execute": 1}', "QMP input member 'execute' must be a string"),
    ('{"execute": null}', "QMP input member 'execute' must be a string"),
    ('{"execute": "query-status", "arguments": []}',
     "QMP input member 'arguments' must be an object"),
    ('{"execute": "query-status", "arguments": null}',
     "QMP input member 'arguments' must be an object"),
    ('{"execute": "query-status", "extra": 1}', "QMP input member 'extra' is unexpected"),
    ('{"exec-oob": "query-status"}', "QMP input member 'exec-oob' is unexpected"),
    ("{}", "QMP input lacks member 'execute'"),
    ('{"arguments": {}}', "QMP input lacks member 'execute'"),
])
def test_envelope_errors(raw: Raw, request_text: str, desc: str) -> None:
    assert raw.cmd(request_text) == error(desc)


def test_envelope_errors_with_id(raw: Raw) -> None:
    assert raw.cmd('{"id": 5}') == error("QMP input lacks member 'execute'", id=5)
    assert raw.cmd('{"execute": 5, "id": "x"}') == \
        error("QMP input member 'execute' must be a string", id="x")


def test_first_bad_member_in_qdict_order(raw: Raw) -> None:
    # QEMU walks the request in QDict hash order and reports the first problem found
    assert qdict_order(("major", "minor", "micro")) == ("micro", "minor", "major")
    assert qdict_order(("execute", "bogus")) == ("bogus", "execute")
    assert raw.cmd('{"execute": 1, "bogus": 2}') == error("QMP input member 'bogus' is unexpected")
    assert raw.cmd('{"bogus": 2, "execute": 1}') == error("QMP input member 'bogus' is unexpected")


def test_oob_envelope_errors(daemon: Qmpd) -> None:
    client = Raw(daemon.path)
    client.negotiate(oob=True)
    assert client.cmd({"exec-oob": 3, "id": 1}) == \
        error("QMP input member 'exec-oob' must be a string", id=1)
    order = qdict_order(("execute", "exec-oob"))
    clash = f"QMP input member '{order[1]}' clashes with '{order[0]}'"
    assert client.cmd({"execute": "query-status", "exec-oob": "query-status", "id": 2}) == \
        error(clash, id=2)
    assert client.cmd({"exec-oob": "query-status", "id": 3}) == \
        error("The command query-status does not support OOB", id=3)
    assert client.cmd({"exec-oob": "nonexistent", "id": 4}) == \
        error("The command nonexistent has not been found", "CommandNotFound", id=4)


def test_unknown_command(raw: Raw) -> None:
    assert raw.cmd({"execute": "x-nope", "id": None}) == \
        error("The command x-nope has not been found", "CommandNotFound", id=None)


# -- §1.6 malformed JSON --------------------------------------------------------------


@pytest.mark.parametrize("data,descs", [
    (b"}", ["JSON parse error, expecting value"]),
    (b'{1: 2}', ["JSON parse error, key is not a string in object"]),
    (b'{"a" 1}', ["JSON parse error, missing : in object pair"]),
    (b'{"a": 1, "a": 2}', ["JSON parse error, duplicate key"]),
    (b'{"a": 1 "b": 2}', ["JSON parse error, expected separator in dict"]),
    (b'{"a": [1 2]}', ["JSON parse error, expected separator in list"]),
    (b'{"a": foo}', ["JSON parse error, invalid keyword 'foo'"]),
    (b'{"a": "\\x"}', ["JSON parse error, invalid escape sequence in string"]),
    (b'{"a": "\\u12"}', ['JSON parse error, \\u12" is not a valid Unicode character']),
    (b'{"a": "\\uDC00"}', ["JSON parse error, \\uDC00 is not a valid Unicode character"]),
    (b'{"a": "\xc3\x28"}', ["JSON parse error, invalid UTF-8 sequence in string"]),
    (b"\x0c", ["JSON parse error, stray '\x0c'"]),
    (b"\xff", ["JSON parse error, stray '\ufffd'"]),
    (b"Q", ["JSON parse error, stray 'Q'"]),
    (b'{"a": 01}', ["JSON parse error, stray '01'", "JSON parse error, expecting value"]),
    (b'{"a": -x}', ["JSON parse error, stray '-x'", "JSON parse error, expecting value"]),
    (b'{"a": NaN}', ["JSON parse error, stray 'N'", "JSON parse error, expecting value"]),
    (b'{"a": "b\x01"}\x01', ["JSON parse error, stray '\"b\x01'",
                             "JSON parse error, expecting value",  # the '}' after recovery
                             "JSON parse error, stray '\x01'"]),
])
def test_parse_errors(raw: Raw, data: bytes, descs: list[str]) -> None:
    raw.send(data + b'{"execute": "query-status", "id": "after"}')
    replies = [raw.read() for _ in descs]
    assert replies == [error(d) for d in descs]
    assert raw.read()["id"] == "after"


def test_parse_error_escapes_are_qemu_style(raw: Raw) -> None:
    raw.send(b"\xff")
    assert raw.line() == \
        b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\r\n'


def test_single_quotes_are_accepted(raw: Raw) -> None:
    assert raw.cmd(b"{'execute': 'query-name', 'id': 'it\\'s'}") == \
        {"return": {"name": "testvm"}, "id": "it's"}


def test_nesting_depth_limit(raw: Raw) -> None:
    raw.send(b"[" * 1025 + b"\x01" + b'{"execute": "query-status", "id": 1}')
    assert raw.read() == error("JSON nesting depth limit exceeded")
    assert raw.read() == error("JSON parse error, stray '\x01'")
    assert raw.read()["id"] == 1


def test_nesting_at_limit_is_parsed(raw: Raw) -> None:
    raw.send(b'{"execute": "query-status", "id": ' + b"[" * 1023 + b"]" * 1023 + b"}")
    line = raw.line()  # too deep for the test's own json module: compare the text
    assert line == b'{"return": {"status": "running", "singlestep": false, "running": true}, ' \
        b'"id": ' + b"[" * 1023 + b"]" * 1023 + b"}\r\n"


# -- §1.7 argument visitor (real schema) ----------------------------------------------


def test_argument_errors_on_real_commands(raw: Raw) -> None:
    hmp: dict[str, Any] = {"execute": "human-monitor-command"}
    assert raw.cmd({**hmp, "arguments": {"cpu-index": 0}}) == \
        error("Parameter 'command-line' is missing")
    assert raw.cmd({**hmp, "arguments": {"command-line": "info", "x": 1}}) == \
        error("Parameter 'x' is unexpected")
    assert raw.cmd({**hmp, "arguments": {"x": 1}}) == error("Parameter 'command-line' is missing")
    assert raw.cmd({**hmp, "arguments": {"command-line": ["info"]}}) == \
        error("Invalid parameter type for 'command-line', expected: string")
    assert raw.cmd({**hmp, "arguments": {"command-line": "info", "cpu-index": "0"}}) == \
        error("Invalid parameter type for 'cpu-index', expected: integer")
    assert raw.cmd({**hmp, "arguments": {"command-line": "info", "cpu-index": 1.5}}) == \
        error("Invalid parameter type for 'cpu-index', expected: integer")
    assert raw.cmd({**hmp, "arguments": {"command-line": "info", "cpu-index": 1 << 63}}) == \
        error("Invalid parameter type for 'cpu-index', expected: integer")
    assert raw.cmd({**hmp, "arguments": {"command-line": "info", "cpu-index": 3}}) == \
        error("Parameter 'cpu-index' expects a CPU number")


TEST_SCHEMA: dict[str, Any] = {"qmpd-schema": 1, "doc": "test", "definitions": [
    {"command": "t", "doc": "d", "since": "1", "examples": [[]], "data": {
        "s": "Inner", "*u32": "uint32", "*u64": "uint64", "*i8": "int8", "*b": "bool",
        "*n": "number", "*e": "Color", "*le": ["Color"], "*lo": ["Inner"], "*sz": "size",
        "*a": "any", "*nul": "null", "*u": "Shape"}},
    {"struct": "Inner", "doc": "d", "since": "1", "data": {"x": "int", "*deep": "Inner"}},
    {"enum": "Color", "doc": "d", "since": "1", "data": ["red", "green"]},
    {"enum": "Kind", "doc": "d", "since": "1", "data": ["circle", "square"]},
    {"struct": "Circle", "doc": "d", "since": "1", "data": {"r": "int"}},
    {"struct": "Square", "doc": "d", "since": "1", "data": {"side": "int"}},
    {"union": "Shape", "doc": "d", "since": "1", "base": {"kind": "Kind"},
     "discriminator": "kind", "data": {"circle": "Circle", "square": "Square"}},
]}


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = Path(tmp_path_factory.mktemp("schema")) / "schema.json"
    path.write_text(json.dumps(TEST_SCHEMA))
    return load(path).arg_checkers["t"]


OK = {"s": {"x": 1}}


@pytest.mark.parametrize("args,desc", [
    ({}, "Parameter 's' is missing"),
    ({"zz": 1}, "Parameter 's' is missing"),
    ({"s": {}}, "Parameter 's.x' is missing"),
    ({"s": {"x": 1, "deep": {"x": 2, "deep": {}}}}, "Parameter 's.deep.deep.x' is missing"),
    ({"s": {"x": 1, "y": 2}}, "Parameter 's.y' is unexpected"),
    ({**OK, "zz": 1}, "Parameter 'zz' is unexpected"),
    ({"s": 1}, "Invalid parameter type for 's', expected: object"),
    ({"s": {"x": "1"}}, "Invalid parameter type for 's.x', expected: integer"),
    ({**OK, "b": 1}, "Invalid parameter type for 'b', expected: boolean"),
    ({**OK, "n": "1"}, "Invalid parameter type for 'n', expected: number"),
    ({**OK, "le": "red"}, "Invalid parameter type for 'le', expected: array"),
    ({**OK, "e": 1}, "Invalid parameter type for 'e', expected: string"),
    ({**OK, "nul": 0}, "Invalid parameter type for 'nul', expected: null"),
    ({**OK, "e": "blue"}, "Parameter 'e' does not accept value 'blue'"),
    ({**OK, "le": ["red", "blue"]}, "Parameter 'null' does not accept value 'blue'"),
    ({**OK, "lo": [{"x": 1}, {"x": True}]},
     "Invalid parameter type for 'lo[1].x', expected: integer"),
    ({**OK, "lo": [{"x": 1}, {}]}, "Parameter 'lo[1].x' is missing"),
    ({**OK, "u32": 1 << 32}, "Parameter 'u32' expects uint32_t"),
    ({**OK, "u32": -1}, "Parameter 'u32' expects uint32_t"),
    ({**OK, "i8": 128}, "Parameter 'i8' expects int8_t"),
    ({**OK, "i8": -129}, "Parameter 'i8' expects int8_t"),
    ({**OK, "u64": "1"}, "Parameter 'u64' expects uint64"),
    ({**OK, "u64": 1.0}, "Parameter 'u64' expects uint64"),
    ({**OK, "sz": -1}, "Invalid parameter type for 'sz', expected: size"),
    ({**OK, "u": {"r": 1}}, "Parameter 'u.kind' is missing"),
    ({**OK, "u": {"kind": "oval"}}, "Parameter 'kind' does not accept value 'oval'"),
    ({**OK, "u": {"kind": "circle"}}, "Parameter 'u.r' is missing"),
    ({**OK, "u": {"kind": "circle", "r": 1, "side": 2}}, "Parameter 'u.side' is unexpected"),
])
def test_visitor_errors(check: Any, args: dict[str, Any], desc: str) -> None:
    with pytest.raises(ArgumentError) as info:
        check(args)
    assert str(info.value) == desc


def test_visitor_accepts_and_normalises(check: Any) -> None:
    args = {"s": {"x": -5, "deep": {"x": 1}}, "u32": (1 << 32) - 1, "u64": -1, "i8": -128,
            "b": False, "n": 2, "e": "green", "le": [], "lo": [{"x": 0}], "sz": 0,
            "a": {"any": [None]}, "nul": None, "u": {"kind": "square", "side": 3}}
    out = check(args)
    assert out["u64"] == (1 << 64) - 1  # QEMU accepts negative uint64 modulo 2^64
    assert out["n"] == 2.0 and type(out["n"]) is float
    assert {k: v for k, v in out.items() if k not in ("u64", "n")} == \
        {k: v for k, v in args.items() if k not in ("u64", "n")}


def test_numbers_and_objects_are_written_as_qemu_writes_them(raw: Raw) -> None:
    raw.send('{"execute": "query-name", "id": {"b": 2.0, "a": [0.1, 1e20, -0.0, 5]}}')
    assert raw.line() == b'{"return": {"name": "testvm"}, "id": {"a": ' \
        b'[0.10000000000000001, 1e+20, -0, 5], "b": 2}}\r\n'
    raw.send('{"execute": "query-name", "id": "\\u00e9\\u007f\\t/"}')
    assert raw.line() == b'{"return": {"name": "testvm"}, "id": "\\u00E9\\u007F\\t/"}\r\n'
