"""HMP (``human-monitor-command``) as QEMU 7.2: migration, COLO and run-control commands.

Each probe is an HMP line and the exact output QEMU 7.2 prints (read from a real
``qemu-system-x86_64`` 7.2 and from its monitor/hmp.c, hmp-commands.hx, hmp-cmds.c,
qapi/string-input-visitor.c and util/cutils.c). The probes run against qmpd and, where
installed, against QEMU 7.2 itself; both must print exactly the expected text (the QEMU
half is skipped with a reason without QEMU, and fails when CI is set).

Covered: missing arguments, bad ``on``/``off``, unknown capability and parameter,
numbers and sizes the string input visitor and ``qemu_strtosz`` refuse (with their
ranges and hint), the range checks behind ``migrate_set_parameter``, extraneous
characters and unknown options, the refusals of the postcopy-only commands and of
``x_colo_lost_heartbeat`` outside COLO, ``migrate`` without ``-d`` on a QMP monitor,
a refused connection's ``error-desc`` in ``info migrate``, the help lines, and the
values ``info migrate_parameters`` shows after setting every kind of value; a
destination under ``-incoming defer`` before and while it listens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmp_helpers import Raw, free_port, qmpd_or_qemu72

SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
             "peta-\r\nand exabytes, respectively.\r\n")


def _try(cmd: str, word: str | None = None) -> str:
    return f'Try "help {word or cmd}" for more information\r\n'


def _expects(name: str, what: str) -> str:
    return f"Error: Parameter '{name}' expects {what}\r\n"


MSP = "migrate_set_parameter"
MSC = "migrate_set_capability"

# (HMP line, exact output); none of these changes the node's state
PROBES: list[tuple[str, str]] = [
    (MSC, f"{MSC}: string expected\r\n" + _try(MSC)),
    (f"{MSC} x-colo", "Expected 'on' or 'off'\r\n" + _try(MSC)),
    (f"{MSC} x-colo maybe", "Expected 'on' or 'off'\r\n" + _try(MSC)),
    (f"{MSC} x-colo ON", "Expected 'on' or 'off'\r\n" + _try(MSC)),
    (f"{MSC} x-colo 1", "Expected 'on' or 'off'\r\n" + _try(MSC)),
    (f"{MSC} foo on", "Error: invalid parameter value: foo\r\n"),
    (f"{MSC} x-colo on extra", f"{MSC}: extraneous characters at the end of line\r\n"
     + _try(MSC)),
    (MSP, f"{MSP}: string expected\r\n" + _try(MSP)),
    (f"{MSP} x-checkpoint-delay", f"{MSP}: string expected\r\n" + _try(MSP)),
    (f'{MSP} tls-creds "ab', f"{MSP}: string expected\r\n" + _try(MSP)),
    (f'{MSP} tls-creds "a\\qb"', f"{MSP}: string expected\r\n" + _try(MSP)),
    (f"{MSP} foo 1", "Error: invalid parameter value: foo\r\n"),
    (f"{MSP} x-checkpoint-delay abc", _expects("x-checkpoint-delay", "uint64")),
    (f"{MSP} x-checkpoint-delay 1e3", _expects("x-checkpoint-delay", "uint64")),
    (f"{MSP} x-checkpoint-delay -5", _expects("x-checkpoint-delay", "uint32_t")),
    (f"{MSP} x-checkpoint-delay 4294967296", _expects("x-checkpoint-delay", "uint32_t")),
    (f"{MSP} compress-level abc", _expects("compress-level", "uint64")),
    (f"{MSP} compress-level -1", _expects("compress-level", "uint8_t")),
    (f"{MSP} compress-level 300", _expects("compress-level", "uint8_t")),
    (f"{MSP} compress-level 10", _expects("compress_level", "a value between 0 and 9")),
    (f"{MSP} cpu-throttle-tailslow maybe", _expects("cpu-throttle-tailslow",
                                                    "'on' or 'off'")),
    (f"{MSP} cpu-throttle-tailslow ON", _expects("cpu-throttle-tailslow", "'on' or 'off'")),
    (f"{MSP} multifd-compression zzz",
     "Error: Parameter 'multifd-compression' does not accept value 'zzz'\r\n"),
    (f"{MSP} max-bandwidth 1x", "Error: Invalid size 1x\r\n"),
    (f"{MSP} max-bandwidth -1", "Error: Invalid size -1\r\n"),
    (f"{MSP} max-bandwidth 9000000000000", "Error: Invalid size 9000000000000\r\n"),
    (f"{MSP} downtime-limit abc",
     _expects("downtime-limit", "a non-negative number below 2^64") + SIZE_HINT),
    (f"{MSP} downtime-limit 2000001",
     _expects("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")),
    (f"{MSP} announce-initial -1",
     _expects("announce-initial", "a non-negative number below 2^64") + SIZE_HINT),
    (f"{MSP} announce-rounds 1.5",
     _expects("announce-rounds", "a non-negative number below 2^64") + SIZE_HINT),
    (f"{MSP} announce-initial 99999999999999999999999",
     "Error: Value '99999999999999999999999' is out of range for parameter "
     "'announce-initial'\r\n"),
    (f"{MSP} xbzrle-cache-size 1000", _expects(
        "xbzrle_cache_size", "a power of two no less than the target page size")),
    (f"{MSP} multifd-channels 0", _expects("multifd_channels", "a value between 1 and 255")),
    (f"{MSP} max-cpu-throttle 100", _expects(
        "max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99")),
    (f"{MSP} cpu-throttle-initial 0", _expects(
        "cpu_throttle_initial", "an integer in the range of 1 to 99")),
    (f"{MSP} block-bitmap-mapping x",
     "Error: The block-bitmap-mapping parameter can only be set through QMP\r\n"),
    ("migrate", "migrate: string expected\r\n" + _try("migrate")),
    ("migrate foo:bar", "Error: Parameter 'uri' expects a valid migration protocol\r\n"),
    ("migrate -x tcp:1", "migrate: unsupported option -x\r\n" + _try("migrate")),
    ("migrate_cancel foo", "migrate_cancel: extraneous characters at the end of line\r\n"
     + _try("migrate_cancel")),
    ("migrate_incoming", "migrate_incoming: string expected\r\n" + _try("migrate_incoming")),
    ("migrate_incoming tcp:127.0.0.1:4500",
     "Error: '-incoming' was not specified on the command line\r\n"),
    ("x_colo_lost_heartbeat", "Error: The feature 'colo' is not enabled\r\n"),
    ("x_colo_lost_heartbeat x", "x_colo_lost_heartbeat: extraneous characters at the end "
     "of line\r\n" + _try("x_colo_lost_heartbeat")),
    ("migrate_pause",
     "Error: migrate-pause is currently only supported during postcopy-active state\r\n"),
    ("migrate_recover tcp:127.0.0.1:1",
     "Error: Migrate recover can only be run when postcopy is paused.\r\n"),
    ("migrate_recover", "migrate_recover: string expected\r\n" + _try("migrate_recover")),
    ("migrate_start_postcopy", "Error: Enable postcopy with migrate_set_capability before "
     "the start of migration\r\n"),
    ("s x", "stop|s: extraneous characters at the end of line\r\n" + _try("s")),
    ("c x", "cont|c: extraneous characters at the end of line\r\n" + _try("c")),
    ("system_reset x", "system_reset: extraneous characters at the end of line\r\n"
     + _try("system_reset")),
    ("quit x", "quit|q: extraneous characters at the end of line\r\n" + _try("quit")),
    ("help migrate", "migrate [-d] [-b] [-i] [-r] uri -- migrate to URI (using -d to not "
     "wait for completion)\r\n\t\t\t -b for migration without shared storage with full "
     "copy of disk\r\n\t\t\t -i for migration without shared storage with incremental copy "
     "of disk (base image shared between src and destination)\r\n\t\t\t -r to resume a "
     "paused migration\r\n"),
    (f"help {MSC}", f"{MSC} capability state -- Enable/Disable the usage of a capability "
     "for migration\r\n"),
    (f"help {MSP}", f"{MSP} parameter value -- Set the parameter for migration\r\n"),
    ("help migrate_incoming", "migrate_incoming uri -- Continue an incoming migration "
     "from an -incoming defer\r\n"),
    ("help migrate_cancel", "migrate_cancel  -- cancel the current VM migration\r\n"),
    ("help x_colo_lost_heartbeat", "x_colo_lost_heartbeat  -- Tell COLO that heartbeat is "
     "lost,\r\n\t\t\ta failover or takeover is needed.\r\n"),
    ("help stop", "stop|s  -- stop emulation\r\n"),
    ("help c", "cont|c  -- resume emulation\r\n"),
    ("help system_reset", "system_reset  -- reset the system\r\n"),
    ("help quit", "quit|q  -- quit the emulator\r\n"),
    ("help migrate_pause", "migrate_pause  -- Pause an ongoing migration (postcopy-only)\r\n"),
    ("help migrate_recover", "migrate_recover uri -- Continue a paused incoming postcopy "
     "migration\r\n"),
    ("help migrate_start_postcopy", "migrate_start_postcopy  -- Followup to a migration "
     "command to switch the migration to postcopy mode. The postcopy-ram capability must "
     "be set on both source and destination before the original migration command .\r\n"),
]

GLOBALS = ("globals:\r\nstore-global-state: on\r\nonly-migratable: off\r\n"
           "send-configuration: on\r\nsend-section-footer: on\r\n"
           "decompress-error-check: on\r\nclear-bitmap-shift: 18\r\n")


@pytest.fixture(scope="module", params=["qmpd", "qemu-7.2"])
def monitor(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    """A negotiated QMP client of a fresh qmpd, or of a real QEMU 7.2 where installed."""
    kind = "qmpd" if request.param == "qmpd" else "qemu"
    with qmpd_or_qemu72(kind, tmp_path_factory.mktemp("hmp"),
                        "-machine", "pc", "-m", "128") as (path, _pid):
        client = Raw(path)
        client.negotiate()
        yield client
        client.close()


def reply(client: Raw, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to ``request``, skipping events."""
    client.send(request)
    while "event" in (message := client.read()):
        pass
    return message


def hmp(client: Raw, line: str) -> str:
    answer = reply(client, {"execute": "human-monitor-command",
                            "arguments": {"command-line": line}})
    assert "return" in answer, answer
    return str(answer["return"])


@pytest.mark.parametrize("line,output", PROBES, ids=[p[0] for p in PROBES])
def test_probe(monitor: Raw, line: str, output: str) -> None:
    assert hmp(monitor, line) == output


def test_values_as_info_migrate_parameters_shows_them(monitor: Raw) -> None:
    """Every kind of value is converted as QEMU 7.2 converts it (hex, sizes with and
    without suffix, MiB for max-bandwidth, yes/no, quoted strings)."""
    for line in (f"{MSP} x-checkpoint-delay 0x10", f"{MSP} max-bandwidth 1.5k",
                 f"{MSP} xbzrle-cache-size 1M", f"{MSP} announce-initial 1.5k",
                 f"{MSP} cpu-throttle-tailslow yes", f'{MSP} tls-hostname "a b\\"c"',
                 f"{MSP}   downtime-limit    0400  ", f"{MSP} compress-wait-thread false"):
        assert hmp(monitor, line) == "", line
    shown = dict(line.split(": ", 1) for line in
                 hmp(monitor, "info migrate_parameters").split("\r\n")[:-1])
    assert {k: shown[k] for k in ("x-checkpoint-delay", "max-bandwidth",
                                  "xbzrle-cache-size", "announce-initial",
                                  "cpu-throttle-tailslow", "tls-hostname",
                                  "downtime-limit", "compress-wait-thread")} == {
        "x-checkpoint-delay": "16 ms", "max-bandwidth": "1536 bytes/second",
        "xbzrle-cache-size": "1048576 bytes", "announce-initial": "1536 ms",
        "cpu-throttle-tailslow": "on", "tls-hostname": "'a b\"c'",
        "downtime-limit": "400 ms", "compress-wait-thread": "off"}
    assert hmp(monitor, f"{MSC} events on") == ""
    assert "events: on\r\n" in hmp(monitor, "info migrate_capabilities")


def test_run_control(monitor: Raw) -> None:
    assert hmp(monitor, "stop") == ""
    assert hmp(monitor, "info status") == "VM status: paused\r\n"
    assert hmp(monitor, "c") == ""
    assert hmp(monitor, "info status") == "VM status: running\r\n"
    assert hmp(monitor, "system_reset") == ""
    assert hmp(monitor, "info status") == "VM status: running\r\n"


def test_refused_connection_in_info_migrate(monitor: Raw) -> None:
    """``migrate`` without ``-d`` continues detached on a QMP monitor; the failure reads
    as QEMU words it (strerror), in ``info migrate`` and ``query-migrate``."""
    port = free_port()
    assert hmp(monitor, f"migrate tcp:127.0.0.1:{port}") == \
        "terminal does not allow synchronous migration, continuing detached\r\n"
    deadline = time.monotonic() + 10
    while (info := reply(monitor, {"execute": "query-migrate"})["return"]).get(
            "status") not in ("failed", "completed") and time.monotonic() < deadline:
        time.sleep(0.05)
    desc = f"Failed to connect to '127.0.0.1:{port}': Connection refused"
    assert info["error-desc"] == desc, json.dumps(info)
    assert hmp(monitor, "info migrate") == (
        f"{GLOBALS}Migration status: failed ({desc})\r\ntotal time: 0 ms\r\n")


@pytest.mark.parametrize("kind", ["qmpd", "qemu"])
def test_incoming_defer(tmp_path: Path, kind: str) -> None:
    """A destination waiting with ``-incoming defer``: what HMP says before and while it
    listens (no status while only listening, the address it listens on)."""
    port = free_port()
    with qmpd_or_qemu72(kind, tmp_path, both=("-incoming", "defer")) as (path, _pid):
        client = Raw(path)
        client.negotiate()
        for line, output in (
                ("info status", "VM status: paused (inmigrate)\r\n"),
                ("migrate tcp:127.0.0.1:1",
                 "Error: Guest is waiting for an incoming migration\r\n"),
                (f"migrate_incoming tcp:127.0.0.1:{port}", ""),
                (f"migrate_incoming tcp:127.0.0.1:{port}",
                 "Error: The incoming migration has already been started\r\n"),
                ("info migrate", f"{GLOBALS}socket address: [\r\n\ttcp:127.0.0.1:{port}\r\n]\r\n"),
                ("stop", ""), ("cont", ""),
                ("info status", "VM status: paused (inmigrate)\r\n"),
                ("migrate_cancel", ""),  # cancels outgoing migrations only
                ("info migrate", f"{GLOBALS}socket address: [\r\n\ttcp:127.0.0.1:{port}\r\n]\r\n"),
                ("x_colo_lost_heartbeat", "Error: The feature 'colo' is not enabled\r\n"),
                ("migrate_set_capability x-colo on", "")):
            assert hmp(client, line) == output, line
        assert reply(client, {"execute": "query-migrate"})["return"] == {"socket-address": [
            {"type": "inet", "host": "127.0.0.1", "port": str(port), "ipv4": True}]}
        client.close()


@pytest.mark.parametrize("kind", ["qmpd", "qemu"])
def test_quit(tmp_path: Path, kind: str) -> None:
    with qmpd_or_qemu72(kind, tmp_path) as (path, _pid):
        client = Raw(path)
        client.negotiate()
        assert hmp(client, "quit") == ""


#: ``info migrate`` lines QEMU 7.2 prints only when their value is not zero
CONDITIONAL = ("dirty pages rate", "postcopy request count", "precopy ram", "downtime ram",
               "postcopy ram")


def _labels(text: str) -> list[str]:
    labels = [line.split(":")[0] for line in text.split("\r\n")[:-1]]
    return [label for label in labels if label not in CONDITIONAL]


@pytest.mark.parametrize("kind", ["qmpd", "qemu"])
def test_info_migrate_after_a_completed_migration(tmp_path: Path, kind: str) -> None:
    """The lines of ``info migrate`` on both sides of a completed migration, in QEMU
    7.2's order (values differ between the two, the labels may not)."""
    port = free_port()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src").mkdir()
    qemu = ("-machine", "pc")
    with qmpd_or_qemu72(kind, tmp_path / "dst", *qemu,
                        both=("-m", "128M", "-incoming", "defer")) as (dpath, _d), \
            qmpd_or_qemu72(kind, tmp_path / "src", *qemu, both=("-m", "128M")) as (spath, _s):
        dst, src = Raw(dpath), Raw(spath)
        dst.negotiate()
        src.negotiate()
        assert hmp(dst, f"migrate_incoming tcp:127.0.0.1:{port}") == ""
        assert hmp(src, f"migrate -d tcp:127.0.0.1:{port}") == ""
        deadline = time.monotonic() + 30
        while "Migration status: completed" not in (out := hmp(src, "info migrate")):
            assert time.monotonic() < deadline and "failed" not in out, out
            time.sleep(0.1)
        assert _labels(out) == [
            "globals", "store-global-state", "only-migratable", "send-configuration",
            "send-section-footer", "decompress-error-check", "clear-bitmap-shift",
            "Migration status", "total time", "downtime", "setup", "transferred ram",
            "throughput", "remaining ram", "total ram", "duplicate", "skipped", "normal",
            "normal bytes", "dirty sync count", "page size", "multifd bytes",
            "pages-per-second"]
        while "Migration status: completed" not in (out := hmp(dst, "info migrate")):
            assert time.monotonic() < deadline, out
            time.sleep(0.1)
        assert out == f"{GLOBALS}Migration status: completed\r\ntotal time: 0 ms\r\n"
        dst.close()
        src.close()
