"""``make demo`` (``python -m qmpd.testing.demo``): a COLO pair survives losing its primary.

What it does, printing each step:

1. starts a secondary qmpd (``-incoming defer``) and a primary qmpd, each with a KVM
   guest (tcg where /dev/kvm is missing) and a serial UNIX socket; an outside reader
   connects to both serial sockets, as a client of the service would;
2. enables COLO over QMP exactly as for QEMU (``migrate-set-capabilities`` x-colo,
   ``migrate-incoming``, ``migrate``) and waits for migration status ``colo``;
3. shows checkpoints flowing: count, primary pause, dirty pages per checkpoint;
4. kills the primary with SIGKILL, fails the secondary over with
   ``x-colo-lost-heartbeat``, and shows that the guest's output stream an outside reader
   collected (primary, then secondary) has no gap, no repeat and valid checksums.

Exit status 0 when the stream is intact, 1 otherwise. On a failure (a broken stream, or
any step that went wrong) the working directory is kept and named: each qmpd's output
(``primary.log``, ``secondary.log``) and the stream the outside reader saw
(``stream.out``, checkable with ``qmpd-check-stream --guest GUEST stream.out``).
``--qmpd-arg ARG`` (repeatable) adds ARG to both qmpd command lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qmpd.testing.harness import ColoPair, check_stream, joined_stream, start_colo_pair, workdir

GUEST = "counter,wss=16M,dirty=64,pace=20000"
DELAY_MS = 100


def say(text: str = "") -> None:
    """Print one line of the demo's narration."""
    print(text, flush=True)


def _last(lines: list[bytes]) -> str:
    return lines[-1].decode() if lines else "(nothing)"


async def _show_checkpoints(stats: dict[str, Any], since: int) -> int:
    recent = [r for r in stats["recent"] if r["seq"] > since]
    if recent:
        pauses = [r["pause-us"] / 1000 for r in recent]
        dirty = [r["dirty-pages"] for r in recent]
        say(f"   checkpoints {stats['checkpoints']:4d}: primary paused "
            f"median {statistics.median(pauses):6.2f} ms, dirty pages per checkpoint "
            f"median {int(statistics.median(dirty))}")
        return int(recent[-1]["seq"])
    return since


async def demo(qmpd_args: Sequence[str] = ()) -> int:
    """Run the whole demo; return the exit status. On failure keep the working directory."""
    accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
    wd = workdir("qmpd-demo-")
    status = 1
    pair: ColoPair | None = None
    try:
        say(f"qmpd COLO demo: two qmpd processes on localhost, accel {accel}, "
            f"guest '{GUEST}', x-checkpoint-delay {DELAY_MS} ms")
        say(f"   sockets and logs in {wd}")
        say("1. start secondary (-incoming defer) and primary; connect an outside reader "
            "to each serial socket")
        say("2. secondary: migrate-set-capabilities [events, x-colo, return-path]; "
            "migrate-incoming tcp:127.0.0.1:PORT")
        say("   primary:   migrate-set-capabilities [events, x-colo, return-path]; "
            f"migrate-set-parameters x-checkpoint-delay={DELAY_MS}; migrate tcp:127.0.0.1:PORT")
        t0 = time.monotonic()
        pair = await start_colo_pair(wd, mem="64M", guest=GUEST, delay_ms=DELAY_MS,
                                     extra=["-accel", accel, *qmpd_args])
        status = await _run(pair, t0)
    except Exception as err:
        say(f"FAILED: {type(err).__name__}: {str(err).strip()}")
    finally:
        if pair is not None:
            await pair.close()
            (wd / "stream.out").write_bytes(joined_stream(pair.primary_out, pair.secondary_out))
        if status == 0:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            _say_kept(wd)
    return status


def _say_kept(wd: Path) -> None:
    say(f"The demo failed; its files are kept in {wd}:")
    for path in sorted(wd.iterdir()):
        if path.is_file():
            say(f"   {path} ({path.stat().st_size} bytes)")
    if (wd / "stream.out").exists():
        say(f"   re-check the stream: qmpd-check-stream --guest {GUEST} {wd / 'stream.out'}")


async def _run(pair: ColoPair, t0: float) -> int:
    """Steps 3 to 5 on a pair in COLO; return the exit status."""
    p_status = await pair.primary.cmd("query-colo-status")
    s_status = await pair.secondary.cmd("query-colo-status")
    say(f"   in COLO after {time.monotonic() - t0:.2f} s: primary {p_status}, "
        f"secondary {s_status}")
    say("3. checkpoints flowing (the secondary's guest does not run; its serial "
        "socket stays silent):")
    seen = 0
    for _ in range(3):
        await asyncio.sleep(1.0)
        seen = await _show_checkpoints(await pair.primary.cmd("x-query-colo-stats"), seen)
        say(f"   outside reader: {len(pair.primary_out.lines())} records from the "
            f"primary, last '{_last(pair.primary_out.lines())}'; "
            f"{len(pair.secondary_out.data)} bytes from the secondary")
    ckpts = (await pair.primary.cmd("x-query-colo-stats"))["checkpoints"]
    say(f"4. kill -9 the primary (pid {pair.primary.proc.pid})")
    pair.primary.kill(signal.SIGKILL)
    await pair.primary.proc.wait()
    await pair.primary_out.eof.wait()
    ev = await pair.secondary.wait_event("COLO_EXIT")
    say(f"   secondary: COLO_EXIT {ev['data']} (link to the primary lost)")
    t_fo = time.perf_counter()
    await pair.secondary.cmd("x-colo-lost-heartbeat")
    while not pair.secondary_out.data:
        await asyncio.sleep(0.0005)
    failover_ms = (time.perf_counter() - t_fo) * 1000
    say(f"   secondary: x-colo-lost-heartbeat -> first output after "
        f"{failover_ms:.1f} ms; query-status "
        f"{(await pair.secondary.cmd('query-status'))['status']}, query-colo-status "
        f"{await pair.secondary.cmd('query-colo-status')}")
    await asyncio.sleep(2.0)
    p_lines, s_lines = pair.primary_out.lines(), pair.secondary_out.lines()
    report = check_stream(joined_stream(pair.primary_out, pair.secondary_out), GUEST)
    say("5. the stream the outside reader saw:")
    say(f"   from the primary:   {len(p_lines)} records, last '{_last(p_lines)}'")
    say(f"   from the secondary: {len(s_lines)} records, first "
        f"'{s_lines[0].decode() if s_lines else '(nothing)'}'")
    say(f"   joined: {report}")
    say()
    verdict = "INTACT: no gap, no repeat, checksums valid" if report.ok else "BROKEN"
    say(f"Summary: {ckpts} checkpoints before the primary was killed; failover to "
        f"first output {failover_ms:.1f} ms; output stream {verdict}; "
        f"total {time.monotonic() - t0:.1f} s")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qmpd.testing.demo``."""
    parser = argparse.ArgumentParser(prog="python -m qmpd.testing.demo",
                                     description="A COLO pair survives losing its primary.")
    parser.add_argument("--qmpd-arg", action="append", default=[], metavar="ARG",
                        help="add ARG to both qmpd command lines (repeatable; "
                             "write --qmpd-arg=-S for an ARG that starts with -)")
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.qmpd_arg))


if __name__ == "__main__":
    sys.exit(main())
