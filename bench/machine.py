#!/usr/bin/env python3
"""Machine benchmark: pause/resume, dirty-log harvest, guest output and dirty rates.

Every figure is printed beside a limit measured in the same run on this host:

- memcpy bandwidth (np.copyto of 256 MiB) and an empty KVM_RUN exit round trip (a guest
  that only does ``out``), the floors for output and exits;
- raw harvest: KVM_GET_DIRTY_LOG (+ KVM_CLEAR_DIRTY_LOG when manual protect is on) issued
  with fcntl directly, plus the numpy decode, on the same machine and dirty pages as the
  Machine.dirty_log_harvest figure it is compared with.

Targets (issue 3): harvest <= 2x raw; output >= 100k records/s; a 4 GiB guest starts in
< 1 s and costs only the pages it touches.

Usage: ``python bench/machine.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import time
from typing import Any, cast

import numpy as np

from qmpd.machine import GuestConfig, Machine, MachineConfig, layout
from qmpd.machine.accel_kvm import KvmAccel
from qmpd.machine.config import GiB, MiB
from qmpd.machine.dirty import decode_bitmap
from qmpd.machine.guest import guest_image
from qmpd.machine.kvm import Kvm
from qmpd.machine.kvm import ioctls as k
from qmpd.machine.kvm.exits import IoOut
from qmpd.machine.memory import GuestRam

HAS_KVM = os.path.exists("/dev/kvm")
RESULTS: dict[str, Any] = {}


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p)) if xs else float("nan")


def show(name: str, value: str, limit: str = "") -> None:
    print(f"  {name:<44} {value:>24}   {limit}")


# --------------------------------------------------------------------------- floors
def memcpy_gbs(size: int = 256 * MiB, reps: int = 5) -> float:
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return size / min(times) / 1e9


def empty_exit_us(n: int = 3000) -> float:
    """Median KVM_RUN round trip for a guest that only does `out` (no Machine, no thread)."""
    kvm = Kvm()
    vm = kvm.create_vm()
    ram = GuestRam(4 * MiB)
    vm.set_user_memory_region(0, 0, ram.size, ram.host_addr)  # ram outlives vm (closed below)
    layout.write_boot_image(ram.flat, ram.size, GuestConfig(wss_bytes=4096), b"\xee\xeb\xfd")
    cpu = vm.create_vcpu(0)
    cpu.set_cpuid2(kvm.supported_cpuid())
    cpu.set_sregs(layout.boot_sregs(cpu.get_sregs()))
    cpu.set_regs(layout.boot_regs())
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        cpu.run()
        times.append(time.perf_counter() - t0)
    cpu.close()
    vm.close()
    kvm.close()
    ram.close()
    return statistics.median(times) * 1e6


# --------------------------------------------------------------------------- pause/resume
def pause_resume(accel: str, guest: GuestConfig, n: int) -> dict[str, float]:
    pauses, resumes = [], []
    with Machine(MachineConfig(mem_bytes=64 * MiB, accel=accel, guest=guest)) as m:
        for _ in range(n):
            t0 = time.perf_counter()
            m.resume()
            resumes.append(time.perf_counter() - t0)
            time.sleep(0.002)
            t0 = time.perf_counter()
            m.pause()
            pauses.append(time.perf_counter() - t0)
            m.output.drain()
    us = 1e6
    return {"pause_p50_us": pct(pauses, 50) * us, "pause_p90_us": pct(pauses, 90) * us,
            "pause_p99_us": pct(pauses, 99) * us, "pause_max_us": max(pauses) * us,
            "resume_p50_us": pct(resumes, 50) * us, "resume_p99_us": pct(resumes, 99) * us}


def state_times(accel: str, n: int) -> tuple[float, float]:
    """Median save_state / load_state of a paused machine (us)."""
    saves, loads = [], []
    with Machine(MachineConfig(mem_bytes=64 * MiB, accel=accel)) as m:
        m.resume()
        time.sleep(0.02)
        m.pause()
        for _ in range(n):
            t0 = time.perf_counter()
            blob = m.save_state()
            t1 = time.perf_counter()
            m.load_state(blob)
            loads.append(time.perf_counter() - t1)
            saves.append(t1 - t0)
    return statistics.median(saves) * 1e6, statistics.median(loads) * 1e6


# --------------------------------------------------------------------------- dirty log
def raw_harvest(m: Machine) -> np.ndarray:
    """KVM_GET_DIRTY_LOG (+ CLEAR) with fcntl and the decode, bypassing the Machine."""
    accel = cast(KvmAccel, m._accel)  # the bench compares against the bare ioctls
    bitmap = accel._bitmap  # owned by accel, alive across the ioctls
    addr = int(bitmap.ctypes.data)
    fcntl.ioctl(accel.vm.fd, k.KVM_GET_DIRTY_LOG, k.KvmDirtyLog(slot=0, dirty_bitmap=addr))
    if accel.manual_protect:
        fcntl.ioctl(accel.vm.fd, k.KVM_CLEAR_DIRTY_LOG, k.KvmClearDirtyLog(
            slot=0, num_pages=m.npages, first_page=0, dirty_bitmap=addr))
    return decode_bitmap(bitmap)


def harvest(mem: int, dirty: int, reps: int) -> dict[str, float]:
    """The guest writes exactly its working set (``dirty`` pages) in every step."""
    guest = GuestConfig(wss_bytes=dirty * 4096, dirty_pages=dirty, check_every=0, batch=1)
    ours: list[float] = []
    raw: list[float] = []
    counts: list[int] = []
    with Machine(MachineConfig(mem_bytes=mem, accel="kvm", guest=guest)) as m:
        m.resume()
        done = 0
        while done < 2:  # first touch of every page
            time.sleep(0.01)
            done += m.output.drain().count(b"\n")
        m.pause()
        m.dirty_log_start()
        for i in range(2 * reps):
            m.resume()
            done, deadline = 0, time.perf_counter() + 20
            while done < 2 and time.perf_counter() < deadline:  # >= one whole step
                time.sleep(0.002 + dirty * 1e-6)
                done += m.output.drain().count(b"\n")
            m.pause()
            m.output.drain()
            t0 = time.perf_counter()
            pages = raw_harvest(m) if i % 2 else m.dirty_log_harvest()
            (raw if i % 2 else ours).append(time.perf_counter() - t0)
            counts.append(len(pages))
        m.dirty_log_stop()
    return {"harvest_ms": statistics.median(ours) * 1e3, "raw_ms": statistics.median(raw) * 1e3,
            "pages": float(statistics.median(counts))}


def harvest_modes(mem: int, dirty: int, reps: int) -> dict[str, float]:
    """KvmAccel without the vCPU thread: one guest step (all ``dirty`` pages) per doorbell,
    then harvest, in manual-protect (GET + CLEAR) and classic (GET) mode (ms, medians)."""
    out: dict[str, float] = {}
    guest = GuestConfig(wss_bytes=dirty * 4096, dirty_pages=dirty, check_every=0, batch=1)
    for manual in (True, False):
        ram = GuestRam(mem)
        layout.write_boot_image(ram.flat, ram.size, guest, guest_image())
        acc = KvmAccel(ram, manual_protect=manual)
        acc.boot()
        times = []
        try:
            acc.dirty_log_start()
            for i in range(reps + 2):
                while not isinstance(acc.run(), IoOut):
                    pass
                t0 = time.perf_counter()
                acc.dirty_log_harvest()
                if i >= 2:  # the first steps also pay first touch
                    times.append(time.perf_counter() - t0)
        finally:
            acc.close()
            ram.close()
        out["manual_ms" if manual else "classic_ms"] = statistics.median(times) * 1e3
    return out


# --------------------------------------------------------------------------- rates
def output_rate(accel: str, guest: GuestConfig, seconds: float,
                logging: bool = False) -> float:
    """Records/s; with ``logging`` the dirty log is on and harvested every 200 ms (as
    during migration or COLO: write-protect faults, smaller doorbell batches)."""
    with Machine(MachineConfig(mem_bytes=64 * MiB, accel=accel, guest=guest)) as m:
        if logging:
            m.dirty_log_start()
        m.resume()
        time.sleep(0.05)
        m.output.drain()
        t0 = last = time.perf_counter()
        records = 0
        while time.perf_counter() - t0 < seconds:
            time.sleep(0.01)
            records += m.output.drain().count(b"\n")
            if logging and time.perf_counter() - last >= 0.2:
                m.dirty_log_harvest()
                last = time.perf_counter()
        m.pause()
        elapsed = time.perf_counter() - t0
        records += m.output.drain().count(b"\n")
    return records / elapsed


def dirty_rate(accel: str, seconds: float, logging: bool) -> float:
    """Pages/s the guest dirties at full speed: d=4096 per step over a 256 MiB working set
    (THP-backed), after a warm-up of two full passes (first touch costs ~30 us a page).

    Logging off: page writes/s (steps x d). Logging on: distinct dirty pages per 50 ms
    epoch / 50 ms (each page pays a write-protect fault once per epoch; an epoch covers
    less than the working set, so this is the fault-bound rate).
    """
    d, wss = 4096, 256 * MiB
    guest = GuestConfig(wss_bytes=wss, dirty_pages=d, check_every=0)
    per_epoch: list[int] = []
    config = MachineConfig(mem_bytes=wss + 4 * MiB, accel=accel, guest=guest, hugepages=True)
    with Machine(config) as m:
        m.resume()
        warm, deadline = 0, time.perf_counter() + 20
        while warm * d < 2 * wss // 4096 and time.perf_counter() < deadline:
            time.sleep(0.05)
            warm += m.output.drain().count(b"\n")
        m.pause()
        m.output.drain()
        if logging:
            m.dirty_log_start()
        m.resume()
        t0 = time.perf_counter()
        records = 0
        while time.perf_counter() - t0 < seconds:
            time.sleep(0.05)
            records += m.output.drain().count(b"\n")
            if logging:
                t_h = time.perf_counter()
                per_epoch.append(len(m.dirty_log_harvest()))
                per_epoch[-1] = int(per_epoch[-1] / (0.05 + time.perf_counter() - t_h) * 0.05)
        m.pause()
        elapsed = time.perf_counter() - t0
        records += m.output.drain().count(b"\n")
    if logging:
        return statistics.median(per_epoch[1:]) / 0.05
    return records * d / elapsed


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


def start_4g() -> tuple[float, float]:
    rss0 = rss_mib()
    t0 = time.perf_counter()
    m = Machine(MachineConfig(mem_bytes=4 * GiB, accel="kvm"))
    started = time.perf_counter() - t0
    m.resume()
    time.sleep(0.1)
    grown = rss_mib() - rss0
    m.close()
    return started, grown


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    n_pause = 50 if args.quick else 300
    reps = 5 if args.quick else 9
    secs = 0.5 if args.quick else 1.5
    accels = ["kvm", "tcg"] if HAS_KVM else ["tcg"]

    print("limits measured in this run")
    RESULTS["memcpy_gbs"] = gbs = memcpy_gbs()
    show("memcpy bandwidth (np.copyto 256 MiB)", f"{gbs:.1f} GB/s")
    if HAS_KVM:
        RESULTS["empty_exit_us"] = exit_us = empty_exit_us()
        show("empty KVM_RUN exit round trip (median)", f"{exit_us:.1f} us",
             f"=> <= {1e6 / exit_us / 1e3:.0f}k exits/s")
        started, rss = start_4g()
        RESULTS["start_4g_s"], RESULTS["start_4g_rss_mib"] = started, rss
        show("4 GiB guest: Machine() start", f"{started * 1e3:.0f} ms", "target < 1000 ms")
        show("4 GiB guest: RSS growth after 0.1 s run", f"{rss:.0f} MiB",
             "target: touched pages only (~16 MiB wss)")

    print("\npause / resume latency (request answered by the vCPU thread)")
    for accel in accels:
        for label, guest in [("spinning, no exits", GuestConfig(pace=10**15, batch=1)),
                             ("output-heavy", GuestConfig())]:
            r = pause_resume(accel, guest, n_pause)
            RESULTS[f"pause_{accel}_{label.split(',')[0]}"] = r
            show(f"{accel} {label}: pause p50/p90/p99/max",
                 f"{r['pause_p50_us']:.0f}/{r['pause_p90_us']:.0f}/{r['pause_p99_us']:.0f}/"
                 f"{r['pause_max_us']:.0f} us",
                 f"resume p50/p99 {r['resume_p50_us']:.0f}/{r['resume_p99_us']:.0f} us")

    for accel in accels:
        save_us, load_us = state_times(accel, n_pause)
        RESULTS[f"state_{accel}_us"] = [save_us, load_us]
        show(f"{accel} save_state / load_state (median)", f"{save_us:.0f} / {load_us:.0f} us",
             "5,304-byte blob")

    if HAS_KVM:
        print("\ndirty-log harvest (Machine.dirty_log_harvest vs raw ioctls + decode)")
        for mem in (1 * GiB, 4 * GiB):
            for dirty in (1000, 10000, 100000):
                r = harvest(mem, dirty, reps)
                RESULTS[f"harvest_{mem >> 30}g_{dirty}"] = r
                ratio = r["harvest_ms"] / r["raw_ms"]
                show(f"{mem >> 30} GiB, {dirty // 1000}k dirty ({r['pages']:.0f} reported)",
                     f"{r['harvest_ms']:.3f} ms",
                     f"raw {r['raw_ms']:.3f} ms, ratio {ratio:.2f} (target <= 2)")
        print("  raw ioctl + decode, no vCPU thread: manual protect (GET+CLEAR) vs classic GET")
        for dirty in (1000, 10000, 100000):
            r = harvest_modes(1 * GiB, dirty, reps)
            RESULTS[f"harvest_modes_1g_{dirty}"] = r
            show(f"1 GiB, {dirty // 1000}k dirty: manual / classic",
                 f"{r['manual_ms']:.3f} / {r['classic_ms']:.3f} ms")

    print("\nguest output and dirtying at full speed")
    for accel in accels:
        for label, guest in [("d=0 (output only)", GuestConfig(dirty_pages=0, check_every=0)),
                             ("default (d=16, W=4096, check=64)", GuestConfig())]:
            rate = output_rate(accel, guest, secs)
            RESULTS[f"output_{accel}_{label.split()[0]}"] = rate
            show(f"{accel} records/s, {label}", f"{rate / 1e3:.0f}k/s", "target >= 100k/s")
        rate = output_rate(accel, GuestConfig(), secs, logging=True)
        RESULTS[f"output_{accel}_default_logged"] = rate
        show(f"{accel} records/s, default, dirty logging on", f"{rate / 1e3:.0f}k/s",
             f"batch {GuestConfig().effective_batch(dirty_logging=True)} per doorbell")
    for accel in accels:
        for logging in (False, True):
            rate = dirty_rate(accel, secs, logging)
            RESULTS[f"dirty_{accel}_{'logged' if logging else 'unlogged'}"] = rate
            what = "distinct pages/s, logging on" if logging else "page writes/s, logging off"
            show(f"{accel} {what}", f"{rate / 1e6:.2f}M/s",
                 f"= {0.2 * rate / 1e3:.0f}k pages per 200 ms" if logging else "")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
