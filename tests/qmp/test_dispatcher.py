"""The dispatcher's start-up check, gate and error mapping, on a small real schema.

The context is a real one: a VM stack (machine, migration, COLO) started paused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from qmp_helpers import NegotiatedSession, vm_context

from qmpd.commands.context import CommandContext
from qmpd.commands.dispatcher import CommandDispatcher
from qmpd.commands.errors import QMPError
from qmpd.commands.gating import in_colo, in_runstates
from qmpd.commands.registry import CommandRegistry
from qmpd.errors import MachineError, NotFoundError
from qmpd.events import EventBus
from qmpd.machine.runstate import RunState
from qmpd.schema import Schema, SchemaError, load

EXAMPLE = [[{"->": {"execute": "x"}}, {"<-": {"return": {}}}]]
SCHEMA: dict[str, Any] = {"qmpd-schema": 1, "doc": "t", "definitions": [
    {"command": "get", "doc": "d", "since": "1", "returns": "Info", "examples": EXAMPLE,
     "data": {"*which": "int"}},
    {"command": "act", "doc": "d", "since": "1", "examples": EXAMPLE,
     "data": {"how-much": "uint8"}},
    {"command": "x-wait", "doc": "d", "since": "1", "features": ["unstable"],
     "examples": EXAMPLE},
    {"struct": "Info", "doc": "d", "since": "1", "data": {"n": "int", "*s": "str"}},
    {"event": "DONE", "doc": "d", "since": "1", "data": {"n": "int"}},
]}


@pytest.fixture
def schema(tmp_path: Path) -> Schema:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return load(path)


@pytest_asyncio.fixture
async def ctx(schema: Schema) -> AsyncIterator[CommandContext]:
    async with vm_context(schema) as context:
        yield context


def _registry(get_result: Any, act_error: Exception | None = None) -> CommandRegistry:
    registry = CommandRegistry()

    @registry.command("get")
    def get(ctx: CommandContext, which: int | None = None) -> Any:
        return get_result

    @registry.command("act")
    def act(ctx: CommandContext, how_much: int) -> None:
        if act_error is not None:
            raise act_error

    @registry.command("x-wait")
    async def wait(ctx: CommandContext) -> None:
        await asyncio.sleep(0)
    return registry


def test_refuses_schema_and_handlers_that_disagree(schema: Schema, ctx: CommandContext
                                                   ) -> None:
    registry = _registry({"n": 1})
    del registry.handlers["act"]
    registry.command("extra")(lambda ctx: None)
    with pytest.raises(SchemaError) as info:
        CommandDispatcher(ctx, registry, schema)
    assert str(info.value) == ("schema.json and command handlers disagree: no handler for "
                               "['act'], no schema entry for ['extra']")


def test_duplicate_registration_is_refused() -> None:
    registry = _registry({"n": 1})
    with pytest.raises(ValueError, match="registered twice"):
        registry.command("get")(lambda ctx: None)


def test_x_names_need_unstable(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SCHEMA))
    bad["definitions"][2]["features"] = []
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match="x- names need feature 'unstable'"):
        load(path)


@pytest.mark.parametrize("result,outcome", [
    ({"n": 1}, (None, {"n": 1})),
    ({"n": 1, "s": "x"}, (None, {"n": 1, "s": "x"})),
    ({"n": "1"}, ("GenericError", "internal error: get returned a bad value")),
    ({"n": 1, "extra": 2}, ("GenericError", "internal error: get returned a bad value")),
    ([], ("GenericError", "internal error: get returned a bad value")),
])
def test_return_values_are_validated(schema: Schema, ctx: CommandContext, result: Any,
                                     outcome: tuple[Any, Any]) -> None:
    dispatcher = CommandDispatcher(ctx, _registry(result), schema)
    assert dispatcher.dispatch(NegotiatedSession(), "get", {}, False) == outcome


@pytest.mark.parametrize("err,outcome", [
    (QMPError("Device 'x' not found", "DeviceNotFound"), ("DeviceNotFound",
                                                          "Device 'x' not found")),
    (QMPError("Capability oob not available"), ("GenericError",
                                                "Capability oob not available")),
    (NotFoundError("Instance not found"), ("DeviceNotFound", "Instance not found")),
    (MachineError("KVM_RUN failed"), ("GenericError", "KVM_RUN failed")),
    (ZeroDivisionError("division by zero"), ("GenericError",
                                             "internal error: division by zero")),
])
def test_errors_are_mapped(schema: Schema, ctx: CommandContext, err: Exception,
                           outcome: tuple[str, str]) -> None:
    dispatcher = CommandDispatcher(ctx, _registry({"n": 1}, err), schema)
    assert dispatcher.dispatch(NegotiatedSession(), "act", {"how-much": 3}, False) == outcome
    assert dispatcher.dispatch(NegotiatedSession(), "act", {"how-much": 300}, False) == \
        ("GenericError", "Parameter 'how-much' expects uint8_t")


def test_gate_is_checked_after_the_arguments_and_before_the_handler(
        schema: Schema, ctx: CommandContext) -> None:
    registry = _registry({"n": 1}, ZeroDivisionError("handler ran"))
    act = registry.handlers["act"]
    registry.handlers["act"] = type(act)(act.name, act.fn, act.is_async, act.needs_session, (
        in_colo("not in COLO"),
        in_runstates("first matching rule", RunState.PRELAUNCH, RunState.PAUSED),
        in_runstates("second matching rule", RunState.PRELAUNCH)))
    dispatcher = CommandDispatcher(ctx, registry, schema)
    assert ctx.runstate.state is RunState.PRELAUNCH
    assert dispatcher.dispatch(NegotiatedSession(), "act", {"how-much": 300}, False) == \
        ("GenericError", "Parameter 'how-much' expects uint8_t")
    assert dispatcher.dispatch(NegotiatedSession(), "act", {"how-much": 3}, False) == \
        ("GenericError", "first matching rule")
    ctx.vm.start()
    assert dispatcher.dispatch(NegotiatedSession(), "act", {"how-much": 3}, False) == \
        ("GenericError", "internal error: handler ran")


async def test_async_handlers_and_oob_check(schema: Schema, ctx: CommandContext) -> None:
    dispatcher = CommandDispatcher(ctx, _registry({"n": 1}), schema)
    pending = dispatcher.dispatch(NegotiatedSession(), "x-wait", {}, False)
    assert not isinstance(pending, tuple)
    assert await pending == (None, {})
    assert dispatcher.dispatch(NegotiatedSession(), "get", {}, True) == \
        ("GenericError", "The command get does not support OOB")


def test_events_are_validated(schema: Schema) -> None:
    bus = EventBus(schema.validate_event, clock=lambda: 12.5)
    seen: list[Any] = []
    bus.subscribe(seen.append)
    bus.emit("DONE", {"n": 1})
    assert [(e.name, e.data, e.seconds, e.microseconds) for e in seen] == \
        [("DONE", {"n": 1}, 12, 500000)]
    with pytest.raises(SchemaError, match=r"event NOPE is not in schema\.json"):
        bus.emit("NOPE")
    with pytest.raises(SchemaError, match="event DONE: bad data"):
        bus.emit("DONE", {"n": "1"})
    assert len(seen) == 1


async def test_hmp_info_table_is_extensible(ctx: CommandContext) -> None:
    from qmpd.commands.hmp import HMP_INFO, hmp_info, run_hmp

    @hmp_info("qmpd-test", "show a test line")
    async def info_test(ctx: CommandContext, args: str) -> str:
        return f"args={args!r}\nsecond line\n"
    try:
        assert await run_hmp(ctx, "info qmpd-test  a b ") == "args='a b'\r\nsecond line\r\n"
        assert "info qmpd-test  -- show a test line\r\n" in await run_hmp(ctx, "info")
        assert await run_hmp(ctx, "info nothing") == "unknown command: 'info nothing'\r\n"
    finally:
        del HMP_INFO["qmpd-test"]
