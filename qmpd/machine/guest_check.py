"""Verifying the counter guest's output from the output alone (docs/INTERFACES.md).

Users: tests, the demo, COLO/migration tests. Step n writes pages ``c mod W`` for
``c = n*d .. n*d+d-1`` (first u64 := n+1); the record after step n is
``seq=<n> sum=<16 hex>`` where sum = Σ first u64 over the W pages (mod 2^64).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_MASK = (1 << 64) - 1
_RECORD = re.compile(r"^seq=(\d+) sum=([0-9a-f]{16})$")


def expected_sum(n: int, d: int, w: int) -> int:
    """The sum after step ``n``: Σ_{c=max(0,T-W)}^{T-1} (c//d + 1) mod 2^64, T=(n+1)*d."""
    if d == 0 or w <= 0:
        return 0
    t = (n + 1) * d
    return (_prefix(t, d) - _prefix(max(0, t - w), d)) & _MASK


def _prefix(x: int, d: int) -> int:
    """Σ_{c=0}^{x-1} (c//d + 1)."""
    q, r = divmod(x, d)
    return d * q * (q + 1) // 2 + r * (q + 1)


@dataclass
class StreamReport:
    """What :func:`verify_stream` found."""

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)      # (expected, got)
    repeats: list[int] = field(default_factory=list)               # seq seen again/backwards
    bad_sums: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, got, expected)
    malformed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No gap, repeat, bad sum or malformed line."""
        return not (self.gaps or self.repeats or self.bad_sums or self.malformed)

    def __str__(self) -> str:
        return (f"{self.records} records seq {self.first_seq}..{self.last_seq}: "
                f"{len(self.gaps)} gaps {self.gaps[:3]}, {len(self.repeats)} repeats "
                f"{self.repeats[:3]}, {len(self.bad_sums)} bad sums {self.bad_sums[:3]}, "
                f"{len(self.malformed)} malformed {self.malformed[:3]}")


def verify_stream(lines: Iterable[str | bytes], d: int = 16, w: int = 4096,
                  start: int | None = None) -> StreamReport:
    """Check records for order (each seq = previous + 1, first = ``start`` if given) and
    sums (``expected_sum(seq, d, w)``; defaults are GuestConfig's). Empty lines are skipped."""
    report = StreamReport()
    expect = start
    for raw in lines:
        line = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line:
            continue
        match = _RECORD.match(line)
        if not match:
            report.malformed.append(line[:80])
            continue
        seq, got = int(match.group(1)), match.group(2)
        report.records += 1
        if report.first_seq is None:
            report.first_seq = seq
        if expect is not None and seq != expect:
            if seq < expect:
                report.repeats.append(seq)
            else:
                report.gaps.append((expect, seq))
        want = f"{expected_sum(seq, d, w):016x}"
        if got != want:
            report.bad_sums.append((seq, got, want))
        report.last_seq = seq
        expect = seq + 1
    return report
