"""Dirty logging reports exactly the pages the guest wrote."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qmpd.machine import Machine, MachineStateError, layout
from qmpd.machine.guest_check import verify_stream

from .conftest import MachineFactory, MiB, read_records

SLOTS = layout.RING_SLOTS
WS0 = layout.WS_GPA // 4096
RING_PAGES = set(range(layout.RING_GPA // 4096,
                       (layout.RING_GPA + SLOTS * layout.SLOT_BYTES) // 4096))


def run_until_blocked(m: Machine, prod: int) -> None:
    """Resume; wait until the guest has filled the ring up to ``prod`` and blocks; pause."""
    hdr = m.pages[layout.RING_HDR_GPA // 4096].view(np.uint64)
    m.resume()
    deadline = time.monotonic() + 20
    while hdr[0] < prod and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.02)
    m.pause()
    assert int(hdr[0]) == prod


def test_dirty_log_matches_the_guest_pattern(make_machine: MachineFactory) -> None:
    """Output never drained → the guest fills the ring and blocks at a known point.

    Phase 1 (not logged): steps 0..SLOTS-1 emitted, step SLOTS wrote its pages and waits;
    the pause drains the ring. Phase 2 (logged): steps SLOTS..2*SLOTS-1 emit, step 2*SLOTS
    writes its pages and waits. With d=1, W=32768 it wrote WS pages (c mod W) for
    c in [SLOTS+1, 2*SLOTS+1), every ring page, and the ring header — nothing else.
    """
    # A fixed batch: the VMM then never rewrites the config page (see the copy test).
    m = make_machine(mem=132 * MiB, wss_bytes=128 * MiB, dirty_pages=1, check_every=0,
                     batch=64)
    w = 128 * MiB // 4096
    m.output.soft_cap = 0  # the vCPU thread does not drain: backpressure
    run_until_blocked(m, SLOTS)
    assert len(m.output.drain()) > 0  # pause drains past the cap
    m.dirty_log_start()
    run_until_blocked(m, 2 * SLOTS)
    got = m.dirty_log_harvest()
    assert got.dtype == np.uint64
    expected = {WS0 + c % w for c in range(SLOTS + 1, 2 * SLOTS + 1)}
    expected |= RING_PAGES | {layout.RING_HDR_GPA // 4096}
    assert set(got.tolist()) == expected
    assert got.tolist() == sorted(got.tolist())
    assert m.dirty_log_harvest().size == 0  # nothing is written while paused
    m.dirty_log_stop()


def test_harvest_is_incremental(make_machine: MachineFactory) -> None:
    """A second epoch reports the pages written in it, not those of the first."""
    m = make_machine(mem=64 * MiB, wss_bytes=48 * MiB, dirty_pages=3, pace=20000)
    read_records(m, 5)
    m.dirty_log_start()
    n1 = int(read_records(m, 20)[-1].split()[0][4:])
    first = set(m.dirty_log_harvest().tolist())
    assert {WS0 + c for c in range(3 * (n1 - 1), 3 * (n1 + 1))} <= first
    n2 = int(read_records(m, 20)[-1].split()[0][4:])
    second = set(m.dirty_log_harvest().tolist())
    assert n2 > n1 + 2
    assert 3 * (n2 + 1) < 48 * MiB // 4096  # no wrap-around in the working set
    assert {WS0 + c for c in range(3 * (n1 + 2), 3 * (n2 + 1))} <= second
    assert not second & {WS0 + c for c in range(3 * n1)}
    m.dirty_log_stop()


def test_dirty_log_calls_in_the_wrong_state(make_machine: MachineFactory) -> None:


    m = make_machine()
    with pytest.raises(MachineStateError, match="not started"):
        m.dirty_log_harvest()
    m.dirty_log_stop()  # no-op
    m.dirty_log_start()
    m.dirty_log_start()  # restart = clear
    assert m.dirty_logging
    m.reset()
    assert m.dirty_log_harvest().size == m.npages  # reset rewrote all of RAM
    assert m.dirty_log_harvest().size == 0
    m.dirty_log_stop()
    assert not m.dirty_logging


def test_dirty_log_start_harvest_stop_while_running(make_machine: MachineFactory) -> None:
    m = make_machine(pace=20000)
    m.resume()
    time.sleep(0.01)
    m.dirty_log_start()
    running = m.dirty_log_harvest()
    deadline = time.monotonic() + 10
    while (running.size == 0 or running[-1] < WS0) and time.monotonic() < deadline:
        time.sleep(0.01)
        running = m.dirty_log_harvest()
    assert WS0 <= int(running[-1]) < WS0 + 1024
    assert m.running
    m.dirty_log_stop()
    m.pause()
    assert not m.dirty_logging


def test_doorbell_batch_follows_dirty_logging(make_machine: MachineFactory) -> None:
    """Auto batch: large without logging (cheap steps), small with it (faulting steps);
    only the doorbell timing changes, the output stream stays intact."""
    m = make_machine()
    word = m.pages[layout.CONFIG_GPA // 4096].view(np.uint64)[layout.CONFIG_BATCH_WORD]
    assert word == m.config.guest.effective_batch() == 256
    lines = read_records(m, 1000)
    m.dirty_log_start()
    batch = int(m.pages[layout.CONFIG_GPA // 4096].view(np.uint64)[layout.CONFIG_BATCH_WORD])
    assert batch == m.config.guest.effective_batch(dirty_logging=True) < 16
    lines += read_records(m, 1000)
    m.dirty_log_stop()
    assert m.pages[layout.CONFIG_GPA // 4096].view(np.uint64)[layout.CONFIG_BATCH_WORD] == 256
    lines += read_records(m, 1000)
    assert verify_stream(lines, d=16, w=1024, start=0).ok


def test_copy_kept_by_harvests_equals_ram(make_machine: MachineFactory) -> None:
    """The migration/COLO invariant: full copy, then only harvested pages each epoch ->
    identical RAM (the VMM's own writes, e.g. the doorbell batch word, are reported)."""
    src = make_machine(pace=2000)
    copy = src.pages.copy()
    src.dirty_log_start()
    for _ in range(3):
        read_records(src, 300)
        idx = src.dirty_log_harvest().astype(np.intp)
        copy[idx] = src.pages[idx]
        assert np.array_equal(copy, src.pages)
    src.dirty_log_stop()
