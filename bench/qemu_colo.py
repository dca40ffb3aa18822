#!/usr/bin/env python3
"""QEMU's own COLO checkpoint pause, measured here, for the side-by-side in bench/run.

Starts a QEMU COLO pair (``qemu-system-x86_64``, KVM, no disks and no NICs, so no block
replication or packet comparison is involved: only the periodic checkpoints) whose guest
dirties D pages per epoch (bench/qemu_guest/dirty.S, assembled here with binutils), and
times every checkpoint's pause from QEMU's own QMP events: each checkpoint stops the VM
(``STOP``, sent once the vCPUs are out) and starts it again (``RESUME``, sent before they
re-enter), so RESUME - STOP, by QEMU's event timestamps, is the time the guest is stopped
minus the stop and restart latencies: if anything it favours QEMU.

Figures: for each D, the median pause over >= 50 checkpoints (15 with --quick), next to
qmpd's pipelined and QEMU-order pauses for the same D in bench/colo.py.

Usage: ``python bench/qemu_colo.py [--quick] [--json FILE]``; exits 0 with a note and no
figures when QEMU or binutils are not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

GUEST_SRC = Path(__file__).resolve().parent / "qemu_guest" / "dirty.S"
#: (dirty pages per epoch, x-checkpoint-delay ms), as in bench/colo.py.
SIZES = ((1000, 200), (10000, 200), (100000, 3000))


def build_guest(pages: int, out: Path) -> Path:
    """Assemble and link the guest for ``pages`` dirty pages per pass."""
    obj, elf = out / f"dirty{pages}.o", out / f"dirty{pages}.elf"
    subprocess.run(["as", "--32", "--defsym", f"NPAGES={pages}", "-o", str(obj),
                    str(GUEST_SRC)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-o", str(elf), str(obj)],
                   check=True)
    return elf


def _qemu(exe: str, wd: Path, name: str, kernel: Path, mem_mb: int,
          extra: list[str]) -> subprocess.Popen[bytes]:
    accel = "kvm" if os.path.exists("/dev/kvm") else "tcg"
    return subprocess.Popen(
        [exe, "-machine", f"pc,accel={accel}", "-m", f"{mem_mb}M", "-nodefaults",
         "-display", "none", "-kernel", str(kernel),
         "-qmp", f"unix:{wd}/{name}-qmp.sock,server=on,wait=off", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(wd / f"{name}.log", "wb"))


async def _connect(path: Path, timeout: float = 10.0) -> QMPClient:
    client = QMPClient(path.stem)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.connect(str(path))
            return client
        except Exception:  # QEMU not listening yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _passes(qp: QMPClient) -> int:
    """The guest's pass counter (word at 0x3FF000), through HMP ``xp``."""
    out = await qp.execute("human-monitor-command", {"command-line": "xp /1wx 0x3ff000"})
    return int(str(out).split(":")[1].split()[0], 16)


def _ts(event: dict[str, Any]) -> float:
    stamp = event["timestamp"]
    return float(stamp["seconds"]) + float(stamp["microseconds"]) / 1e6


async def measure(exe: str, kernel: Path, pages: int, delay_ms: int,
                  checkpoints: int) -> dict[str, Any]:
    """Run one QEMU COLO pair until ``checkpoints`` checkpoints were seen after warm-up."""
    mem_mb = max(64, (pages * 4096 >> 20) + 64)
    with tempfile.TemporaryDirectory(prefix="qmpd-bench-qcolo-") as tmp:
        wd = Path(tmp)
        sec = _qemu(exe, wd, "sec", kernel, mem_mb, ["-incoming", "defer"])
        pri = _qemu(exe, wd, "pri", kernel, mem_mb, [])
        clients: list[QMPClient] = []
        try:
            qs = await _connect(wd / "sec-qmp.sock")
            qp = await _connect(wd / "pri-qmp.sock")
            clients += [qs, qp]
            caps = [{"capability": "x-colo", "state": True}]
            await qs.execute("migrate-set-capabilities", {"capabilities": caps})
            await qs.execute("migrate-incoming", {"uri": f"unix:{wd}/mig.sock"})
            await qp.execute("migrate-set-capabilities", {"capabilities": caps})
            await qp.execute("migrate-set-parameters", {"x-checkpoint-delay": delay_ms})
            await asyncio.sleep(0.3)  # let the guest reach its loop
            pairs: list[tuple[float, float]] = []
            stop_at: list[float] = []
            done = asyncio.Event()
            warm = asyncio.Event()

            async def collect() -> None:
                async for ev in qp.events:
                    if ev["event"] == "STOP":
                        stop_at.append(_ts(ev))
                    elif ev["event"] == "RESUME" and stop_at:
                        pairs.append((stop_at[-1], _ts(ev)))
                        if len(pairs) == 3:
                            warm.set()
                        if len(pairs) >= checkpoints + 3:
                            done.set()

            task = asyncio.create_task(collect())
            await qp.execute("migrate", {"uri": f"unix:{wd}/mig.sock"})
            timeout = (checkpoints + 10) * (delay_ms / 1000 + 0.5) + 30
            await asyncio.wait_for(warm.wait(), timeout)
            passes0, t0 = await _passes(qp), time.monotonic()
            await asyncio.wait_for(done.wait(), timeout)
            passes1, t1 = await _passes(qp), time.monotonic()
            status = (await qp.execute("query-colo-status"))
            task.cancel()
            # Pages written per epoch by the guest: all of them if it makes a full pass
            # per epoch, else the share of a pass it gets through.
            per_epoch = (passes1 - passes0) / (t1 - t0) * (delay_ms / 1000)
            # The first pair is the migration's own stop-and-copy; then warm-up.
            pauses = [(r - s) * 1e3 for s, r in pairs[3:3 + checkpoints]]
            return {"pages": pages, "delay_ms": delay_ms, "mem_mb": mem_mb,
                    "pause_ms": statistics.median(pauses), "pause_max_ms": max(pauses),
                    "checkpoints": len(pauses), "colo_mode": status.get("mode"),
                    "passes_per_epoch": per_epoch,
                    "dirty_pages_per_epoch": round(pages * min(1.0, per_epoch))}
        finally:
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.disconnect()
            for p in (pri, sec):
                p.kill()
                p.wait()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="15 checkpoints per size, not 50")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    exe = shutil.which("qemu-system-x86_64")
    tools = [shutil.which(t) for t in ("as", "ld")]
    if exe is None or None in tools:
        print("QEMU or binutils (as, ld) not installed: no QEMU COLO figures")
        return 0
    proc = await asyncio.create_subprocess_exec(exe, "--version",
                                                stdout=asyncio.subprocess.PIPE)
    version = (await proc.communicate())[0].decode().splitlines()[0]
    n = 15 if args.quick else 50
    results: dict[str, Any] = {"qemu_version": version, "checkpoints": {}}
    print(f"{version}: COLO primary pause per checkpoint (QMP STOP -> RESUME), medians")
    with tempfile.TemporaryDirectory(prefix="qmpd-bench-qguest-") as tmp:
        for pages, delay in SIZES:
            kernel = build_guest(pages, Path(tmp))
            r = await measure(exe, kernel, pages, delay, n)
            results["checkpoints"][str(pages)] = r
            print(f"  {pages:>6} pages written round robin, delay {delay:>4} ms: "
                  f"~{r['dirty_pages_per_epoch']:,} dirtied per epoch "
                  f"({r['passes_per_epoch']:.2f} passes): pause {r['pause_ms']:.2f} ms "
                  f"(max {r['pause_max_ms']:.2f}, n={r['checkpoints']}, mode {r['colo_mode']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
