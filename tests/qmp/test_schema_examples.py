"""Every example exchange in schema.json, executed against one real qmpd.

Commands run in schema order on a fresh, OOB-negotiated connection each (not negotiated
if the example itself starts with ``qmp_capabilities``); ``quit`` runs
last. ``->`` is sent as written; each ``<-`` must match the next reply (or, for an
``event`` entry, the next such event) exactly, except ``"$any"``, which matches any
value. Events that arrive in between (STOP, RESUME, ...) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import REPO, Qmpd, Raw, start_qmpd

SCHEMA = json.loads((REPO / "qmpd/schema/schema.json").read_text())
COMMANDS = [d for d in SCHEMA["definitions"] if "command" in d]
ORDERED = sorted(COMMANDS, key=lambda d: d["command"] == "quit")


def matches(expected: Any, actual: Any) -> bool:
    if expected == "$any":
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and expected.keys() == actual.keys() and all(
            matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return type(expected) is type(actual) and expected == actual


@pytest.fixture(scope="module")
def example_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qmpd]:
    d = start_qmpd(Path(tmp_path_factory.mktemp("examples")))
    yield d
    if d.proc.poll() is None:
        d.stop()


def test_every_command_has_an_example() -> None:
    assert all(d["examples"] and all(ex for ex in d["examples"]) for d in COMMANDS)


@pytest.mark.parametrize("definition", ORDERED, ids=[d["command"] for d in ORDERED])
def test_schema_example(example_daemon: Qmpd, definition: dict[str, Any]) -> None:
    for exchange in definition["examples"]:
        client = Raw(example_daemon.path)
        if exchange[0].get("->", {}).get("execute") != "qmp_capabilities":
            client.negotiate(oob=True)
        for step in exchange:
            if "->" in step:
                client.send(json.dumps(step["->"]))
                continue
            expected = step["<-"]
            while True:
                actual = client.read()
                if "event" in actual and actual.get("event") != expected.get("event"):
                    continue  # an unrelated event in between
                break
            assert matches(expected, actual), f"expected {expected}, got {actual}"
        client.close()
    if definition["command"] == "quit":
        assert example_daemon.proc.wait(10) == 0
        assert not Path(example_daemon.path).exists()
