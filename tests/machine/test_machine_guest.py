"""The guest program's build and its output checker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from qmpd.machine.guest_check import expected_sum, verify_stream

REPO = Path(__file__).resolve().parents[2]


def brute_sum(n: int, d: int, w: int) -> int:
    pages = [0] * w
    for step in range(n + 1):
        for c in range(step * d, step * d + d):
            pages[c % w] = step + 1
    return sum(pages) % (1 << 64)


@given(st.integers(0, 300), st.integers(0, 20), st.integers(1, 200))
def test_expected_sum_matches_a_simulation(n: int, d: int, w: int) -> None:
    assert expected_sum(n, d, w) == brute_sum(n, d, w)


def test_verify_stream_reports_gaps_repeats_bad_sums() -> None:
    lines = [f"seq={n} sum={expected_sum(n, 16, 4096):016x}" for n in range(10)]
    assert verify_stream(lines, start=0).ok
    assert verify_stream(lines).records == 10
    gap = verify_stream(lines[:3] + lines[5:])
    assert gap.gaps == [(3, 5)] and not gap.ok
    rep = verify_stream(lines[:5] + lines[3:])
    assert rep.repeats == [3] and not rep.ok
    bad = verify_stream([*lines[:2], "seq=2 sum=0000000000000000", "junk"])
    assert [b[0] for b in bad.bad_sums] == [2] and bad.malformed == ["junk"]
    assert verify_stream([b"seq=0 sum=0000000000000010\n", b""]).ok


def test_guest_builds_from_a_clean_clone(tmp_path: Path) -> None:
    """A fresh clone (no cache, no committed binary) assembles the guest on first use."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--local", str(REPO), str(clone)], check=True)
    assert not list(clone.rglob("*.bin"))
    src_in_clone = clone / "qmpd/machine/guest/counter.S"
    if not src_in_clone.exists():  # this checkout's guest is not committed yet
        src_in_clone.parent.mkdir(parents=True, exist_ok=True)
        for name in ("counter.S", "__init__.py"):
            (src_in_clone.parent / name).write_bytes(
                (REPO / "qmpd/machine/guest" / name).read_bytes())
    cache = tmp_path / "cache"
    code = ("import qmpd.machine.guest as g; img = g.guest_image(); "
            "print(g.__file__); print(len(img))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(clone),
                              "QMPD_CACHE_DIR": str(cache)}).stdout.split()
    assert out[0].startswith(str(clone))
    assert int(out[1]) > 100
    assert len(list(cache.glob("counter-*.bin"))) == 1
