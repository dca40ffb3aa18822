"""``human-monitor-command``: a small HMP with an extensible ``info`` table.

Users: ``qmp-shell -H`` (parses ``help`` and ``info`` at start-up) and scripts.
Other modules add ``info`` subcommands with :func:`hmp_info` and top-level HMP
commands with :func:`hmp_command`::

    @hmp_info("migrate", "show migration status")
    def info_migrate(ctx: CommandContext, args: str) -> str:
        return "Migration status: active\\n"

    @hmp_command("migrate_incoming", "uri", "...", args_type="uri:s")
    async def hmp_migrate_incoming(ctx: CommandContext, args: dict[str, Any]) -> str:
        await qmp_call(ctx, "migrate-incoming", uri=args["uri"])
        return ""

A top-level command's line is parsed against its ``args_type`` (QEMU's notation,
:mod:`qmpd.commands.hmp_args`) as QEMU 7.2's monitor does, with its texts (``NAME:
string expected``, ``Expected 'on' or 'off'``, ``extraneous characters``, each followed
by ``Try "help CMD" for more information``). :func:`qmp_call` runs a QMP command's
handler behind its gate; a failure is printed as QEMU's ``hmp_handle_error`` does
(``Error: TEXT``).

Output lines use ``\\n``; they become ``\\r\\n`` on the way out, as QEMU's monitor
does. HMP errors are part of the output text (QEMU prints them into the monitor),
so the QMP command itself succeeds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qmpd.commands.base import version_info
from qmpd.commands.context import CommandContext
from qmpd.commands.errors import QMPError
from qmpd.commands.gating import refusal
from qmpd.commands.hmp_args import HmpArgError, parse_args
from qmpd.commands.registry import REGISTRY, command
from qmpd.errors import QmpdError

#: (ctx, parsed arguments -- or the rest of the line for ``info`` subcommands)
#: -> output text (or an awaitable of it)
HmpFn = Callable[[CommandContext, Any], Any]


@dataclass(frozen=True)
class HmpCommand:
    """One HMP command or ``info`` subcommand, with its help line parts."""

    names: str    # "help|?" (first is the name, rest aliases)
    params: str   # "[cmd]"
    help: str
    fn: HmpFn
    args_type: str = ""


HMP_COMMANDS: dict[str, HmpCommand] = {}
HMP_INFO: dict[str, HmpCommand] = {}


def hmp_command(names: str, params: str, help_text: str,
                args_type: str = "") -> Callable[[HmpFn], HmpFn]:
    """Register a top-level HMP command (``names`` like ``"quit|q"``); ``fn`` gets
    the arguments parsed against ``args_type`` as a dict."""
    def register(fn: HmpFn) -> HmpFn:
        HMP_COMMANDS[names.split("|")[0]] = HmpCommand(names, params, help_text, fn,
                                                       args_type)
        return fn
    return register


async def qmp_call(ctx: CommandContext, name: str, **kwargs: Any) -> Any:
    """Run QMP command ``name``'s handler (behind its gate), as QEMU's HMP calls
    ``qmp_*``; arguments are already typed by the HMP parser.

    :raise QmpdError: the command's refusal or failure.
    """
    handler = REGISTRY.handlers[name]
    text = refusal(handler.refuse_in, ctx.runstate.state, ctx.colo.mode)
    if text is not None:
        raise QMPError(text)
    result = handler.fn(ctx, **kwargs)
    return await result if inspect.isawaitable(result) else result


def error_text(err: QmpdError) -> str:
    """QEMU ``hmp_handle_error``: ``Error: TEXT``."""
    return f"Error: {err.desc if isinstance(err, QMPError) else err}\n"


def hmp_info(name: str, help_text: str, params: str = "") -> Callable[[HmpFn], HmpFn]:
    """Register ``info NAME``."""
    def register(fn: HmpFn) -> HmpFn:
        HMP_INFO[name] = HmpCommand(name, params, help_text, fn)
        return fn
    return register


def _lookup(table: dict[str, HmpCommand], word: str) -> HmpCommand | None:
    for cmd in table.values():
        if word in cmd.names.split("|"):
            return cmd
    return None


def _dump(table: dict[str, HmpCommand], prefix: str) -> str:
    return "".join(f"{prefix}{c.names} {c.params} -- {c.help}\n"
                   for c in sorted(table.values(), key=lambda c: c.names))


async def run_hmp(ctx: CommandContext, line: str) -> str:
    """Execute one HMP command line; returns its output with ``\\r\\n`` line ends."""
    word, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if not word:
        return ""
    cmd = _lookup(HMP_COMMANDS, word)
    if cmd is None:
        text = f"unknown command: '{word}'\n"
    else:
        text = await _run(ctx, cmd, word, rest)
    return str(text).replace("\r\n", "\n").replace("\n", "\r\n")


async def _run(ctx: CommandContext, cmd: HmpCommand, word: str, rest: str) -> str:
    try:
        args = parse_args(cmd.names, cmd.args_type, rest)
    except HmpArgError as err:
        return f'{err}\nTry "help {word}" for more information\n'
    try:
        result = cmd.fn(ctx, args)
        return str(await result if inspect.isawaitable(result) else result)
    except QmpdError as err:
        return error_text(err)


@command("human-monitor-command")
async def human_monitor_command(ctx: CommandContext, command_line: str,
                                cpu_index: int | None = None) -> str:
    """Run an HMP command line."""
    if cpu_index is not None and cpu_index != 0:
        raise QMPError("Parameter 'cpu-index' expects a CPU number")
    return await run_hmp(ctx, command_line)


@hmp_command("help|?", "[cmd]", "show the help", args_type="name:s?")
def hmp_help(ctx: CommandContext, parsed: dict[str, Any]) -> str:
    args = parsed.get("name", "")
    if not args:
        return _dump(HMP_COMMANDS, "")
    if args == "info":
        return _dump(HMP_INFO, "info ")
    cmd = _lookup(HMP_COMMANDS, args)
    if cmd is None:
        return f"unknown command: '{args}'\n"
    return f"{cmd.names} {cmd.params} -- {cmd.help}\n"


@hmp_command("info", "[subcommand]", "show various information about the system state",
             args_type="item:s?,rest:S?")
async def hmp_info_cmd(ctx: CommandContext, args: dict[str, Any]) -> str:
    if "item" not in args:
        return _dump(HMP_INFO, "info ")
    sub, rest = args["item"], args.get("rest", "")
    cmd = HMP_INFO.get(sub)
    if cmd is None:
        return f"unknown command: 'info {sub}'\n"
    result = cmd.fn(ctx, rest.strip())
    return str(await result if inspect.isawaitable(result) else result)


@hmp_command("quit|q", "", "quit the emulator")
def hmp_quit(ctx: CommandContext, args: dict[str, Any]) -> str:
    ctx.shutdown("host-qmp-quit")
    return ""


@hmp_command("cpu", "index", "set the default CPU", args_type="index:s")
def hmp_cpu(ctx: CommandContext, args: dict[str, Any]) -> str:
    return "" if args["index"] == "0" else "invalid CPU index\n"


@hmp_info("version", "show the version of QEMU")
def info_version(ctx: CommandContext, args: str) -> str:
    v = version_info()
    q = v["qemu"]
    return f"{q['major']}.{q['minor']}.{q['micro']} ({v['package']})\n"


@hmp_info("status", "show the current VM status (running|paused)")
def info_status(ctx: CommandContext, args: str) -> str:
    state = ctx.runstate.state.value
    running = ctx.runstate.is_running
    text = "VM status: running" if running else "VM status: paused"
    if not running and state != "paused":
        text += f" ({state})"
    return text + "\n"


@hmp_info("name", "show the current VM name")
def info_name(ctx: CommandContext, args: str) -> str:
    return f"{ctx.vm_name}\n" if ctx.vm_name is not None else ""
