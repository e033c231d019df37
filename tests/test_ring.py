"""Single-process semantics of OneToOneRing and ManyToOneRing (real mapped files)."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest

import lockstep
from lockstep import (
    ClosedError,
    ControlledAction,
    FileFormatError,
    InvalidArgumentError,
    LockstepError,
    ManyToOneRing,
    OneToOneRing,
)

TRAILER = 768
HEADER = 8


def align8(n: int) -> int:
    return (n + 7) & ~7


def record_bytes(payload_length: int) -> int:
    return align8(payload_length + HEADER)


@pytest.fixture(params=[OneToOneRing, ManyToOneRing], ids=["one_to_one", "many_to_one"])
def ring_cls(request):
    return request.param


@pytest.fixture
def ring(ring_cls, lsdir):
    r = ring_cls(lsdir / "ring", 1024)
    yield r
    r.close()


def collect(ring, limit=None):
    out = []

    def handler(msg_type_id, data):
        out.append((msg_type_id, bytes(data)))

    n = ring.read(handler) if limit is None else ring.read(handler, limit)
    assert n == len(out)
    return out


# -- basics -------------------------------------------------------------------------------

def test_new_ring_file(ring, lsdir):
    assert ring.capacity == 1024
    assert ring.max_message_length == 128
    assert ring.size() == 0
    assert ring.producer_position == ring.consumer_position == 0
    st = os.stat(lsdir / "ring")
    assert st.st_size == 1024 + TRAILER
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert collect(ring) == []


def test_write_read_intact_and_in_order(ring):
    messages = [(i % 5 + 1, bytes([i]) * (i % 40)) for i in range(20)]
    for t, m in messages:
        assert ring.write(t, m) is True
    assert collect(ring) == messages
    assert collect(ring) == []
    assert ring.size() == 0


def test_input_buffer_types(ring):
    arr = np.arange(6, dtype=np.int32)
    inputs = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"memoryview"),
        memoryview(bytearray(b"0123456789"))[2:7],
        arr,
        np.frombuffer(b"uint8 view", dtype=np.uint8),
        b"",
    ]
    for data in inputs:
        assert ring.write(7, data)
    got = collect(ring)
    assert got == [(7, bytes(memoryview(d).tobytes())) for d in inputs]
    assert got[4][1] == arr.tobytes()  # numpy: its bytes, not its element count


def test_non_contiguous_numpy_is_rejected_and_nothing_written(ring):
    with pytest.raises((ValueError, TypeError)):
        ring.write(1, np.arange(10, dtype=np.int64)[::2])
    assert ring.size() == 0


def test_handler_data_is_a_view_of_the_payload(ring):
    ring.write(3, b"\x01\x02\x03\x04")
    seen = []

    def handler(t, data):
        assert isinstance(data, memoryview)
        seen.append((len(data), data[0], data[-1]))

    assert ring.read(handler) == 1
    assert seen == [(4, 1, 4)]


def test_read_limit(ring):
    for i in range(10):
        ring.write(1, bytes([i]))
    assert [m for _, m in collect(ring, 3)] == [b"\x00", b"\x01", b"\x02"]
    assert [m for _, m in collect(ring, 1)] == [b"\x03"]
    assert ring.read(lambda t, d: None, 0) == 0
    assert [m for _, m in collect(ring)] == [bytes([i]) for i in range(4, 10)]


def test_read_more_than_one_batch(ring_cls, lsdir):
    # read() hands messages over in C batches of 256; a read must see across batches.
    with ring_cls(lsdir / "big", 64 * 1024) as r:
        for i in range(1000):
            assert r.write(1, i.to_bytes(4, "little"))
        got = collect(r, 600)
        assert [int.from_bytes(m, "little") for _, m in got] == list(range(600))
        got = collect(r)
        assert [int.from_bytes(m, "little") for _, m in got] == list(range(600, 1000))


def test_full_ring_back_pressures_and_overwrites_nothing(ring):
    payload = 56  # record = 64 bytes, so exactly 16 fit in 1024
    written = 0
    while ring.write(1, written.to_bytes(2, "little") * (payload // 2)):
        written += 1
    assert written == 1024 // record_bytes(payload)
    assert ring.size() == ring.capacity
    assert ring.write(1, b"") is False  # even an empty message needs 8 bytes
    assert ring.try_claim(1, 0) is None
    assert ring.producer_position == 1024
    got = collect(ring)
    assert [m for _, m in got] == [i.to_bytes(2, "little") * (payload // 2) for i in range(written)]
    # Once consumed there is room again.
    assert ring.write(1, b"again")
    assert collect(ring) == [(1, b"again")]


def test_space_frees_as_consumed(ring):
    for i in range(16):
        assert ring.write(1, bytes(56))
    assert not ring.write(1, bytes(56))
    assert len(collect(ring, 1)) == 1
    assert ring.write(1, bytes(56))
    assert not ring.write(1, bytes(56))


def test_max_message_length(ring):
    assert ring.max_message_length == ring.capacity // 8
    big = bytes(range(128))
    assert ring.write(1, big)
    assert collect(ring) == [(1, big)]
    with pytest.raises(InvalidArgumentError, match="length"):
        ring.write(1, bytes(129))
    with pytest.raises(InvalidArgumentError):
        ring.try_claim(1, 129)
    assert issubclass(InvalidArgumentError, LockstepError)
    assert ring.size() == 0


@pytest.mark.parametrize("type_id", [0, -1, -5])
def test_msg_type_id_below_one_rejected(ring, type_id):
    with pytest.raises(InvalidArgumentError, match="msg_type_id"):
        ring.write(type_id, b"x")
    with pytest.raises(InvalidArgumentError, match="msg_type_id"):
        ring.try_claim(type_id, 4)
    assert ring.size() == 0


def test_out_of_range_arguments_are_lockstep_errors(ring):
    with pytest.raises(InvalidArgumentError):
        ring.write(2**31, b"x")
    with pytest.raises(InvalidArgumentError):
        ring.try_claim(1, -1)
    assert ring.size() == 0


def test_wrap_around_with_padding_many_times(ring):
    # 3 records of 24..136 bytes per step with odd lengths force padding at the end
    # over many laps; every message must come back intact.
    lengths = [13, 100, 1, 77, 128, 0, 55]
    expected = []
    seq = 0
    for _ in range(400):
        batch = []
        for _ in range(3):
            n = lengths[seq % len(lengths)]
            msg = (seq.to_bytes(4, "little") * 40)[:n]
            assert ring.write(seq % 9 + 1, msg)
            batch.append((seq % 9 + 1, msg))
            seq += 1
        expected += batch
        assert collect(ring) == batch
    assert ring.producer_position > 50 * ring.capacity
    assert ring.producer_position == ring.consumer_position
    assert ring.size() == 0


def test_padding_is_used_when_a_record_does_not_fit_at_the_end(ring):
    for _ in range(9):
        assert ring.write(1, bytes(96))  # 104-byte records
    assert ring.write(1, bytes(56))  # 64 -> tail at index 1000, 24 bytes to the end
    assert len(collect(ring)) == 10
    assert ring.producer_position == 1000
    # A 32-byte record cannot fit in the last 24 bytes: a 24-byte padding record fills
    # them and the message goes to index 0.
    assert ring.write(2, b"w" * 24)
    assert ring.size() == 24 + 32
    assert ring.producer_position == 1000 + 24 + 32
    assert collect(ring) == [(2, b"w" * 24)]
    assert ring.consumer_position == ring.producer_position


def test_wrap_needs_room_at_the_start(ring):
    for _ in range(9):
        assert ring.write(1, bytes(96))
    assert ring.write(1, bytes(56))  # tail at index 1000, 24 free bytes before index 0
    assert len(collect(ring, 1)) == 1  # head at 104: only 104 bytes free at the start
    assert ring.size() == 1000 - 104
    # 128 bytes total free (24 at the end + 104 at the start) but a 112-byte record must
    # fit contiguously at index 0: it does not.
    assert ring.write(3, bytes(100)) is False
    assert ring.write(3, bytes(96)) is True  # a 104-byte record does
    got = collect(ring)
    assert got[-1] == (3, bytes(96))
    assert len(got) == 10


# -- claims ---------------------------------------------------------------------------------

def test_try_claim_commit(ring):
    claim = ring.try_claim(5, 10)
    assert isinstance(claim, lockstep.RingClaim)
    assert len(claim.buffer) == 10
    claim.buffer[:] = b"0123456789"
    assert collect(ring) == []  # not visible before commit
    claim.commit()
    assert collect(ring) == [(5, b"0123456789")]


def test_try_claim_abort_leaves_nothing(ring):
    ring.write(1, b"before")
    claim = ring.try_claim(5, 10)
    claim.buffer[:] = b"xxxxxxxxxx"
    ring.write(1, b"after")  # queued behind the claim
    claim.abort()
    assert collect(ring) == [(1, b"before"), (1, b"after")]
    assert ring.size() == 0


def test_claim_finished_twice_is_an_error(ring):
    claim = ring.try_claim(1, 4)
    claim.commit()
    with pytest.raises(LockstepError):
        claim.commit()
    with pytest.raises(LockstepError):
        claim.abort()
    assert collect(ring) == [(1, bytes(4))]


def test_claim_context_manager_commits_on_success(ring):
    with ring.try_claim(9, 3) as claim:
        claim.buffer[:] = b"abc"
    assert collect(ring) == [(9, b"abc")]


def test_claim_context_manager_aborts_on_exception(ring):
    with pytest.raises(RuntimeError):
        with ring.try_claim(9, 3) as claim:
            claim.buffer[:] = b"abc"
            raise RuntimeError("boom")
    ring.write(1, b"next")
    assert collect(ring) == [(1, b"next")]


def test_claims_commit_out_of_order(ring):
    a = ring.try_claim(1, 4)
    b = ring.try_claim(2, 4)
    a.buffer[:] = b"AAAA"
    b.buffer[:] = b"BBBB"
    b.commit()
    assert collect(ring) == []  # a is still in progress at the head
    a.commit()
    assert collect(ring) == [(1, b"AAAA"), (2, b"BBBB")]


def test_claim_wraps_with_padding(ring):
    for _ in range(9):
        assert ring.write(1, bytes(100))  # 112-byte records
    collect(ring)
    assert ring.producer_position % 1024 == 1008  # 16 bytes to the end
    claim = ring.try_claim(4, 128)
    assert claim is not None
    assert claim.index == HEADER  # payload right after a record header at index 0
    claim.buffer[:] = bytes(range(128))
    claim.commit()
    assert collect(ring) == [(4, bytes(range(128)))]
    assert ring.producer_position == 1024 + record_bytes(128)


# -- controlled read -----------------------------------------------------------------------

def fill(ring, n):
    for i in range(n):
        assert ring.write(1, bytes([i]))


def controlled(ring, actions, limit=None):
    """Run a controlled read whose handler returns actions[i] for the i-th message."""
    seen = []

    def handler(t, data):
        seen.append(data[0])
        return actions[len(seen) - 1]

    n = ring.controlled_read(handler) if limit is None else ring.controlled_read(handler, limit)
    return n, seen


def remaining(ring):
    return [m[0] for _, m in collect(ring)]


def test_controlled_read_continue(ring):
    fill(ring, 5)
    C = ControlledAction.CONTINUE
    assert controlled(ring, [C] * 5) == (5, [0, 1, 2, 3, 4])
    assert remaining(ring) == []


def test_controlled_read_abort_keeps_the_message(ring):
    fill(ring, 5)
    C, A = ControlledAction.CONTINUE, ControlledAction.ABORT
    assert controlled(ring, [C, C, A]) == (2, [0, 1, 2])
    assert remaining(ring) == [2, 3, 4]


def test_controlled_read_abort_first(ring):
    fill(ring, 3)
    assert controlled(ring, [ControlledAction.ABORT]) == (0, [0])
    assert ring.consumer_position == 0
    assert remaining(ring) == [0, 1, 2]


def test_controlled_read_break_consumes_and_stops(ring):
    fill(ring, 5)
    C, B = ControlledAction.CONTINUE, ControlledAction.BREAK
    assert controlled(ring, [C, B]) == (2, [0, 1])
    assert remaining(ring) == [2, 3, 4]


def test_controlled_read_commit_consumes_immediately(ring):
    fill(ring, 5)
    C, M = ControlledAction.CONTINUE, ControlledAction.COMMIT
    positions = []

    def handler(t, data):
        positions.append(ring.consumer_position)
        return [C, M, C, C, C][data[0]]

    assert ring.controlled_read(handler) == 5
    # After COMMIT of message 1 the consumer position already moved past messages 0 and 1.
    assert positions[:2] == [0, 0]
    assert positions[2] == positions[3] == positions[4] == 2 * record_bytes(1)
    assert remaining(ring) == []


def test_controlled_read_commit_then_abort(ring):
    fill(ring, 5)
    C, M, A = ControlledAction.CONTINUE, ControlledAction.COMMIT, ControlledAction.ABORT
    assert controlled(ring, [C, M, C, A]) == (3, [0, 1, 2, 3])
    assert remaining(ring) == [3, 4]


def test_controlled_read_limit(ring):
    fill(ring, 5)
    C = ControlledAction.CONTINUE
    assert controlled(ring, [C] * 5, limit=2) == (2, [0, 1])
    assert remaining(ring) == [2, 3, 4]


# -- handler errors ------------------------------------------------------------------------

class Boom(Exception):
    pass


def test_read_handler_raising(ring):
    fill(ring, 6)
    seen = []

    def handler(t, data):
        seen.append(data[0])
        if data[0] == 2:
            raise Boom

    with pytest.raises(Boom):
        ring.read(handler)
    assert seen == [0, 1, 2]
    # Up to and including the failing message are consumed; later ones are still there.
    assert remaining(ring) == [3, 4, 5]


def test_controlled_read_handler_raising(ring):
    fill(ring, 6)
    seen = []

    def handler(t, data):
        seen.append(data[0])
        if data[0] == 3:
            raise Boom
        return ControlledAction.COMMIT if data[0] == 1 else ControlledAction.CONTINUE

    with pytest.raises(Boom):
        ring.controlled_read(handler)
    assert seen == [0, 1, 2, 3]
    assert remaining(ring) == [4, 5]


def test_handler_raising_on_first_message(ring):
    fill(ring, 2)

    def handler(t, data):
        raise Boom

    with pytest.raises(Boom):
        ring.read(handler)
    assert remaining(ring) == [1]


# -- state ---------------------------------------------------------------------------------

def test_size_and_positions(ring):
    assert ring.write(1, bytes(5))  # 16
    assert ring.write(1, bytes(8))  # 16
    assert ring.write(1, bytes(9))  # 24
    assert ring.size() == 56
    assert ring.producer_position == 56
    assert ring.consumer_position == 0
    collect(ring, 1)
    assert ring.size() == 40
    assert ring.consumer_position == 16
    collect(ring)
    assert ring.size() == 0
    assert ring.consumer_position == ring.producer_position == 56


def test_next_correlation_id_is_unique_and_shared(ring_cls, lsdir):
    with ring_cls(lsdir / "corr", 1024) as a, ring_cls(lsdir / "corr") as b:
        ids = [a.next_correlation_id(), b.next_correlation_id(), a.next_correlation_id()]
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert ids[2] - ids[0] == 2


def test_heartbeat(ring_cls, lsdir):
    with ring_cls(lsdir / "hb", 1024) as consumer, ring_cls(lsdir / "hb") as producer:
        assert producer.consumer_heartbeat_time == 0
        consumer.heartbeat(123456789)
        assert producer.consumer_heartbeat_time == 123456789
        before = int(time.time() * 1000)
        consumer.heartbeat()
        after = int(time.time() * 1000)
        assert before <= producer.consumer_heartbeat_time <= after


def test_repr(ring):
    assert "capacity=1024" in repr(ring)
    ring.close()
    assert "closed" in repr(ring)


# -- files ---------------------------------------------------------------------------------

def test_reopen_by_path_sees_the_data(ring_cls, lsdir):
    path = lsdir / "reopen"
    with ring_cls(path, 2048) as w:
        w.write(3, b"persisted")
        w.write(4, b"too")
    with ring_cls(path) as r:
        assert r.capacity == 2048
        assert collect(r) == [(3, b"persisted"), (4, b"too")]
    with ring_cls(path, 2048) as r:  # same capacity given: opens the existing one
        assert r.size() == 0
        assert r.consumer_position == r.producer_position > 0


def test_two_handles_same_process(ring_cls, lsdir):
    with ring_cls(lsdir / "shared", 1024) as producer, ring_cls(lsdir / "shared") as consumer:
        producer.write(1, b"hello")
        assert collect(consumer) == [(1, b"hello")]
        assert producer.size() == 0


def test_one_to_one_and_many_to_one_share_the_format(lsdir):
    with OneToOneRing(lsdir / "fmt", 1024) as a:
        a.write(1, b"spsc")
    with ManyToOneRing(lsdir / "fmt") as b:
        assert collect(b) == [(1, b"spsc")]
        b.write(2, b"mpsc")
    with OneToOneRing(lsdir / "fmt") as a:
        assert collect(a) == [(2, b"mpsc")]


def test_capacity_mismatch_on_reopen(ring_cls, lsdir):
    path = lsdir / "mismatch"
    ring_cls(path, 1024).close()
    with pytest.raises(FileFormatError) as info:
        ring_cls(path, 4096)
    assert str(path) in str(info.value)
    assert "capacity" in str(info.value)
    assert info.value.path == str(path)


@pytest.mark.parametrize("capacity", [0, 32, 1000, 1023, 3 * 1024, -1024, 2**31])
def test_bad_capacity_on_create(ring_cls, lsdir, capacity):
    with pytest.raises(InvalidArgumentError, match="capacity"):
        ring_cls(lsdir / "bad", capacity)
    assert not (lsdir / "bad").exists()


def test_opening_missing_path_without_capacity(ring_cls, lsdir):
    with pytest.raises(LockstepError) as info:
        ring_cls(lsdir / "missing")
    assert "missing" in str(info.value)
    assert not (lsdir / "missing").exists()


def test_close_and_context_manager(ring_cls, lsdir):
    path = lsdir / "closing"
    with ring_cls(path, 1024) as r:
        assert not r.closed
        r.write(1, b"x")
    assert r.closed
    r.close()  # idempotent
    assert path.exists()  # the file stays for other processes
    with ring_cls(path) as again:
        assert collect(again) == [(1, b"x")]


def test_use_after_close_raises_closed_error(ring_cls, lsdir):
    r = ring_cls(lsdir / "closed", 1024)
    claim = r.try_claim(1, 4)
    r.close()
    assert isinstance(r, ring_cls) and type(r).__name__ == ring_cls.__name__
    for call in (lambda: r.write(1, b"x"), lambda: r.read(lambda t, d: None), r.size,
                 lambda: r.capacity, lambda: r.try_claim(1, 1), r.unblock, r.next_correlation_id,
                 lambda: r.controlled_read(lambda t, d: ControlledAction.CONTINUE), claim.commit):
        with pytest.raises(ClosedError):
            call()
