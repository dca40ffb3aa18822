"""The rows of the benchmark table: each figure of a results file next to its limit/target.

One function per benchmark script reads that script's ``--json`` figures (the shapes are
those of ``bench/qmp_throughput.py``, ``bench/machine.py``, ``bench/migration.py`` and
``bench/colo.py``). Limits come from the same run; targets are those of the issues named.
A script that failed, or whose figures have an unexpected shape, gives one row saying so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GiB = 1 << 30
COLO_DELAY_MS = 200  # bench/colo.py's x-checkpoint-delay
PAUSE_TARGET_MS = {1000: 0.6, 10000: 8.0, 100000: 50.0}  # issue 6


@dataclass
class Row:
    section: str
    figure: str
    value: str
    limit: str = ""
    qemu: str = ""
    ok: bool | None = None
    headline: bool = False


def machine_line(m: dict[str, Any]) -> str:
    """One sentence naming the machine a run was made on."""
    la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
    load = ""
    if la0:
        load = f"; load average {la0[0]:.1f} at the start" + (
            f", {la1[0]:.1f} at the end" if la1 else "")
    hyper = ", virtualized" if m.get("hypervisor") else ""
    return (f"{m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs{hyper}, "
            f"{m.get('memory_gib', '?')} GiB RAM, Linux {m.get('kernel', '?')} "
            f"({m.get('os', '?')}), {m.get('python', '?')}, "
            f"/dev/kvm {'present' if m.get('kvm') else 'absent (tcg)'}, "
            f"{m.get('qemu') or 'QEMU not installed'}{load}")


def _figures(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    run = results.get("runs", {}).get(name)
    return run.get("figures") if run else None


def _ms(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms")


# --------------------------------------------------------------------------- per script
def qmp_rows(results: dict[str, Any]) -> list[Row]:
    q = _figures(results, "qmp_throughput") or {}
    qq = _figures(results, "qmp_throughput:qemu") or {}
    targets = {"1": (7000, 130.0, 180.0), "32": (20000, None, None)}  # issue 2
    rows = []
    for n, f in sorted(q.items(), key=lambda kv: int(kv[0])):
        t = targets.get(n, (None, None, None))
        qe = qq.get(n)
        who = "1 client" if n == "1" else f"{n} clients"
        rate_limit = f"≥ {t[0]:,} req/s (issue 2)" if t[0] else ""
        rows.append(Row("QMP", f"{who}: query-status round trips/s", f"{f['rate']:,.0f}",
                        rate_limit, f"{qe['rate']:,.0f}" if qe else (
                            "n/a: one connection per QEMU QMP socket" if qq else ""),
                        f["rate"] >= t[0] if t[0] else None, headline=True))
        for key, label, tgt in (("p50_us", "p50", t[1]), ("p99_us", "p99", t[2])):
            rows.append(Row("QMP", f"{who}: {label} latency", f"{f[key]:,.1f} µs",
                            f"≤ {tgt:.0f} µs (issue 2)" if tgt else "",
                            f"{qe[key]:,.1f} µs" if qe else "",
                            f[key] <= tgt if tgt else None, headline=n == "1"))
    return rows


def machine_rows(results: dict[str, Any]) -> list[Row]:
    m = _figures(results, "machine") or {}
    rows = []
    exit_us = m.get("empty_exit_us")
    limits = [f"memcpy {m['memcpy_gbs']:.1f} GB/s"] if "memcpy_gbs" in m else []
    if exit_us:
        limits.append(f"empty KVM_RUN exit {exit_us:.1f} µs (≤ {1e3 / exit_us:.0f}k exits/s)")
    rows.append(Row("machine", "limits measured in this run", "", "; ".join(limits)))
    if "start_4g_s" in m:
        ms = m["start_4g_s"] * 1e3
        rows.append(Row("machine", "4 GiB guest: Machine() start", f"{ms:.0f} ms",
                        "< 1000 ms (issue 3)", ok=ms < 1000, headline=True))
        rss = m["start_4g_rss_mib"]
        rows.append(Row("machine", "4 GiB guest: RSS growth after 0.1 s", f"{rss:.0f} MiB",
                        "touched pages only, ~16 MiB working set (issue 3)", ok=rss <= 32))
    for key, r in m.items():
        if key.startswith("pause_") and isinstance(r, dict):
            rows.append(Row("machine", f"{key[6:].replace('_', ' ')}: pause p50 / p99",
                            f"{r['pause_p50_us']:.0f} / {r['pause_p99_us']:.0f} µs",
                            f"exit round trip {exit_us:.1f} µs" if exit_us else ""))
        elif key.startswith("state_") and isinstance(r, list):
            rows.append(Row("machine", f"{key.split('_')[1]} save_state / load_state",
                            f"{r[0]:.0f} / {r[1]:.0f} µs"))
    harvests = [(k, r) for k, r in m.items() if k.startswith("harvest_") and "raw_ms" in r]
    worst = max((r["harvest_ms"] / r["raw_ms"] for _, r in harvests), default=None)
    for key, r in harvests:
        _, mem, dirty = key.split("_")
        ratio = r["harvest_ms"] / r["raw_ms"]
        rows.append(Row("machine", f"dirty-log harvest, {mem[:-1]} GiB, {int(dirty) // 1000}k "
                        "dirty pages", _ms(r["harvest_ms"]),
                        f"raw ioctls + decode {_ms(r['raw_ms'])}: {ratio:.2f}x (≤ 2x, issue 3)",
                        ok=ratio <= 2, headline=ratio == worst))
    for key, r in m.items():
        if key.startswith("harvest_modes_"):
            rows.append(Row("machine", f"raw harvest, 1 GiB, {int(key.split('_')[-1]) // 1000}k"
                            " dirty: manual-protect / classic",
                            f"{_ms(r['manual_ms'])} / {_ms(r['classic_ms'])}"))
    for key, rate in m.items():
        if key.startswith("output_"):
            _, accel, label = key.split("_", 2)
            what = {"d=0": "output only (d=0)", "default": "default guest",
                    "default_logged": "default guest, dirty logging on"}.get(label, label)
            target = label in ("d=0", "default")  # machine.py prints none for the others
            rows.append(Row("machine", f"{accel} guest records/s, {what}", f"{rate / 1e3:,.0f}k/s",
                            "≥ 100k/s (issue 3)" if target else "",
                            ok=rate >= 100e3 if target else None,
                            headline=key == "output_kvm_default"))
    for key, rate in m.items():
        if key.startswith("dirty_"):
            _, accel, mode = key.split("_")
            what = ("distinct pages/s, dirty logging on" if mode == "logged"
                    else "page writes/s, logging off")
            rows.append(Row("machine", f"{accel} guest {what}", f"{rate / 1e6:.2f}M/s"))
    return rows


def qemu_seconds(v: Any) -> float | None:
    """A QEMU time of bench/migration.py's figures: seconds, or [seconds, wire bytes]."""
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return float(v) if isinstance(v, int | float) else None


def migration_rows(results: dict[str, Any]) -> list[Row]:
    g = _figures(results, "migration") or {}
    lim = g.get("limits_s", {})
    # QEMU's idle guest is compared with qmpd's "bare" guest when the run has one
    qemu = {int(k.split()[1]): qemu_seconds(v) for k, v in g.get("qemu", {}).items()}
    cmp = "bare" if any(s["name"].startswith("bare") for s in g.get("scenarios", [])) else "idle"
    qv = g.get("qemu_version") or "QEMU"
    rows = [Row("migration", "limits measured in this run (1 GiB)", "", "; ".join(
        f"{k} {'socket ' if k != 'memcpy' else ''}{v:.3f} s ({GiB / v / 1e9:.2f} GB/s)"
        for k, v in lim.items()))]
    for s in g.get("scenarios", []):
        limit_s = lim[s["kind"]] * s["mem"] / GiB
        ratio = s["seconds"] / limit_s
        idle_unix = s["name"].startswith(("idle", "bare")) and s["kind"] == "unix"
        q = qemu.get(round(s["mem"] / GiB)) if idle_unix and s["name"].startswith(cmp) else None
        limit = f"{s['kind']} socket limit {limit_s:.3f} s: {ratio:.2f}x"
        ok: bool | None = None
        if idle_unix:
            limit += " (≤ 1.5x, issue 6)" + ("; ≤ QEMU's time (issue 6)" if q is not None else "")
            ok = ratio <= 1.5 and (q is None or s["seconds"] <= q)
        if s["status"] != "completed":
            ok = False
        rows.append(Row("migration", f"{s['name']}, {s['kind']}: total time",
                        f"{s['seconds']:.3f} s ({s['status']}; downtime {s['downtime_ms']} ms,"
                        f" {s['passes']} passes, guest at {s['guest_pct']:.0f}%)",
                        limit + "; downtime-limit 300 ms",
                        f"{q:.3f} s ({qv})" if q is not None else "", ok,
                        headline=s["kind"] == "unix" and not s["name"].startswith("dirty")))
    return rows


def colo_rows(results: dict[str, Any]) -> list[Row]:
    c = _figures(results, "colo") or {}
    ck = c.get("checkpoints", {})
    qc = _figures(results, "qemu_colo") or {}
    qemu_ck = qc.get("checkpoints", {})
    rows = []
    by_pages: dict[int, dict[str, dict[str, Any]]] = {}
    for key, r in ck.items():
        pages, mode = key.split("/")
        by_pages.setdefault(int(pages), {})[mode] = r
    for pages in sorted(by_pages):
        modes = by_pages[pages]
        p, q = modes.get("pipelined"), modes.get("qemu")
        target = PAUSE_TARGET_MS.get(pages)
        if p is not None:
            limit = f"gather floor for {pages:,} pages {_ms(p['gather_ms'])}"
            if "pause_floor_ms" in p:
                pf = p["pause_floor_ms"]
                limit = (f"harvest + gather floor for {pages:,} pages {_ms(pf)} "
                         f"({p['pause_ms'] / pf:.2f}x; ~1.5x = {_ms(1.5 * pf)}, issue 6)")
            ok = True
            if target is not None:
                limit += f"; ≤ {target} ms (issue 6)"
                ok = p["pause_ms"] <= target
            if q is not None:
                limit += f"; ≤ ⅓ of QEMU-order = {_ms(q['pause_ms'] / 3)}"
                ok = ok and p["pause_ms"] <= q["pause_ms"] / 3
            qr = qemu_ck.get(str(pages))
            qtext = "" if qr is None else (
                f"{_ms(qr['pause_ms'])} ({qc.get('qemu_version', 'QEMU').split('(')[0].strip()}"
                f", STOP→RESUME, guest writing {pages:,} pages round robin, "
                f"{qr['passes_per_epoch']:.1f} passes/epoch)")
            rows.append(Row("COLO", f"primary pause, {pages:,} pages/epoch "
                            f"({p['dirty_pages_median']:,.0f} measured), pipelined",
                            _ms(p["pause_ms"]), limit, qemu=qtext, ok=ok, headline=True))
            if "stop_ms" in p:
                rows.append(Row("COLO", f"stop request → vCPU out of guest mode, {pages:,} "
                                "pages/epoch, pipelined (guest still running; not in the "
                                "pause)", _ms(p["stop_ms"]), ""))
        if q is not None:
            rows.append(Row("COLO", f"primary pause, {pages:,} pages/epoch "
                            f"({q['dirty_pages_median']:,.0f} measured), QEMU-order transaction",
                            _ms(q["pause_ms"]),
                            f"data-path floor for {pages:,} pages {_ms(q['floor_ms'])}"))
        for r, mode in ((p, "pipelined"), (q, "QEMU-order")):
            if r is None:
                continue
            rows.append(Row("COLO", f"checkpoint round trip, {pages:,} pages/epoch, {mode}",
                            _ms(r["round_trip_ms"]),
                            f"data-path floor {_ms(r['floor_ms'])} (gather + send + apply)"))
            delay = r.get("delay_ms", COLO_DELAY_MS)
            bound = r.get("release_limit_ms", delay + 1.5 * r["floor_ms"])
            rel = r.get("release_latency_ms", float("nan"))
            rows.append(Row("COLO", f"output release latency, {pages:,} pages/epoch, {mode}",
                            _ms(rel), f"≤ delay {delay} ms + 1.5 x floor = {_ms(bound)}"
                            " (issue 6)", ok=None if math.isnan(rel) else rel <= bound))
    tp = c.get("throughput")
    if tp:
        rows.append(Row("COLO", f"guest throughput under COLO, ~{tp['dirty_pages_per_epoch']:,.0f}"
                        " dirty pages per 200 ms epoch", f"{tp['ratio'] * 100:.0f}% "
                        f"({tp['colo_records_s']:,.0f} records/s)",
                        f"≥ 85% of the guest alone: {tp['alone_records_s']:,.0f} records/s "
                        "(issue 6)", ok=tp["ratio"] >= 0.85, headline=True))
    fo = sorted(c.get("failover_ms") or [])
    if fo:
        med = fo[len(fo) // 2] if len(fo) % 2 else (fo[len(fo) // 2 - 1] + fo[len(fo) // 2]) / 2
        rows.append(Row("COLO", f"failover: lost-heartbeat → first output (n={len(fo)})",
                        f"median {_ms(med)}, max {_ms(fo[-1])}",
                        "median ≤ 5 ms (issue 6), ≤ 10 ms (issue 5)",
                        "11-13 ms (QEMU 7.2, quoted in issue 6; not measured here)",
                        ok=med <= 5, headline=True))
    return rows


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[Row]]]] = {
    "qmp_throughput": ("QMP", qmp_rows),
    "machine": ("machine", machine_rows),
    "migration": ("migration", migration_rows),
    "colo": ("COLO", colo_rows),
}


def all_rows(results: dict[str, Any]) -> list[Row]:
    """Every row of every script present in ``results`` (failed scripts: one row each)."""
    rows: list[Row] = []
    runs = results.get("runs", {})
    for name, (section, fn) in SECTIONS.items():
        run = runs.get(name)
        if run is None:
            continue
        if run.get("figures") is None:
            why = "timed out" if run.get("timed_out") else f"exit {run.get('returncode')}"
            rows.append(Row(section, f"`bench/{name}.py` gave no figures ({why})", "—",
                            ok=False, headline=True))
            continue
        try:
            rows += fn(results)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as err:
            rows.append(Row(section, f"figures of `bench/{name}.py` not understood: {err!r}",
                            "—", ok=False, headline=True))
        if run.get("returncode") != 0:
            rows.append(Row(section, f"`bench/{name}.py` exit status {run.get('returncode')}",
                            "—", ok=False, headline=True))
    qemu_run = runs.get("qmp_throughput:qemu")
    if qemu_run is not None and qemu_run.get("figures") is None:
        rows.append(Row("QMP", "QEMU comparison failed", "—",
                        qemu=qemu_run.get("error") or f"exit {qemu_run.get('returncode')}"))
    return rows
