"""GuestOutput, the buffer between the vCPU thread and its readers: drain and take."""

from __future__ import annotations

from qmpd.machine.output import GuestOutput


def test_take_hands_over_the_bytes_and_leaves_an_empty_buffer() -> None:
    out = GuestOutput()
    out.append(b"seq=0 \n")
    out.append(b"seq=1 \n")
    taken = out.take()
    assert taken == bytearray(b"seq=0 \nseq=1 \n")
    assert len(out) == 0 and out.drain() == b""
    out.append(b"seq=2 \n")
    assert taken == bytearray(b"seq=0 \nseq=1 \n")  # what was taken is not touched again
    assert out.drain() == b"seq=2 \n"


def test_the_first_append_after_a_take_notifies_again() -> None:
    out = GuestOutput()
    calls: list[int] = []
    out.set_notify(lambda: calls.append(1))
    out.append(b"a")
    out.append(b"b")  # not empty before: no second notification
    assert calls == [1]
    out.take()
    out.append(b"c")
    assert calls == [1, 1]


def test_take_makes_room_under_the_soft_cap() -> None:
    out = GuestOutput(soft_cap=4)
    out.append(b"12345")
    assert out.full()
    out.take()
    assert not out.full() and out.wait_space(0.0)
