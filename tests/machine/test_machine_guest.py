"""The guest program (shipped assembled, agrees with its source) and its output checker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmpd.machine.guest import IMAGE, build
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


def test_committed_guest_is_its_source_assembled() -> None:
    """counter.bin (shipped) is byte for byte what `make guest` makes of counter.S."""
    if missing := build.missing_tools():
        reason = f"binutils' {' and '.join(missing)} not found: cannot re-assemble counter.S"
        assert not os.environ.get("CI"), reason
        print(f"skipped: {reason}")
        pytest.skip(reason)
    assert build.assemble() == IMAGE.read_bytes()


def test_a_clean_clone_loads_the_guest_without_binutils(tmp_path: Path) -> None:
    """A fresh clone (no cache, no build step) has the assembled guest; no `as` on PATH."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--local", str(REPO), str(clone)], check=True)
    code = ("import qmpd.machine.guest as g; img = g.guest_image(); "
            "print(g.__file__); print(len(img))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path,
                         env={"PATH": str(tmp_path / "nothing"), "HOME": str(tmp_path),
                              "PYTHONPATH": str(clone)}).stdout.split()
    assert out == [str(clone / "qmpd/machine/guest/__init__.py"), str(len(IMAGE.read_bytes()))]
