"""The ``qmpd`` command line, in QEMU's style; the only reader of argv.

Users: the ``qmpd`` console script and ``python -m qmpd``. Options take one dash (two
also work, as in QEMU); the values are parsed by :mod:`qmpd.config` and
:mod:`qmpd.options`. An unknown option or a bad value prints one line
``qmpd: -opt[ value]: reason`` to stderr and exits with status 1; so does a value that
fails at start-up (a socket that cannot be bound, a pidfile that cannot be written).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import qmpd
from qmpd.config import (
    DaemonConfig,
    parse_accel,
    parse_chardev,
    parse_incoming,
    parse_mem,
    parse_monitor,
    parse_name,
    parse_pidfile,
    parse_serial,
)
from qmpd.errors import ConfigError
from qmpd.machine.config import GuestConfig, MachineConfig, parse_guest
from qmpd.machine.errors import MachineConfigError
from qmpd.objects import check_object
from qmpd.options import AddressError, OptionError

USAGE = """\
usage: qmpd [options]

QMP-compatible control-plane server: one process, one VM, QEMU {qemu}'s QMP dialect.

Monitor:
  -qmp unix:PATH,server=on,wait=off     QMP monitor on a UNIX socket (mode 0600)
  -qmp tcp:HOST:PORT,server=on,wait=off QMP monitor on TCP (repeatable)
Machine:
  -name NAME            VM name (also guest=NAME,...)
  -S                    do not start the CPU at start-up (state prelaunch)
  -m SIZE               guest RAM, QEMU syntax (512M, 4G; bare number = MiB); default 128M
  -accel kvm|tcg|kvm:tcg  accelerator (default kvm:tcg: KVM if available)
  -serial SPEC          serial port backend (the first one is used); SPEC is one of
                          null | stdio | file:PATH
                          unix:PATH[,server=on][,wait=off]     (client without server=on)
                          tcp:[HOST]:PORT[,server=on][,wait=off]
                          chardev:ID                           (a -chardev below)
                        a socket server drops output while no client is connected
  -chardev SPEC         character device backend (repeatable); SPEC is one of
                          null,id=ID | stdio,id=ID | file,id=ID,path=PATH
                          socket,id=ID,path=PATH[,server=on][,wait=off]
                          socket,id=ID,[host=HOST,]port=PORT[,server=on][,wait=off]
  -guest counter[,KEY=VALUE...]  guest workload (default counter,pace=200000); KEYs:
                          wss=SIZE   working set, a multiple of 4K (default 16M)
                          dirty=N    pages written per step (default 16)
                          pace=N     busy-loop iterations per step (default 0)
                          check=N    full working-set checksum every N steps (default 64)
                          batch=N    output records per doorbell exit (default 0 = auto)
  -incoming tcp:[HOST]:PORT|unix:PATH|defer  wait for an incoming migration
  -incoming exec:COMMAND  load a migration stream from COMMAND's output (/bin/sh -c)
  -incoming fd:N        load a migration stream from inherited file descriptor N
  -object tls-creds-x509,id=ID,dir=DIR[,endpoint=server|client][,verify-peer=on|off]
                        TLS credentials for migration (repeatable; migration
                          parameter tls-creds=ID)
Process:
  -pidfile FILE         write the process id to FILE
  -daemonize            detach once the monitors are listening
  -h, --help            show this help and exit
  --version             show the version and exit
Environment: QMPD_LOG=debug|info|warning (default warning) sets the log level;
  QMPD_KVM_DEVICE=PATH opens PATH instead of /dev/kvm.
Errors: a bad value prints one line 'qmpd: -opt value: reason' and exits with status 1.
"""

def _checked_guest(text: str) -> str:
    """``-guest``: checked here, kept as text (the VM stack parses it again)."""
    parse_guest(text)
    return text


_FLAGS = {"S", "daemonize", "h", "help", "version"}
_VALUED: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    # option: (config field, parser, repeatable)
    "qmp": ("monitors", parse_monitor, True),
    "name": ("name", parse_name, False),
    "pidfile": ("pidfile", parse_pidfile, False),
    "m": ("mem_bytes", parse_mem, False),
    "accel": ("accel", parse_accel, False),
    "serial": ("serial", parse_serial, True),
    "chardev": ("chardev", parse_chardev, True),
    "guest": ("guest", _checked_guest, False),
    "incoming": ("incoming", parse_incoming, False),
    "object": ("objects", check_object, True),
}


def _fail(message: str) -> NoReturn:
    print(f"qmpd: {message}", file=sys.stderr)
    raise SystemExit(1)


def _reason(err: ConfigError) -> str:
    """What is wrong, without the option and value the CLI prints before it."""
    return err.reason if isinstance(err, (OptionError, AddressError)) else str(err)


def parse_args(argv: list[str]) -> DaemonConfig:
    """Turn argv (without the program name) into a DaemonConfig; exits on errors."""
    fields: dict[str, Any] = {"monitors": [], "serial": [], "chardev": [], "objects": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            _fail(f"{arg}: invalid option")
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if name in _FLAGS:
            if name in ("h", "help"):
                print(USAGE.format(qemu=".".join(map(str, qmpd.QEMU_VERSION))), end="")
                raise SystemExit(0)
            if name == "version":
                print(f"qmpd version {qmpd.__version__} (QMP of QEMU "
                      f"{'.'.join(map(str, qmpd.QEMU_VERSION))})")
                raise SystemExit(0)
            fields["start_paused" if name == "S" else "daemonize"] = True
            continue
        if name not in _VALUED:
            _fail(f"{arg}: invalid option")
        if i >= len(argv):
            _fail(f"{arg}: requires an argument")
        value = argv[i]
        i += 1
        key, parse, repeatable = _VALUED[name]
        try:
            parsed = parse(value)
        except ConfigError as err:
            _fail(f"{arg} {value}: {_reason(err)}")
        if repeatable:
            fields[key].append(parsed)
        else:
            fields[key] = parsed
    config = DaemonConfig(**fields)
    _check_chardevs(config)
    return config


def _check_chardevs(config: DaemonConfig) -> None:
    """Every ``-chardev id=`` once; every ``-serial chardev:ID`` names one."""
    ids = set()
    for chardev in config.chardev:
        if chardev.id in ids:
            _fail(f"-chardev {chardev.spec}: duplicate chardev id '{chardev.id}'")
        ids.add(chardev.id)
    for serial in config.serial:
        if serial.backend == "chardev" and serial.id not in ids:
            _fail(f"-serial {serial.spec}: chardev '{serial.id}' not found")


def check_machine(config: DaemonConfig, argv: list[str]) -> None:
    """What ``-m``, ``-accel`` and ``-guest`` ask of this host, checked before start-up
    (a RAM size over the host's memory, a working set that does not fit); exits on errors.
    """
    guest = parse_guest(config.guest) if config.guest else GuestConfig()
    try:
        MachineConfig(mem_bytes=config.mem_bytes, accel=config.accel, guest=guest).validate()
    except MachineConfigError as err:
        value = err.value
        for flag, given in itertools.pairwise(argv):
            if flag.lstrip("-") == err.option.lstrip("-"):
                value = given
        _fail(f"{err.option} {value}: {err.reason}" if value is not None else str(err))


def environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``QMPD_*`` variables the layers use, as DaemonConfig fields (read here only)."""
    return {"kvm_device": env.get("QMPD_KVM_DEVICE") or "/dev/kvm",
            "colo_hash": env.get("QMPD_COLO_HASH") == "1",
            "colo_fault": env.get("QMPD_COLO_FAULT", "")}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qmpd`` console script."""
    args = sys.argv[1:] if argv is None else argv
    config = parse_args(args)
    check_machine(config, args)
    config = config.model_copy(update=environment(os.environ))
    level = os.environ.get("QMPD_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="qmpd[%(process)d] %(levelname)s %(name)s: %(message)s")
    from qmpd.daemon import run_daemon
    return run_daemon(config)


if __name__ == "__main__":
    raise SystemExit(main())
