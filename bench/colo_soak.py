#!/usr/bin/env python3
"""COLO soak: kill the primary (or the secondary) with SIGKILL at random instants, many times.

Each round starts a fresh COLO pair on localhost, lets it checkpoint for a random
while, SIGKILLs one side, fails the survivor over with ``x-colo-lost-heartbeat`` and
checks the output stream an outside reader collected: no gap, no repeat, valid guest
checksums. Outside CI (it takes minutes); the test suite runs a bounded version.

Usage: ``python bench/colo_soak.py [--rounds N] [--seed S] [--secondary-every K]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import time

from qmpd.testing.harness import start_colo_pair, workdir

GUEST = "counter,wss=16M,dirty=256,pace=20000,batch=8"
ACCEL = "kvm" if os.path.exists("/dev/kvm") else "tcg"


async def one_round(rng: random.Random, kill_secondary: bool) -> tuple[bool, str]:
    """One pair, one SIGKILL, one failover; returns (stream intact, description)."""
    wd = workdir("qmpd-soak-")
    pair = await start_colo_pair(wd, mem="64M", guest=GUEST, delay_ms=rng.choice([20, 50, 100]),
                                 extra=["-accel", ACCEL])
    try:
        await asyncio.sleep(0.1 + rng.random() * 1.0)
        if kill_secondary:
            pair.secondary.kill(signal.SIGKILL)
            report = await pair.primary_runs_on(GUEST)
        else:
            pair.primary.kill(signal.SIGKILL)
            report = (await pair.secondary_takes_over(GUEST)).report
        return report.ok, str(report)
    finally:
        await pair.close()
        shutil.rmtree(wd, ignore_errors=True)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--secondary-every", type=int, default=5,
                    help="every K-th round kills the secondary instead of the primary")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    failures = 0
    t0 = time.monotonic()
    for i in range(args.rounds):
        kill_secondary = args.secondary_every > 0 and i % args.secondary_every == 0
        ok, text = await one_round(rng, kill_secondary)
        failures += not ok
        print(f"round {i + 1:4d}/{args.rounds} kill {'secondary' if kill_secondary else 'primary'}"
              f": {'ok' if ok else 'BROKEN'} {text}", flush=True)
    print(f"soak: {args.rounds} rounds (seed {args.seed}), {failures} broken streams, "
          f"{time.monotonic() - t0:.0f} s; limit: 0 broken")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
