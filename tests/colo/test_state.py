"""COLO state machines: failover compare-and-set, query-colo-status, output commit."""

from __future__ import annotations

import pytest

from qmpd.colo import messages as msg
from qmpd.colo.messages import ColoMessage, ColoProtocolError
from qmpd.colo.output import OutputCommit
from qmpd.colo.state import (
    ColoExitReason,
    ColoMode,
    ColoStateError,
    FailoverState,
    FailoverStatus,
    colo_status,
)
from qmpd.errors import ColoError

F = FailoverStatus


def test_failover_happy_path_is_a_chain_of_cas() -> None:
    fs = FailoverState()
    for old, new in ((F.NONE, F.REQUIRE), (F.REQUIRE, F.ACTIVE), (F.ACTIVE, F.COMPLETED)):
        assert fs.cas(old, new) is old
        assert fs.status is new


def test_second_request_fails_the_cas_and_changes_nothing() -> None:
    fs = FailoverState()
    fs.cas(F.NONE, F.REQUIRE)
    assert fs.cas(F.NONE, F.REQUIRE) is F.REQUIRE
    assert fs.status is F.REQUIRE


@pytest.mark.parametrize(("path", "old", "new"), [
    ((), F.NONE, F.COMPLETED),                       # compare matches, edge illegal
    ((), F.REQUIRE, F.COMPLETED),                    # compare fails, edge illegal
    (((F.NONE, F.REQUIRE),), F.REQUIRE, F.NONE),
    (((F.NONE, F.REQUIRE), (F.REQUIRE, F.ACTIVE)), F.ACTIVE, F.NONE),
])
def test_an_illegal_failover_transition_raises_and_changes_nothing(
        path: tuple[tuple[FailoverStatus, FailoverStatus], ...], old: FailoverStatus,
        new: FailoverStatus) -> None:
    """Unlike a compare mismatch (which returns the status found), an edge outside the
    table is never reported as the status the caller expected: it raises."""
    fs = FailoverState()
    for a, b in path:
        fs.cas(a, b)
    before = fs.status
    with pytest.raises(ColoStateError) as info:
        fs.cas(old, new)
    assert (info.value.old, info.value.new) == (old, new)
    assert str(info.value) == (f"invalid failover status transition: "
                               f"'{old.value}' -> '{new.value}'")
    assert isinstance(info.value, ColoError)
    assert fs.status is before


def test_a_new_session_resets_a_completed_failover_only() -> None:
    fs = FailoverState()
    fs.reset()
    assert fs.status is F.NONE
    for a, b in ((F.NONE, F.REQUIRE), (F.REQUIRE, F.ACTIVE), (F.ACTIVE, F.COMPLETED)):
        fs.cas(a, b)
    fs.reset()
    assert fs.status is F.NONE
    fs.cas(F.NONE, F.REQUIRE)
    with pytest.raises(ColoStateError):
        fs.reset()
    assert fs.status is F.REQUIRE


def test_relaunch_path() -> None:
    fs = FailoverState()
    fs.cas(F.NONE, F.REQUIRE)
    fs.cas(F.REQUIRE, F.ACTIVE)
    assert fs.cas(F.ACTIVE, F.RELAUNCH) is F.ACTIVE
    assert fs.cas(F.RELAUNCH, F.NONE) is F.RELAUNCH
    assert not fs.pending()


@pytest.mark.parametrize(("failover", "outgoing", "reason"), [
    (F.NONE, True, ColoExitReason.NONE),
    (F.COMPLETED, False, ColoExitReason.REQUEST),
    (F.ACTIVE, True, ColoExitReason.PROCESSING),
    (F.REQUIRE, False, ColoExitReason.ERROR),
])
def test_query_colo_status_reason_as_qemu(failover: FailoverStatus, outgoing: bool,
                                          reason: ColoExitReason) -> None:
    st = colo_status(ColoMode.PRIMARY, ColoMode.NONE, failover, outgoing)
    assert st.to_qmp() == {"mode": "primary", "last-mode": "none", "reason": reason.value}


def test_output_is_released_only_through_the_acknowledged_epoch() -> None:
    out: list[bytes] = []
    commit = OutputCommit(out.append)
    commit.hold(1, b"a")
    commit.hold(2, b"b")
    commit.hold(3, b"")
    assert commit.held_bytes == 2
    assert commit.release_through(1) == 1
    assert out == [b"a"]
    commit.hold(3, b"c")
    assert commit.release_all() == 2
    assert out == [b"a", b"bc"]
    assert commit.held_bytes == 0


def test_message_framing_is_big_endian_u32_and_u64() -> None:
    assert msg.encode(ColoMessage.CHECKPOINT_READY) == b"\0\0\0\0"
    assert msg.encode(ColoMessage.VMSTATE_LOADED) == b"\0\0\0\x06"
    assert msg.encode_size(0x0102) == b"\0\0\0\x04" + b"\0" * 6 + b"\x01\x02"
    assert ColoMessage.VMSTATE_RECEIVED.qapi_name == "vmstate-received"


def test_invalid_message_index_has_qemus_text() -> None:
    with pytest.raises(ColoProtocolError, match=r"^colo_receive_message: Invalid message$"):
        msg.decode(b"\0\0\0\x07")
