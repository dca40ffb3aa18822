#!/usr/bin/env python3
"""QMP round-trip throughput and latency for ``query-status`` over a UNIX socket.

Usage::

    python bench/qmp_throughput.py [SOCKET_PATH] [--seconds 3] [--clients 1,32]

Without SOCKET_PATH a qmpd is started on a temporary socket (and stopped after).
With a path, any QMP server works (e.g. ``qemu-system-x86_64 -qmp
unix:/tmp/q.sock,server=on,wait=off``), so the same client code measures both.

Each client is one connection doing closed-loop round trips (send, wait for the
reply line, repeat). The clients are spread over worker processes (one per CPU,
at most) using a ``selectors`` loop, so the client side costs little. Printed:
requests/s in total, p50 and p99 latency, next to the issue-2 targets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUEST = b'{"execute":"query-status"}'
TARGETS = {1: (7000, 130.0, 180.0), 32: (20000, None, None)}


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    f = sock.makefile("rb")
    f.readline()  # greeting
    sock.sendall(b'{"execute":"qmp_capabilities"}')
    reply = f.readline()
    if b'"return"' not in reply:
        raise SystemExit(f"negotiation failed: {reply!r}")
    f.close()
    return sock


def _worker(path: str, nclients: int, seconds: float, warmup: float,
            out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        socks = [_connect(path) for _ in range(nclients)]
    except OSError as err:
        out.put((0, [], str(err)))
        return
    sel = selectors.DefaultSelector()
    pending: dict[int, float] = {}
    bufs: dict[int, bytes] = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s.fileno()] = b""
    latencies: list[float] = []
    count = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + seconds
    for s in socks:
        pending[s.fileno()] = time.perf_counter()
        s.send(REQUEST)
    while True:
        now = time.perf_counter()
        if now >= stop:
            break
        for key, _ in sel.select(0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            fd = s.fileno()
            data = bufs[fd] + s.recv(65536)
            if not data.endswith(b"\r\n"):
                bufs[fd] = data
                continue
            bufs[fd] = b""
            t = time.perf_counter()
            if t >= measure_from:
                latencies.append(t - pending[fd])
                count += 1
            pending[fd] = t
            s.send(REQUEST)
    for s in socks:
        s.close()
    out.put((count, latencies, ""))


def run(path: str, nclients: int, seconds: float) -> tuple[float, float, float]:
    """Return (requests/s, p50 µs, p99 µs) for ``nclients`` concurrent clients."""
    nworkers = max(1, min(nclients, (os.cpu_count() or 1)))
    shares = [nclients // nworkers + (1 if i < nclients % nworkers else 0)
              for i in range(nworkers)]
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.Process(target=_worker, args=(path, n, seconds, 0.5, out))
             for n in shares]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [e for _, _, e in results if e]
    if errors:
        raise SystemExit(f"cannot connect to {path}: {errors[0]}")
    total = sum(c for c, _, _ in results)
    lat = sorted(x for _, lats, _ in results for x in lats)
    if not lat:
        return 0.0, 0.0, 0.0
    p50 = lat[len(lat) // 2] * 1e6
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6
    return total / seconds, p50, p99


def _spawn(extra: list[str]) -> tuple[subprocess.Popen[bytes], str,
                                      tempfile.TemporaryDirectory[str]]:
    tmp = tempfile.TemporaryDirectory()
    path = str(Path(tmp.name) / "qmp.sock")
    proc = subprocess.Popen([sys.executable, "-m", "qmpd", "-qmp",
                             f"unix:{path},server=on,wait=off", *extra])
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("qmpd did not start")
        time.sleep(0.05)
    return proc, path, tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", help="QMP UNIX socket (default: start qmpd)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,32")
    parser.add_argument("--qmpd-args", default="",
                        help="extra arguments for the spawned qmpd, e.g. \"-S\"")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    spawned = None
    path = args.socket
    if path is None:
        spawned = _spawn(args.qmpd_args.split())
        path = spawned[1]
    try:
        print(f"query-status round trips over {path} ({os.cpu_count()} CPUs, "
              f"{args.seconds:.0f} s each)")
        for n in (int(x) for x in args.clients.split(",")):
            rate, p50, p99 = run(path, n, args.seconds)
            figures[str(n)] = {"rate": rate, "p50_us": p50, "p99_us": p99}
            target = TARGETS.get(n)
            goal = ""
            if target is not None:
                goal = f"   target >= {target[0]:,} req/s"
                if target[1] is not None:
                    goal += f", p50 {target[1]:.0f} us, p99 {target[2]:.0f} us"
            print(f"{n:3d} client(s): {rate:9,.0f} req/s  p50 {p50:7.1f} us  "
                  f"p99 {p99:7.1f} us{goal}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)
    finally:
        if spawned is not None:
            spawned[0].terminate()
            spawned[0].wait(5)
            spawned[2].cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
