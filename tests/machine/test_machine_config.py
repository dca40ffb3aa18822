"""Configuration parsing and bad input: one-line errors, nothing half-built."""

from __future__ import annotations

import os
import time

import pytest

from qmpd.errors import ConfigError, MachineError
from qmpd.machine import GuestConfig, Machine, MachineConfig
from qmpd.machine.config import GiB, MiB, host_memory_bytes, parse_guest
from qmpd.machine.errors import KvmUnavailableError, MachineConfigError
from qmpd.machine.kvm import Kvm
from qmpd.options import parse_accel, parse_mem


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize(("text", "size"), [
    ("512M", 512 * MiB), ("4G", 4 * GiB), ("128", 128 * MiB), ("1.5G", 1536 * MiB),
    ("size=2G", 2 * GiB), ("262144k", 256 * MiB), ("1T", 1 << 40)])
def test_parse_mem(text: str, size: int) -> None:
    assert parse_mem(text) == size


@pytest.mark.parametrize("text", ["garbage", "", "-1", "12Q", "0", "0M", "1.2.3G"])
def test_parse_mem_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mem(text)
    assert one_line(err) in ("Parameter 'size' expects a non-negative number below 2^64",
                             "memory size must be greater than zero")


def test_sizes_machines_cannot_have() -> None:
    for mem, word in [(0, "greater than zero"), (3 * MiB, "multiple of 2M"),
                      (host_memory_bytes() + 2 * GiB, "host"),
                      (16 * MiB, "does not fit")]:
        config = MachineConfig(mem_bytes=mem, guest=GuestConfig(wss_bytes=64 * MiB))
        with pytest.raises(MachineConfigError) as err:
            Machine(config)
        assert word in one_line(err)


def test_parse_accel_and_guest() -> None:
    assert parse_accel("kvm") == "kvm"
    assert parse_accel("accel=tcg") == "tcg"
    assert parse_accel("kvm:tcg") == "kvm:tcg"
    g = parse_guest("counter,wss=64M,dirty=100,pace=1000,check=8,batch=4")
    assert g == GuestConfig(64 * MiB, 100, 1000, 8, 4)
    for bad, text in [("xen", "invalid accelerator xen"), ("kvm,foo", "Invalid parameter 'foo'")]:
        with pytest.raises(ConfigError) as err:
            parse_accel(bad)
        assert one_line(err) == text
    for bad, text in [
            ("linux", "unknown guest program (expected counter)"),
            ("counter,wss=1X", "Parameter 'wss' expects a non-negative number below 2^64"),
            ("counter,dirty=abc", "Parameter 'dirty' expects a number"),
            ("counter,speed=3", "Invalid parameter 'speed'"),
            ("counter,wss=0", "wss must be a positive multiple of 4K, not 0"),
            ("counter,dirty=-1", "dirty=-1 is out of range")]:
        with pytest.raises(MachineConfigError) as err:
            parse_guest(bad)
        assert one_line(err) == f"-guest {bad}: {text}"


def test_missing_kvm_device_is_a_clear_error() -> None:
    with pytest.raises(KvmUnavailableError) as err:
        Kvm("/dev/nonexistent-kvm")
    assert one_line(err) == "KVM is not available: /dev/nonexistent-kvm: No such file or directory"
    assert isinstance(err.value, MachineError)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
def test_4g_guest_starts_fast_and_costs_only_touched_pages() -> None:
    rss0 = rss_kib()
    t0 = time.monotonic()
    with Machine(MachineConfig(mem_bytes=4 * GiB, accel="kvm")) as m:
        started = time.monotonic() - t0
        m.resume()
        time.sleep(0.05)
        m.pause()
        assert m.output.drain().startswith(b"seq=0 ")
        grown_kib = rss_kib() - rss0
    assert started < 1.0
    assert grown_kib < 64 * 1024  # 16M working set + ring + tables, not 4G
