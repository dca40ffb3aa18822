"""Command gates as a specification: every gated command, refused in every state it must be.

As Firecracker's ``test_preboot_disallowed`` tries every out-of-phase action, this walks
each gated command through every run state and COLO mode: the specification below says
which refuse it and with which of QEMU 7.2's texts; the registry's declarations must
say exactly the same, and the real dispatcher (with a real VM stack) must answer so.
The states a qmpd reaches without a COLO pair are also checked over QMP on a real qmpd
(in COLO: tests/e2e/test_colo.py; ``postmigrate``: tests/migration/test_e2e_qmp.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from qmp_helpers import NegotiatedSession, Raw, error, start_qmpd, vm_context

from qmpd.colo.state import ColoMode
from qmpd.commands import load_handlers
from qmpd.commands.context import CommandContext
from qmpd.commands.dispatcher import CommandDispatcher
from qmpd.commands.gating import refusal
from qmpd.machine.runstate import RunState, RunStateHolder
from qmpd.schema import load as load_schema

_R = RunState
IN_COLO = "Cannot {} the VM while it is in COLO mode; use x-colo-lost-heartbeat to leave COLO first"
#: arguments that pass the argument check, so that only the gate can refuse
ARGS: dict[str, dict[str, Any]] = {"migrate": {"uri": "unix:/nonexistent/m.sock"},
                                   "migrate-incoming": {"uri": "unix:/nonexistent/m.sock"}}


def spec(command: str, state: RunState, mode: ColoMode) -> str | None:
    """The specification: QEMU 7.2's refusal text, or None where the command may run."""
    in_colo = mode is not ColoMode.NONE
    if command in ("stop", "system_reset"):
        return IN_COLO.format(command.replace("system_", "")) if in_colo else None
    if command == "cont":
        if in_colo:
            return IN_COLO.format("continue")
        if state in (_R.INTERNAL_ERROR, _R.SHUTDOWN, _R.GUEST_PANICKED):
            return "Resetting the Virtual Machine is required"
        return "Migration is not finalized yet" if state is _R.FINISH_MIGRATE else None
    if command == "migrate":
        if state is _R.INMIGRATE:
            return "Guest is waiting for an incoming migration"
        if state is _R.POSTMIGRATE:
            return "Can't migrate the vm that was paused due to previous migration"
        return None
    if command == "migrate-incoming":
        if mode is ColoMode.SECONDARY:
            return "The incoming migration has already been started"
        return None if state is _R.INMIGRATE else \
            "'-incoming' was not specified on the command line"
    if command == "x-colo-lost-heartbeat":
        return "The feature 'colo' is not enabled" if not in_colo else None
    raise AssertionError(f"{command} has no specification")


GATED = ["stop", "cont", "system_reset", "migrate", "migrate-incoming",
         "x-colo-lost-heartbeat"]
CASES = [(state, mode) for state in RunState for mode in ColoMode]


def test_the_registry_gates_exactly_the_specified_commands() -> None:
    registry = load_handlers()
    assert sorted(n for n, h in registry.handlers.items() if h.refuse_in) == sorted(GATED)


@pytest.mark.parametrize("command", GATED)
def test_declarations_match_the_specification_in_every_state(command: str) -> None:
    gate = load_handlers().handlers[command].refuse_in
    for state, mode in CASES:
        assert refusal(gate, state, mode) == spec(command, state, mode), (state, mode)


@pytest_asyncio.fixture
async def ctx() -> AsyncIterator[CommandContext]:
    async with vm_context(load_schema()) as context:
        try:
            yield context
        finally:
            _put_in_mode(context, ColoMode.NONE)


def _put_in_mode(ctx: CommandContext, mode: ColoMode) -> None:
    """Move the COLO manager's own mode machine (the one place the mode lives) to
    ``mode`` by legal edges, without a peer: only the gate looks at it here."""
    machine = ctx.colo._mode
    if machine.state is not mode and machine.state is not ColoMode.NONE:
        machine.set(ColoMode.NONE)
    machine.set(mode)


async def test_the_dispatcher_refuses_in_every_specified_state(ctx: CommandContext) -> None:
    """Every refusal of the specification, through the real dispatcher: QEMU's class and
    text, and the refused command changes nothing (no event, same state)."""
    emitted: list[str] = []
    ctx.events.subscribe(lambda ev: emitted.append(ev.name))
    refused = 0
    for state, mode in CASES:
        # A node in `state` (the holder is the one place run states live) and `mode`.
        node = dataclasses.replace(ctx, runstate=RunStateHolder(state))
        _put_in_mode(ctx, mode)
        dispatcher = CommandDispatcher(node, load_handlers(), node.schema)
        for command in GATED:
            text = spec(command, state, mode)
            if text is None:
                continue
            refused += 1
            outcome = dispatcher.dispatch(NegotiatedSession(), command,
                                          ARGS.get(command, {}), False)
            assert outcome == ("GenericError", text), (command, state, mode)
            assert node.runstate.state is state and ctx.colo.mode is mode
    assert emitted == [] and ctx.migration.query() == {}
    assert refused > 100


def test_refusals_over_qmp_in_the_states_a_lone_qmpd_reaches(tmp_path: Any) -> None:
    """prelaunch (-S), running, paused, inmigrate (-incoming defer), and COLO mode none."""
    def cmd(client: Raw, request: dict[str, Any]) -> dict[str, Any]:
        client.send(request)
        while "event" in (reply := client.read()):
            pass
        return reply

    def refused(client: Raw, command: str, state: str) -> None:
        assert cmd(client, {"execute": "query-status"})["return"]["status"] == state
        text = spec(command, RunState(state), ColoMode.NONE)
        assert text is not None
        args = ARGS.get(command)
        request = {"execute": command, **({"arguments": args} if args else {})}
        assert cmd(client, request) == error(text), (command, state)

    lone = start_qmpd(tmp_path, "-S", "-m", "32M", name="lone.sock")
    incoming = start_qmpd(tmp_path, "-incoming", "defer", "-m", "32M", name="in.sock")
    try:
        client = Raw(lone.path)
        client.negotiate()
        for state in ("prelaunch", "running", "paused"):
            if state == "running":
                assert cmd(client, {"execute": "cont"}) == {"return": {}}
            if state == "paused":
                assert cmd(client, {"execute": "stop"}) == {"return": {}}
            refused(client, "migrate-incoming", state)
            refused(client, "x-colo-lost-heartbeat", state)
        client = Raw(incoming.path)
        client.negotiate()
        refused(client, "migrate", "inmigrate")
        refused(client, "x-colo-lost-heartbeat", "inmigrate")
        assert cmd(client, {"execute": "query-migrate"}) == {"return": {}}
    finally:
        assert lone.stop() == 0 and incoming.stop() == 0
