"""The vCPU throttle (migration's auto-converge; QEMU's cpu_throttle_set/_stop).

At ``pct`` percent the vCPU sleeps ``pct/(100-pct)`` of each 10 ms timeslice: the guest
makes proportionally less progress, requests (pause, harvest, snapshot) are answered
while it sleeps, and at 0 it runs as before. Rates are compared with each other in the
same test (ratios with a wide margin), never with a fixed duration.
"""

from __future__ import annotations

import time

from qmpd.machine import Machine
from qmpd.machine.guest_check import verify_stream

from .conftest import MachineFactory

WINDOW = 0.5


def _records_in_window(m: Machine, lines: list[bytes]) -> int:
    """Records the running guest emits in one window (appended to ``lines``)."""
    lines += m.output.drain().splitlines()
    before = len(lines)
    end = time.monotonic() + WINDOW
    while time.monotonic() < end:
        time.sleep(0.01)
        lines += m.output.drain().splitlines()
    return len(lines) - before


def test_throttle_slows_the_guest_and_lifting_it_restores_the_rate(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=200_000, dirty_pages=4)
    lines: list[bytes] = []
    m.resume()
    assert m.cpu_throttle_percentage == 0
    base = _records_in_window(m, lines)
    m.set_cpu_throttle(95)  # sleeps 190 ms per 10 ms run: a twentieth of the rate
    assert m.cpu_throttle_percentage == 95
    throttled = _records_in_window(m, lines)
    m.set_cpu_throttle(0)
    assert m.cpu_throttle_percentage == 0
    after = _records_in_window(m, lines)
    m.pause()
    lines += m.output.drain().splitlines()
    assert 0 < throttled * 4 < base and throttled * 4 < after, (base, throttled, after)
    report = verify_stream(lines, d=4, w=4 * 1024 * 1024 // 4096, start=0)
    assert report.ok, str(report)


def test_percentages_clamp_as_qemu_and_requests_are_answered_while_asleep(
        make_machine: MachineFactory) -> None:
    m = make_machine(pace=200_000, dirty_pages=4)
    m.set_cpu_throttle(150)
    assert m.cpu_throttle_percentage == 99  # CPU_THROTTLE_PCT_MAX
    m.set_cpu_throttle(-5)
    assert m.cpu_throttle_percentage == 1  # CPU_THROTTLE_PCT_MIN
    m.set_cpu_throttle(99)  # asleep 990 ms of every second
    lines: list[bytes] = []
    m.resume()
    m.dirty_log_start()
    for _ in range(5):  # harvests (SYNC), pauses and resumes reach a sleeping vCPU
        lines += m.output.drain().splitlines()
        m.dirty_log_harvest()
        m.pause()
        m.resume()
    m.dirty_log_stop()
    m.set_cpu_throttle(0)
    lines += m.output.drain().splitlines()
    n = len(lines)
    deadline = time.monotonic() + 10
    while len(lines) < n + 50 and time.monotonic() < deadline:
        time.sleep(0.01)
        lines += m.output.drain().splitlines()
    m.pause()
    lines += m.output.drain().splitlines()
    assert len(lines) >= n + 50
    assert m.cpu_throttle_percentage == 0
    report = verify_stream(lines, d=4, w=4 * 1024 * 1024 // 4096, start=0)
    assert report.ok, str(report)
