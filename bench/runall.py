"""Run every benchmark script of the project in one go and write the results.

``bench/run`` (or ``python -m bench``) runs, one after the other, each as its own process
with ``--json`` so its figures are collected exactly as it printed them:

- ``bench/qmp_throughput.py``: QMP round trips against a qmpd it starts, then, when
  ``qemu-system-x86_64`` is installed, the same client code against a QEMU started here;
- ``bench/machine.py``: pause/resume, dirty-log harvest, output and dirty rates;
- ``bench/migration.py``: precopy vs. the socket and memcpy limits (and QEMU);
- ``bench/colo.py``: checkpoint pause/round trip, output release latency, failover;
- ``bench/qemu_colo.py`` (with QEMU): QEMU's own COLO checkpoint pause for the same dirty
  set sizes, from its STOP/RESUME events.

It writes ``bench/results/<YYYY-MM-DD>.json`` (every figure, each script's output, the
machine), ``<date>.md`` (each figure next to its limit or target and QEMU's figure from the
same run) and the PNG plots (see ``bench/report.py``). ``--update-readme`` rewrites the
README's generated performance section from the newest results file and exits.

Nothing is installed here: QEMU for the comparison comes from ``apt-get install
qemu-system-x86``, matplotlib from ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

# name -> (arguments of a normal run, arguments of a --quick run)
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "qmp_throughput": ([], ["--seconds", "2"]),
    "machine": ([], ["--quick"]),
    "migration": ([], ["--quick"]),
    "colo": ([], ["--quick"]),
    "qemu_colo": ([], ["--quick"]),  # only with QEMU (not --no-qemu)
}


# --------------------------------------------------------------------------- the machine
def _first(path: str, key: str, sep: str = ":") -> str | None:
    """The value of the first line of ``path`` starting with ``key``."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key) and sep in line:
                    return line.split(sep, 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def qemu_version() -> str | None:
    """``qemu-system-x86_64 --version``'s first line, or None when it is not installed."""
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out else None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, kernel, Python, /dev/kvm and QEMU of this host."""
    mem_kib = _first("/proc/meminfo", "MemTotal")
    flags = _first("/proc/cpuinfo", "flags") or ""
    try:
        import numpy
        np_version: str | None = numpy.__version__
    except ImportError:
        np_version = None
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or "?",
        "cpus": os.cpu_count(),
        "hypervisor": "hypervisor" in flags.split(),
        "memory_gib": round(int(mem_kib.split()[0]) / (1 << 20), 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME", "=") or platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": np_version,
        "kvm": os.path.exists("/dev/kvm"),
        "qemu": qemu_version(),
        "loadavg_start": list(os.getloadavg()),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- running
def run_script(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``bench/<name>.py`` with ``--json``; its output is echoed and kept."""
    script = BENCH / f"{name.split(':')[0]}.py"
    with tempfile.TemporaryDirectory(prefix="qmpd-bench-run-") as tmp:
        out_json = Path(tmp) / "figures.json"
        argv = [sys.executable, str(script), *args, "--json", str(out_json)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH"))
                                            if p)
        env["PYTHONUNBUFFERED"] = "1"
        print(f"\n=== {name}: {' '.join(argv[1:-2])}", flush=True)
        load0, t0 = list(os.getloadavg()), time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:  # the script and whatever it started: its own session
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        lines = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line)
            rc = proc.wait()
        except KeyboardInterrupt:
            kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        figures = None
        if out_json.exists():
            try:
                figures = json.loads(out_json.read_text())
            except ValueError:
                figures = None
    result = {"argv": [Path(a).name if a == str(script) else a for a in argv[1:-2]],
              "returncode": rc, "timed_out": timed_out.is_set(), "seconds": round(seconds, 1),
              "loadavg_before": load0, "loadavg_after": list(os.getloadavg()),
              "output": "".join(lines), "figures": figures}
    status = "timed out" if timed_out.is_set() else f"exit {rc}"
    print(f"=== {name}: {status}, {seconds:.0f} s"
          f"{'' if figures is not None else ', no figures'}", flush=True)
    return result


def run_qmp_against_qemu(args: list[str], timeout: float) -> dict[str, Any] | None:
    """The QMP benchmark's client code against a QEMU started here (None: no QEMU).

    One client only: a QEMU ``-qmp unix:...,server=on`` chardev serves one connection at a
    time, so further clients would wait for the greeting forever. The QEMU is paused (-S,
    no disk), as in the issue-2 measurement of QEMU 7.2.
    """
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        return None
    accel = "kvm" if os.path.exists("/dev/kvm") else "tcg"
    with tempfile.TemporaryDirectory(prefix="qmpd-bench-qemu-") as tmp:
        sock = f"{tmp}/qmp.sock"
        qemu = subprocess.Popen([exe, "-machine", f"q35,accel={accel}", "-m", "128M",
                                 "-display", "none", "-nodefaults", "-S",
                                 "-qmp", f"unix:{sock},server=on,wait=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if qemu.poll() is not None or time.monotonic() > deadline:
                    err = qemu.stderr.read().decode(errors="replace") if qemu.stderr else ""
                    print(f"=== qmp_throughput:qemu: QEMU did not start: {err.strip()}")
                    return {"returncode": None, "error": f"QEMU did not start: {err.strip()}",
                            "figures": None}
                time.sleep(0.05)
            return run_script("qmp_throughput:qemu", [*args, "--clients", "1", sock],
                              min(timeout, 300.0))
        finally:
            qemu.kill()
            qemu.wait()


def run_all(quick: bool, only: list[str], qemu: bool, timeout: float) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "quick": quick, "git_commit": git_commit(), "machine": machine_info(), "runs": {},
    }
    m = results["machine"]
    print(f"machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux "
          f"{m['kernel']}, {m['python']}, /dev/kvm {'yes' if m['kvm'] else 'no'}, "
          f"QEMU {m['qemu'] or 'not installed'}; load {m['loadavg_start'][0]:.1f}", flush=True)
    for name, (normal, quick_args) in SCRIPTS.items():
        if only and name not in only:
            continue
        args = quick_args if quick else normal
        if name == "qemu_colo" and not (qemu and shutil.which("qemu-system-x86_64")):
            continue
        results["runs"][name] = run_script(name, args, timeout)
        if name == "qmp_throughput" and qemu:
            q = run_qmp_against_qemu(args, timeout)
            if q is not None:
                results["runs"]["qmp_throughput:qemu"] = q
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def latest_results() -> Path | None:
    files = sorted(RESULTS.glob("????-??-??.json"))
    return files[-1] if files else None


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to every script that has it (a few minutes)")
    ap.add_argument("--only", default="",
                    help=f"comma-separated subset of: {', '.join(SCRIPTS)}")
    ap.add_argument("--no-qemu", action="store_true",
                    help="skip the QMP comparison against a QEMU started here")
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds after which one script is killed (default 3600)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="directory for the results (default bench/results)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only redraw the Markdown table and plots of an existing results file")
    ap.add_argument("--update-readme", action="store_true",
                    help="only rewrite the README's generated performance section from the "
                    "newest bench/results/<date>.json")
    args = ap.parse_args(argv)

    from bench import report  # after argument parsing: --help needs no matplotlib

    if args.update_readme:
        src = latest_results()
        if src is None:
            print("no bench/results/<date>.json yet: run bench/run first", file=sys.stderr)
            return 1
        report.update_readme(ROOT / "README.md", src)
        print(f"README.md: performance section rewritten from {src.relative_to(ROOT)}")
        return 0
    if args.render:
        written = report.render(json.loads(args.render.read_text()), args.render.parent)
        print("wrote " + ", ".join(str(p) for p in written))
        return 0

    only = [x for x in args.only.split(",") if x]
    unknown = set(only) - set(SCRIPTS)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = run_all(args.quick, only, not args.no_qemu, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{results['date']}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    written = [path, *report.render(results, args.out)]
    print("\nwrote " + ", ".join(str(p) for p in written))
    failed = [n for n, r in results["runs"].items()
              if r.get("returncode") != 0 or r.get("figures") is None]
    if failed:
        print(f"failed or without figures: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
