"""Turn a ``bench/results/<date>.json`` into a Markdown table, PNG plots and the README section.

Every row puts one figure next to the limit or target it is judged against (the limits are
measured in the same run by the scripts themselves) and, where the run had one, QEMU's figure
from the same run. The plots need matplotlib (``pip install -e '.[bench]'``); without it the
table is still written and the plots are skipped with a message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.rows import Row, all_rows, machine_line, qemu_seconds

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
PLOTS = {"pause": "checkpoint-pause", "migration": "migration-time", "failover": "failover"}


def _ok(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def table(rows: list[Row]) -> str:
    out = ["| benchmark | figure | qmpd | limit / target (same run) | QEMU (same run) | meets |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.section} | {r.figure} | {r.value} | {r.limit} | {r.qemu} | "
                   f"{_ok(r.ok)} |")
    return "\n".join(out)


def runs_summary(results: dict[str, Any]) -> str:
    out = []
    for name, r in results.get("runs", {}).items():
        rc = r.get("returncode")
        state = ("timed out" if r.get("timed_out") else
                 r.get("error") or ("ok" if rc == 0 else f"exit {rc}"))
        if rc == 0 and r.get("figures") is None:
            state = "ok, but no --json figures"
        la, lb = r.get("loadavg_before"), r.get("loadavg_after")
        load = f", load {la[0]:.1f} → {lb[0]:.1f}" if la and lb else ""
        out.append(f"- `{name}` ({' '.join(r.get('argv', []))}): {state}, "
                   f"{r.get('seconds', 0):.0f} s{load}")
    return "\n".join(out)


def markdown(results: dict[str, Any], plots: list[Path]) -> str:
    rows = all_rows(results)
    kind = "quick run (`bench/run --quick`)" if results.get("quick") else "full run (`bench/run`)"
    parts = [
        f"# Benchmarks {results.get('date', '?')}",
        "",
        f"{kind}, {results.get('started', '?')} → {results.get('finished', '?')}, "
        f"commit {results.get('git_commit') or '?'}.",
        "",
        f"Machine: {machine_line(results.get('machine', {}))}.",
        "",
        "Limits are measured by each script in the same run on the same machine; QEMU figures "
        "too, when `qemu-system-x86_64` is installed. \"meets\" compares with the target of "
        "the issue named in the limit column.",
        "",
        table(rows),
        "",
        "## Runs",
        "",
        runs_summary(results),
    ]
    if plots:
        parts += ["", "## Plots", ""]
        parts += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plots
def _finish(plt: Any, fig: Any, ax: Any, path: Path, title: str, which: str = "major",
            loc: str = "best") -> bool:
    """Title, grid and legend as every plot has them; write the PNG and close it."""
    ax.set_title(title)
    ax.grid(True, which=which, alpha=0.3)
    ax.legend(fontsize=8, loc=loc)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_pause(plt: Any, results: dict[str, Any], path: Path) -> bool:
    colo = (results["runs"].get("colo") or {}).get("figures") or {}
    ck = colo.get("checkpoints") or {}
    if not ck:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, style in (("pipelined", "o-"), ("qemu", "s--")):
        pts = sorted((v["dirty_pages_median"], v["pause_ms"]) for k, v in ck.items()
                     if k.endswith("/" + mode))
        if pts:
            label = "qmpd pipelined" if mode == "pipelined" else "qmpd, QEMU-order transaction"
            ax.plot(*zip(*pts, strict=True), style, label=label)
    floor = sorted((v["dirty_pages_median"], v["gather_ms"]) for k, v in ck.items()
                   if k.endswith("/pipelined") and "gather_ms" in v)
    if floor:
        ax.plot(*zip(*floor, strict=True), "k:", label="floor: gather (same run)")
    mach = (results["runs"].get("machine") or {}).get("figures") or {}
    harv = sorted((d, mach[f"harvest_1g_{d}"]["harvest_ms"]) for d in (1000, 10000, 100000)
                  if f"harvest_1g_{d}" in mach)
    if harv:
        ax.plot(*zip(*harv, strict=True), "c:", label="dirty-log harvest, 1 GiB (same run)")
    ax.plot([1000, 10000, 100000], [0.6, 8, 50], "rx", markersize=9, label="target (issue 6)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dirty pages per checkpoint (measured median)")
    ax.set_ylabel("primary pause per checkpoint, ms (median)")
    return _finish(plt, fig, ax, path, "COLO checkpoint pause vs dirty pages", which="both")


def _plot_migration(plt: Any, results: dict[str, Any], path: Path) -> bool:
    mig = (results["runs"].get("migration") or {}).get("figures") or {}
    scen = mig.get("scenarios") or []
    if not scen:
        return False
    gib = float(1 << 30)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, kind, style in (("bare", "unix", "v-"), ("idle", "unix", "o-"),
                                ("idle", "tcp", "o--"), ("full", "unix", "s-"),
                                ("full", "tcp", "s--")):
        pts = sorted((s["mem"] / gib, s["seconds"]) for s in scen
                     if s["name"].startswith(prefix) and s["kind"] == kind)
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"qmpd {prefix}, {kind}")
    sizes = sorted({s["mem"] / gib for s in scen})
    lim = mig.get("limits_s") or {}
    for kind, style in (("unix", "k:"), ("tcp", "k-.")):
        if kind in lim:
            ax.plot([0, *sizes], [0, *(lim[kind] * x for x in sizes)], style,
                    label=f"{kind} socket limit (same run)")
    q = sorted((float(k.split()[1]), qemu_seconds(v)) for k, v in (mig.get("qemu") or {}).items()
               if qemu_seconds(v) is not None)
    if q:
        ax.plot(*zip(*q, strict=True), "r^", markersize=9,
                label=f"QEMU {mig.get('qemu_version') or ''} idle, unix (same run)")
    ax.set_xlabel("guest RAM, GiB")
    ax.set_ylabel("total migration time, s")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    return _finish(plt, fig, ax, path, "Live migration time vs guest size")


def _plot_failover(plt: Any, results: dict[str, Any], path: Path) -> bool:
    colo = (results["runs"].get("colo") or {}).get("figures") or {}
    fo = sorted(colo.get("failover_ms") or [])
    if not fo:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    n = len(fo)
    ax.step([0, *fo], [0, *((i + 1) / n for i in range(n))], where="post",
            label=f"qmpd (n={n})")
    ax.plot(fo, [0.02] * n, "|", color="C0", markersize=14)
    ax.axvline(5, color="r", linestyle="--", label="target ≤ 5 ms median (issue 6)")
    ax.axvspan(11, 13, color="grey", alpha=0.3, label="QEMU 7.2: 11-13 ms (issue 6, not this run)")
    ax.set_xlabel("x-colo-lost-heartbeat → first output record, ms")
    ax.set_ylabel("fraction of failovers")
    ax.set_xlim(left=0, right=max(14.0, fo[-1] * 1.1))
    ax.set_ylim(0, 1.05)
    return _finish(plt, fig, ax, path, "COLO failover latency distribution", loc="lower right")


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    written = []
    date = results.get("date", "results")
    for key, draw in (("pause", _plot_pause), ("migration", _plot_migration),
                      ("failover", _plot_failover)):
        path = out / f"{date}-{PLOTS[key]}.png"
        try:
            if draw(plt, results, path):
                written.append(path)
        except (KeyError, TypeError, ValueError) as err:
            print(f"plot {path.name} skipped: {err!r}")
    return written


def render(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``<date>.md`` and the plots into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(results, out)
    md = out / f"{results.get('date', 'results')}.md"
    md.write_text(markdown(results, pngs))
    return [md, *pngs]


# --------------------------------------------------------------------------- README
def readme_section(results: dict[str, Any], src: Path, readme: Path) -> str:
    """The generated part of the README's performance section."""
    rel = Path("bench") / "results"
    date = results.get("date", "?")
    kind = "`bench/run --quick`" if results.get("quick") else "`bench/run`"
    heads = [r for r in all_rows(results) if r.headline]
    plots_md = [f"[{v.replace('-', ' ')}]({rel}/{date}-{v}.png)" for v in PLOTS.values()
                if (src.parent / f"{date}-{v}.png").exists()]
    lines = [
        "### All benchmarks: latest run",
        "",
        "`bench/run` runs every benchmark script (`bench/qmp_throughput.py`, "
        "`bench/machine.py`, `bench/migration.py`, `bench/colo.py`, and with QEMU "
        "`bench/qemu_colo.py`) and writes "
        "`bench/results/<date>.json`, a Markdown table and PNG plots; `bench/run --quick` "
        "takes a few minutes. It installs nothing: for the plots `pip install -e '.[bench]'`"
        " (matplotlib), for the side-by-side QEMU figures `apt-get install qemu-system-x86`"
        " (QEMU's COLO pause also needs binutils' `as` and `ld`, which come with gcc, to "
        "build its tiny guest). "
        "`bench/run --update-readme` regenerates this section from the newest results file.",
        "",
        f"Latest: {kind} on {date} ({results.get('started', '?')}), commit "
        f"{results.get('git_commit') or '?'}, on {machine_line(results.get('machine', {}))}. "
        f"Full table: [{rel}/{date}.md]({rel}/{date}.md)"
        + (f"; plots: {', '.join(plots_md)}." if plots_md else "."),
        "",
        table(heads),
    ]
    return "\n".join(lines)


def update_readme(readme: Path, src: Path) -> None:
    """Replace the text between the bench markers (added at the end of "## Performance")."""
    import json

    results = json.loads(src.read_text())
    text = readme.read_text()
    block = f"{START}\n{readme_section(results, src, readme)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        m = re.search(r"^## Performance\b.*?(?=^## |\Z)", text, flags=re.M | re.S)
        if m is None:
            text = text.rstrip("\n") + "\n\n## Performance\n\n" + block + "\n"
        else:
            end = m.end()
            text = text[:end].rstrip("\n") + "\n\n" + block + "\n" + (
                "\n" + text[end:] if text[end:] else "")
    readme.write_text(text)
