"""The ``qmpd`` command line, in QEMU's style; the only reader of argv.

Users: the ``qmpd`` console script and ``python -m qmpd``. Options take one dash (two
also work, as in QEMU); an unknown option or a bad value prints one line
``qmpd: -opt[ value]: message`` to stderr and exits with status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import qmpd
from qmpd.config import ConfigError, DaemonConfig, parse_accel, parse_mem, parse_monitor

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
  -serial SPEC          serial port backend (repeatable)
  -chardev SPEC         character device backend (repeatable)
  -guest SPEC           guest workload, e.g. counter,wss=16M,dirty=16,pace=0
  -incoming URI|defer   wait for an incoming migration
Process:
  -pidfile FILE         write the process id to FILE
  -daemonize            detach once the monitors are listening
  -h, --help            show this help and exit
  --version             show the version and exit
Environment: QMPD_LOG=debug|info|warning (default warning) sets the log level.
"""

_FLAGS = {"S", "daemonize", "h", "help", "version"}
_VALUED: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    # option: (config field, parser, repeatable)
    "qmp": ("monitors", parse_monitor, True),
    "name": ("name", lambda v: v.split("guest=", 1)[1].split(",")[0]
             if v.startswith("guest=") else v, False),
    "pidfile": ("pidfile", str, False),
    "m": ("mem_bytes", parse_mem, False),
    "accel": ("accel", parse_accel, False),
    "serial": ("serial", str, True),
    "chardev": ("chardev", str, True),
    "guest": ("guest", str, False),
    "incoming": ("incoming", str, False),
}


def _fail(message: str) -> NoReturn:
    print(f"qmpd: {message}", file=sys.stderr)
    raise SystemExit(1)


def parse_args(argv: list[str]) -> DaemonConfig:
    """Turn argv (without the program name) into a DaemonConfig; exits on errors."""
    fields: dict[str, Any] = {"monitors": [], "serial": [], "chardev": []}
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
            _fail(f"{arg} {value}: {err}")
        if repeatable:
            fields[key].append(parsed)
        else:
            fields[key] = parsed
    return DaemonConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qmpd`` console script."""
    config = parse_args(sys.argv[1:] if argv is None else argv)
    level = os.environ.get("QMPD_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="qmpd[%(process)d] %(levelname)s %(name)s: %(message)s")
    from qmpd.daemon import run_daemon
    return run_daemon(config)


if __name__ == "__main__":
    raise SystemExit(main())
