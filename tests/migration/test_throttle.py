"""auto-converge's rule (qmpd.migration.throttle) against QEMU 7.2's migration/ram.c.

Fed synthetic syncs (pages dirtied, bytes transferred, instants) through a real
MigrationConfig, the throttle must follow QEMU's exact sequence: nothing before two
periods of more than a second with dirtied > threshold % of transferred, then initial,
+ increment, capped at max-cpu-throttle (tailslow: no more than what brings the dirty
rate to the threshold); lifted by stop. E2E over QMP: tests/migration/test_converge.py.
"""

from __future__ import annotations

import pytest

from qmpd.migration.config import MigrationConfig
from qmpd.migration.throttle import AutoConverge, next_percentage

PAGE = 4096


def _run(params: dict[str, object], periods: list[tuple[int, int]],
         auto_converge: bool = True) -> tuple[AutoConverge, list[int]]:
    """One sync per period (1.5 s apart) with (pages dirtied, bytes transferred in it)."""
    cfg = MigrationConfig()
    cfg.set_capabilities([{"capability": "auto-converge", "state": auto_converge}])
    cfg.set_parameters(params)
    applied: list[int] = []
    ac = AutoConverge(cfg, PAGE, applied.append)
    now, sent = 100.0, 0
    ac.sync(0, sent, now)  # setup
    for dirtied, xfer in periods:
        now += 0.5
        ac.sync(dirtied // 2, sent, now)  # within the period: only summed
        sent += xfer
        now += 1.0
        ac.sync(dirtied - dirtied // 2, sent, now)
    return ac, applied


HIGH = (2000, 1000 * PAGE)  # dirtied twice what was transferred


def test_defaults_20_then_plus_10_every_second_high_period_capped_at_99() -> None:
    ac, applied = _run({}, [HIGH] * 22)
    assert applied == [20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99]
    assert ac.percentage == 99
    ac.stop()
    assert applied[-1] == 0 and ac.percentage == 0


def test_low_periods_do_not_reset_the_count_and_never_trigger() -> None:
    low = (400, 1000 * PAGE)  # 40 % of transferred: under the 50 % threshold
    _, applied = _run({}, [HIGH, low, low, HIGH, HIGH, low, HIGH])
    assert applied == [20, 30]
    _, applied = _run({"throttle-trigger-threshold": 30}, [low, low])
    assert applied == [20]


def test_parameters_initial_increment_max() -> None:
    _, applied = _run({"cpu-throttle-initial": 10, "cpu-throttle-increment": 80,
                       "max-cpu-throttle": 85}, [HIGH] * 6)
    assert applied == [10, 85, 85]


def test_tailslow_steps_toward_the_threshold() -> None:
    _, applied = _run({"cpu-throttle-tailslow": True}, [HIGH] * 8)
    # 20, then min(10, cpu_now - cpu_now * 0.5/2 = 80 - 20 = 60) = +10 ...
    assert applied == [20, 30, 40, 50]
    mild = (1100, 1000 * PAGE)  # 1.1x: ideal cpu = cpu_now * 0.5/1.1
    _, applied = _run({"cpu-throttle-tailslow": True, "throttle-trigger-threshold": 100},
                      [mild] * 6)
    # threshold 100 %: cpu_now 80 -> ideal int(80/1.1) = 72: +8; then 72 -> 65: +7
    assert applied == [20, 28, 35]


def test_without_the_capability_nothing_happens() -> None:
    ac, applied = _run({}, [HIGH] * 6, auto_converge=False)
    assert applied == [] and ac.percentage == 0
    ac.stop()
    assert applied == []


@pytest.mark.parametrize(("current", "expected"), [(0, 1), (98, 99), (99, 99)])
def test_clamped_to_1_99_as_cpu_throttle_set(current: int, expected: int) -> None:
    assert next_percentage(current, initial=0, increment=5, maximum=120, tailslow=False,
                           dirty_bytes=2, threshold_bytes=1) == expected
