"""Publication -> Subscription in one process, over real mapped log buffers: what a user of
the stream API depends on (every message intact and in order, header fields, statuses,
fragmentation, claims, batches, rotation, back-pressure, late join, close)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import lockstep
from helpers import run_python
from lockstep import (ADMIN_ACTION, BACK_PRESSURED, CLOSED, NOT_CONNECTED, InvalidArgumentError, Publication,
                      Subscription)
from lockstep.transport.client import TYPE_SUBSCRIBER_POSITION, client_for

SMALL_TERM = 64 * 1024
STREAM = 1001


def align32(n: int) -> int:
    return (n + 31) & ~31


def span(length: int, mtu: int = 1408) -> int:
    """Bytes a message of `length` takes in the log (spec §3: frames of <= mtu, each aligned)."""
    payload = mtu - 32
    if length <= payload:
        return align32(length + 32)
    full, rest = divmod(length, payload)
    return full * mtu + (align32(rest + 32) if rest else 0)


def wait_images(sub: Subscription, count: int = 1, timeout: float = 30.0) -> None:
    """Poll (housekeeping discovers logs every 100 ms) until `count` images are attached."""
    deadline = time.monotonic() + timeout
    while sub.image_count < count:
        assert time.monotonic() < deadline, f"{sub}: {sub.image_count} of {count} images after {timeout} s"
        assert sub.poll(lambda d, h: pytest.fail("unexpected message"), 10) == 0
        time.sleep(0.01)


def collect(sub: Subscription, expected: int, *, timeout: float = 30.0, limit: int = 100) -> list[tuple[bytes, dict]]:
    """Poll until `expected` messages came (copies of payload and header); fail on a stall."""
    out: list[tuple[bytes, dict]] = []
    handler = lambda data, header: out.append((bytes(data), header.as_dict()))  # noqa: E731
    last = time.monotonic()
    while len(out) < expected:
        if sub.poll(handler, min(limit, expected - len(out))):
            last = time.monotonic()
        elif time.monotonic() - last > timeout:
            raise AssertionError(f"no message for {timeout} s: {len(out)} of {expected}")
        else:
            time.sleep(0.0005)
    return out


def settle(sub: Subscription) -> None:
    """Poll through two housekeeping periods and require that nothing more arrives."""
    end = time.monotonic() + 0.25
    while time.monotonic() < end:
        assert sub.poll(lambda d, h: pytest.fail(f"unexpected message {bytes(d)[:16]!r}"), 10) == 0
        time.sleep(0.01)


def offer(pub: Publication, data, timeout: float = 10.0) -> int:
    """Offer, retrying ADMIN_ACTION (retry at once) and NOT_CONNECTED until a subscriber shows."""
    deadline = time.monotonic() + timeout
    while True:
        result = pub.offer(data)
        if result > 0:
            return result
        assert result in (ADMIN_ACTION, NOT_CONNECTED), lockstep.status_name(result)
        assert time.monotonic() < deadline, f"offer: {lockstep.status_name(result)} for {timeout} s"
        time.sleep(0.001)


def msg(i: int, length: int | None = None) -> bytes:
    """Message i: its index, then bytes that depend on i (length varies with i by default)."""
    length = (i * 37) % 300 + 8 if length is None else length
    body = bytes((i * 31 + j) & 0xFF for j in range(length - 8))
    return i.to_bytes(8, "little") + body


@pytest.fixture(params=[True, False], ids=["exclusive", "shared"])
def exclusive(request) -> bool:
    return request.param


def connected_pair(exclusive: bool, term_length: int = SMALL_TERM, **sub_kwargs):
    pub = Publication(STREAM, exclusive=exclusive, term_length=term_length)
    sub = Subscription(STREAM, **sub_kwargs)
    wait_images(sub)
    return pub, sub


# -- basic round trip -----------------------------------------------------------------------------

def test_offer_poll_round_trip_with_header_fields(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        assert pub.is_connected
        sent = [msg(i) for i in range(100)]  # within the window: no polling needed
        positions = [offer(pub, m) for m in sent]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert pub.position == positions[-1]
        got = collect(sub, len(sent))
        settle(sub)
        log = pub.log
        previous = 0
        for (data, h), m, position in zip(got, sent, positions):
            assert data == m
            assert h["position"] == position
            assert h["session_id"] == pub.session_id == log.session_id
            assert h["stream_id"] == STREAM
            assert h["flags"] == 0xC0
            # The first frame's (term id, term offset) is where the message starts.
            start = log.position(h["term_id"], h["term_offset"])
            assert start == position - span(len(m))
            assert start == previous  # nothing between consecutive messages (no rotation yet)
            previous = position
        assert sub.images[0].position == positions[-1]


def test_not_connected_without_subscriber(lsdir, exclusive):
    with Publication(STREAM, exclusive=exclusive, term_length=SMALL_TERM) as pub:
        assert pub.offer(b"nobody listens") == NOT_CONNECTED
        assert not pub.is_connected
        claim = pub.try_claim(16)
        assert not claim and claim.status == NOT_CONNECTED
        assert pub.offer_many([b"a", b"b"]) == (0, NOT_CONNECTED)
        assert pub.position == 0
        # A subscriber of another stream does not connect it.
        with Subscription(STREAM + 1) as other:
            other.poll(lambda d, h: None)
            time.sleep(0.12)
            assert pub.offer(b"still nobody") == NOT_CONNECTED


def test_fragmented_message_is_reassembled(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        mtu = pub.log.mtu_length
        assert pub.max_payload_length == mtu - 32
        assert pub.max_message_length == SMALL_TERM // 8
        sizes = [pub.max_payload_length, pub.max_payload_length + 1, 2 * pub.max_payload_length,
                 3 * mtu, 5000, pub.max_message_length]
        sent = [msg(i, n) for i, n in enumerate(sizes)]
        positions = [offer(pub, m) for m in sent]
        got = collect(sub, len(sent))
        for (data, h), m, position in zip(got, sent, positions):
            assert data == m
            assert h["flags"] == 0xC0  # reassembled: a whole message
            assert h["position"] == position
            assert pub.log.position(h["term_id"], h["term_offset"]) == position - span(len(m), mtu)
        # The frames in the file really are fragments: BEGIN, middle, END.
        frames = [f for f in pub.log.frames() if f.type_name == "DATA"]
        expected_flags = []
        for n in sizes:
            count = -(-n // pub.max_payload_length)
            expected_flags += [0xC0] if count == 1 else [0x80] + [0x00] * (count - 2) + [0x40]
        assert [f.flags for f in frames] == expected_flags
        assert all(f.frame_length <= mtu for f in frames)


def test_message_over_max_length_is_refused(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        before = pub.position
        with pytest.raises(InvalidArgumentError):
            pub.offer(b"x" * (pub.max_message_length + 1))
        with pytest.raises(InvalidArgumentError):
            pub.try_claim(pub.max_payload_length + 1)
        assert pub.position == before
        assert offer(pub, b"after") > 0
        assert [d for d, _ in collect(sub, 1)] == [b"after"]


def test_try_claim_commit_and_abort(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        c1 = pub.try_claim(10)
        assert c1 and c1.position > 0
        c1.buffer[:] = b"committed1"
        c1.commit()
        c2 = pub.try_claim(20)
        assert c2
        c2.buffer[:] = b"A" * 20
        c2.abort()
        with pub.try_claim(5) as c3:
            c3.buffer[:] = b"third"
        with pytest.raises(RuntimeError):
            with pub.try_claim(6) as c4:
                c4.buffer[:] = b"abort!"
                raise RuntimeError("writer failed: the claim is aborted")
        with pytest.raises(lockstep.LockstepError):
            c1.commit()  # twice
        assert offer(pub, b"last") > 0
        got = collect(sub, 3)
        settle(sub)
        assert [d for d, _ in got] == [b"committed1", b"third", b"last"]
        assert got[0][1]["position"] == c1.position
        assert got[1][1]["position"] == c3.position
        # The aborted frames are padding in the log, not data.
        pads = [f for f in pub.log.frames() if f.type_name == "PAD"]
        assert [f.frame_length for f in pads] == [32 + 20, 32 + 6]


def test_offer_batch_and_poll_batch_deliver_the_same_bytes(lsdir, exclusive):
    pub, sub = connected_pair(exclusive, term_length=1 << 20)
    with pub, sub:
        messages = [msg(i, (i * 53) % 2000 + 8) for i in range(3000)]  # some fragmented
        data = b"".join(messages)
        lengths = np.array([len(m) for m in messages], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
        got: list[bytes] = []
        positions: list[int] = []

        def on_batch(batch: lockstep.Batch) -> None:
            assert batch.session_id == pub.session_id and batch.stream_id == STREAM
            assert len(batch.offsets) == len(batch.lengths) == len(batch.positions) == len(batch)
            for i in range(len(batch)):
                got.append(bytes(batch[i]))
            positions.extend(int(p) for p in batch.positions)

        sent = 0
        deadline = time.monotonic() + 30
        while sent < len(messages):
            accepted, result = pub.offer_batch(data, offsets[sent:sent + 500], lengths[sent:sent + 500])
            sent += accepted
            assert accepted > 0 or result in (BACK_PRESSURED, ADMIN_ACTION), lockstep.status_name(result)
            sub.poll_batch(on_batch)
            assert time.monotonic() < deadline
        many = [msg(i, 20) for i in range(3000, 3100)]
        assert pub.offer_many(many) == (100, pub.position)
        while len(got) < len(messages) + len(many):
            assert sub.poll_batch(on_batch) or time.monotonic() < deadline
        assert got == messages + many
        assert positions == sorted(positions) and positions[-1] == pub.position
        with pytest.raises(InvalidArgumentError):
            pub.offer_batch(data, offsets[:2], lengths[:3])
        with pytest.raises(InvalidArgumentError):
            pub.offer_batch(b"short", np.array([0], np.int64), np.array([6], np.int32))


def test_poll_batch_copies_match_poll_with_numpy(lsdir):
    """A consumer using numpy over the batch (no per-message Python call) sees each value."""
    pub, sub = connected_pair(True, term_length=1 << 20)
    with pub, sub:
        values = np.arange(5000, dtype="<u8")  # 64-byte frames: within the 512 KiB window
        accepted, _ = pub.offer_batch(values, np.arange(5000, dtype=np.int64) * 8, np.full(5000, 8, np.int32))
        assert accepted == 5000
        seen: list[np.ndarray] = []

        def on_batch(batch):
            idx = batch.offsets[:, None] + np.arange(8)
            seen.append(batch.buffer[idx].copy().view("<u8").ravel())

        while sum(len(s) for s in seen) < 5000:
            assert sub.poll_batch(on_batch) > 0
        assert np.array_equal(np.concatenate(seen), values)


def test_handler_that_raises_consumes_its_message(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        for i in range(5):
            offer(pub, msg(i))
        got = []

        def handler(data, header):
            i = int.from_bytes(data[:8], "little")
            if i == 2:
                raise KeyError("bad message")
            got.append(i)

        with pytest.raises(KeyError):
            while True:
                sub.poll(handler, 10)
        while len(got) < 4:
            sub.poll(handler, 10)
        assert got == [0, 1, 3, 4]
        settle(sub)


def test_many_term_rotations_lose_nothing(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        count = 20_000  # ~ 3.5 MiB of frames in a 64 KiB term: > 50 rotations
        got: list[bytes] = []
        handler = lambda d, h: got.append(bytes(d))  # noqa: E731
        i = 0
        deadline = time.monotonic() + 60
        last_position = 0
        while i < count:
            m = msg(i)
            result = pub.offer(m)
            if result > 0:
                assert result > last_position
                last_position = result
                i += 1
            else:
                assert result in (BACK_PRESSURED, ADMIN_ACTION), lockstep.status_name(result)
                sub.poll(handler, 100)
            assert time.monotonic() < deadline
        while len(got) < count:
            assert sub.poll(handler, 100) or time.monotonic() < deadline
        assert got == [msg(i) for i in range(count)]
        assert pub.position > 50 * SMALL_TERM
        assert sub.images[0].position == pub.position


# -- back-pressure --------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [32, 1000, 3 * 1408])
def test_back_pressure_at_half_a_term_from_the_slowest_subscriber(lsdir, exclusive, length):
    """The subscriber here is the test, not polling: offer returns BACK_PRESSURED once the
    publisher is half a term ahead of it. Aeron's rule (and the C core's): an offer may start
    anywhere below the limit, so the position at the first BACK_PRESSURED is in
    [sub + window, sub + window + one message). After the subscriber moves, the publisher
    continues; nothing is lost."""
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        image = sub.images[0]
        window = SMALL_TERM // 2
        one = span(length)
        sent = 0
        received: list[bytes] = []
        for round_ in range(4):  # several windows, across rotations
            sub_position = image.position
            while True:
                result = pub.offer(msg(sent, length))
                if result == ADMIN_ACTION:
                    continue
                if result == BACK_PRESSURED:
                    break
                assert result > 0, lockstep.status_name(result)
                sent += 1
                assert result < sub_position + window + one, "publisher ran past the window"
            position = pub.position
            assert sub_position + window <= position < sub_position + window + one, (round_, sub_position, position)
            if window % one == 0:  # messages tile the window: the publisher stops exactly at it
                assert position == sub_position + window
            assert pub.position_limit == sub_position + window
            assert pub.offer(msg(sent, length)) == BACK_PRESSURED  # still, while the subscriber stays
            # The subscriber reads part of what is there: the publisher may continue.
            received += [d for d, _ in collect(sub, max(1, (window // 2) // one))]
        deadline = time.monotonic() + 30
        while image.position < pub.position:  # (a poll may only pass padding: 0 messages)
            sub.poll(lambda d, h: received.append(bytes(d)), 100)
            assert time.monotonic() < deadline
        assert received == [msg(i, length) for i in range(sent)]
        settle(sub)


def test_back_pressure_then_resume_loses_nothing(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with pub, sub:
        got: list[bytes] = []
        handler = lambda d, h: got.append(bytes(d))  # noqa: E731
        sent = 0
        pressured = 0
        deadline = time.monotonic() + 60
        while sent < 5000:
            result = pub.offer(msg(sent))
            if result > 0:
                sent += 1
            elif result == BACK_PRESSURED:
                pressured += 1
                sub.poll(handler, 7)  # a slow subscriber
            else:
                assert result == ADMIN_ACTION
            assert time.monotonic() < deadline
        while len(got) < sent:
            assert sub.poll(handler, 100) or time.monotonic() < deadline
        assert pressured > 0
        assert got == [msg(i) for i in range(sent)]


def test_slowest_of_two_subscribers_bounds_the_publisher(lsdir):
    pub = Publication(STREAM, term_length=SMALL_TERM)
    fast, slow = Subscription(STREAM), Subscription(STREAM)
    with pub, fast, slow:
        wait_images(fast)
        wait_images(slow)
        while (r := pub.offer(msg(0, 100))) != BACK_PRESSURED:
            assert r > 0
            fast.poll(lambda d, h: None, 100)
        fast.poll(lambda d, h: None, 1000)
        assert fast.images[0].position == pub.position
        assert slow.images[0].position == 0
        assert pub.position >= SMALL_TERM // 2
        assert pub.offer(msg(0, 100)) == BACK_PRESSURED
        slow.close()  # the slow one leaves: its counter goes, the limit follows the fast one
        deadline = time.monotonic() + 10
        while pub.offer(msg(0, 100)) == BACK_PRESSURED:
            assert time.monotonic() < deadline
            time.sleep(0.01)


# -- late join ----------------------------------------------------------------------------------

def test_late_subscriber_starts_at_the_live_position(lsdir, exclusive):
    pub, early = connected_pair(exclusive)
    with pub, early:
        for i in range(10):
            offer(pub, msg(i))
        live_from = pub.position
        with Subscription(STREAM) as late:
            wait_images(late)
            assert late.images[0].join_position == live_from
            for i in range(10, 15):
                offer(pub, msg(i))
            assert [d for d, _ in collect(late, 5)] == [msg(i) for i in range(10, 15)]
            settle(late)
        assert [d for d, _ in collect(early, 15)] == [msg(i) for i in range(15)]


def test_late_subscriber_from_earliest_and_from_a_position(lsdir, exclusive):
    pub, early = connected_pair(exclusive)
    with pub, early:
        positions = [offer(pub, msg(i)) for i in range(10)]
        with Subscription(STREAM, start="earliest") as late:
            assert late.image_count == 1
            assert [d for d, _ in collect(late, 10)] == [msg(i) for i in range(10)]
            settle(late)
        with Subscription(STREAM, start=positions[4]) as late:
            got = collect(late, 5)
            assert [d for d, _ in got] == [msg(i) for i in range(5, 10)]
            assert [h["position"] for _, h in got] == positions[5:]
            settle(late)
        with pytest.raises(InvalidArgumentError):
            Subscription(STREAM, start=positions[4] + 8)  # not a frame boundary
        with pytest.raises(InvalidArgumentError):
            Subscription(STREAM, start=positions[-1] + 4096)  # beyond the tail
        with pytest.raises(InvalidArgumentError):
            Subscription(STREAM, start="latest")


def test_earliest_after_rotations_starts_at_the_retained_term(lsdir):
    pub, early = connected_pair(True)
    with pub, early:
        count = 0
        while pub.position < 3 * SMALL_TERM + 1000:
            r = pub.offer(msg(count, 500))
            if r > 0:
                count += 1
            else:
                early.poll(lambda d, h: None, 100)
        with Subscription(STREAM, start="earliest") as late:
            image = late.images[0]
            assert image.join_position == pub.log.retained_start_position
            assert image.join_position == 2 * SMALL_TERM  # the start of the previous, intact term
            got = collect(late, 1)
            first = int.from_bytes(got[0][0][:8], "little")
            assert got[0][1]["term_offset"] == 0
            assert pub.log.position(got[0][1]["term_id"], 0) == 2 * SMALL_TERM
            rest = collect(late, count - first - 1)
            assert [d for d, _ in got + rest] == [msg(i, 500) for i in range(first, count)]


def test_two_exclusive_publishers_give_two_images(lsdir):
    sub = Subscription(STREAM)
    a = Publication(STREAM, exclusive=True, term_length=SMALL_TERM)
    b = Publication(STREAM, exclusive=True, term_length=SMALL_TERM)
    with sub, a, b:
        assert a.session_id != b.session_id and a.path != b.path
        wait_images(sub, 2)
        assert {im.session_id for im in sub.images} == {a.session_id, b.session_id}
        got = []
        for i in range(300):
            offer(a, b"A" + msg(i))
            offer(b, b"B" + msg(i))
            got += collect(sub, 2)
        settle(sub)
        by_session: dict[int, list[bytes]] = {}
        for data, h in got:
            by_session.setdefault(h["session_id"], []).append(data)
        assert by_session[a.session_id] == [b"A" + msg(i) for i in range(300)]
        assert by_session[b.session_id] == [b"B" + msg(i) for i in range(300)]


def test_publisher_started_after_the_subscriber_is_discovered(lsdir, exclusive):
    with Subscription(STREAM) as sub:
        assert sub.image_count == 0
        settle(sub)
        with Publication(STREAM, exclusive=exclusive, term_length=SMALL_TERM) as pub:
            assert pub.offer(b"too early") == NOT_CONNECTED  # the subscriber has not seen the log yet
            wait_images(sub)
            assert offer(pub, b"hello") > 0
            assert [d for d, _ in collect(sub, 1)] == [b"hello"]


# -- close ----------------------------------------------------------------------------------------

def test_offer_after_close_returns_closed(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    with sub:
        assert offer(pub, b"before close") > 0
        pub.close()
        pub.close()  # twice is fine
        assert pub.closed
        assert pub.offer(b"after close") == CLOSED
        assert pub.offer(bytearray(b"after close")) == CLOSED
        assert pub.offer_many([b"a"]) == (0, CLOSED)
        claim = pub.try_claim(8)
        assert not claim and claim.status == CLOSED
        assert [d for d, _ in collect(sub, 1)] == [b"before close"]


_CLOSE_CODE = r"""
import json, sys, time
import lockstep
exclusive = sys.argv[1] == "exclusive"
sub = lockstep.Subscription(7)
pub = lockstep.Publication(7, exclusive=exclusive, term_length=65536)
deadline = time.monotonic() + 10
while sub.image_count == 0 and time.monotonic() < deadline:
    sub.poll(lambda d, h: None); time.sleep(0.01)
while pub.offer(b"x") < 0 and time.monotonic() < deadline:
    time.sleep(0.01)
claim = pub.try_claim(16)
assert claim
pub.close()
out = {"offer": pub.offer(b"y" * 100), "bytearray": pub.offer(bytearray(500)),
       "many": list(pub.offer_many([b"a", b"b"])), "claim": pub.try_claim(8).status, "position": pub.position}
claim.buffer[:] = b"claimed pre-close"[:16]
claim.commit()  # the mapping must still be there for an outstanding claim
got = []
deadline = time.monotonic() + 10
while len(got) < 2 and time.monotonic() < deadline:
    sub.poll(lambda d, h: got.append(bytes(d).decode()), 10)
out["got"] = got
sub.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["exclusive", "shared"])
def test_offer_and_claim_after_close_do_not_touch_unmapped_memory(lsdir, kind):
    proc = run_python(_CLOSE_CODE, kind)
    assert proc.returncode == 0, f"crashed (exit {proc.returncode}):\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"offer": CLOSED, "bytearray": CLOSED, "many": [0, CLOSED], "claim": CLOSED,
                   "position": CLOSED, "got": ["x", "claimed pre-close"[:16]]}


def test_subscription_close_frees_its_counters(lsdir, exclusive):
    pub, sub = connected_pair(exclusive)
    counters = client_for(lsdir).counters
    with pub:
        assert len(counters.find_stream(TYPE_SUBSCRIBER_POSITION, pub.session_id, STREAM)) == 1
        assert offer(pub, b"x") > 0
        sub.close()
        sub.close()
        assert counters.find_stream(TYPE_SUBSCRIBER_POSITION, pub.session_id, STREAM) == []
        # The publisher learns it at its next limit check: NOT_CONNECTED, at the latest once
        # it reaches the limit it had cached (half a term).
        deadline = time.monotonic() + 10
        bytes_after = 0
        while (r := pub.offer(msg(0, 100))) != NOT_CONNECTED:
            assert r > 0 or r == ADMIN_ACTION, lockstep.status_name(r)
            bytes_after += span(100) if r > 0 else 0
            assert bytes_after <= SMALL_TERM // 2 + span(100)
            assert time.monotonic() < deadline
        assert not pub.is_connected
    # A new publisher on the stream is not connected at all.
    with Publication(STREAM, exclusive=exclusive, term_length=SMALL_TERM) as again:
        assert again.offer(b"y") == NOT_CONNECTED


def test_exclusive_publication_close_ends_the_image(lsdir):
    pub, sub = connected_pair(True)
    with sub:
        for i in range(20):
            offer(pub, msg(i))
        path = pub.path
        pub.close()
        assert [d for d, _ in collect(sub, 20)] == [msg(i) for i in range(20)]
        deadline = time.monotonic() + 10
        while sub.image_count:
            assert time.monotonic() < deadline
            sub.poll(lambda d, h: pytest.fail("no more messages"), 10)
            time.sleep(0.01)
        assert not path.exists()  # the last subscriber removes the finished log


def test_offer_statuses_are_an_int_enum_with_aerons_values(lsdir):
    """The negative results are `lockstep.OfferStatus` members that compare equal to Aeron's
    -1..-5 (what the C fast path returns), print as ints in JSON, and are named by
    status_name; a closed publication's offer is CLOSED."""
    import json

    assert [int(s) for s in lockstep.OfferStatus] == [-1, -2, -3, -4, -5]
    assert lockstep.NOT_CONNECTED is lockstep.OfferStatus.NOT_CONNECTED and lockstep.NOT_CONNECTED == -1
    assert json.dumps({"status": lockstep.BACK_PRESSURED}) == '{"status": -2}'
    assert [lockstep.status_name(v) for v in (-1, -2, -3, -4, -5, 128)] == [
        "NOT_CONNECTED", "BACK_PRESSURED", "ADMIN_ACTION", "CLOSED", "MAX_POSITION_EXCEEDED", "128"]
    pub = lockstep.Publication(31, lsdir, exclusive=True, term_length=1 << 16)
    assert pub.offer(b"nobody listens") == lockstep.OfferStatus.NOT_CONNECTED
    pub.close()
    result = pub.offer(b"x")
    assert result == lockstep.CLOSED and lockstep.OfferStatus(result).name == "CLOSED"


def test_a_held_back_offer_answers_from_c_until_the_next_subscriber_check(lsdir, monkeypatch):
    """BACK_PRESSURED (and NOT_CONNECTED) come straight from the C offer while the Python offer
    would not look for subscribers again anyway (at most once per 100 ms): a spinning publisher
    costs an Aeron offer's ~50 ns a try, not a Python call's ~800 ns. It still resumes once the
    subscriber reads, and the statuses are the same."""
    with Subscription(STREAM, lsdir) as sub, Publication(STREAM, lsdir, exclusive=True, term_length=1 << 16) as pub:
        while not (sub.discover() and pub.is_connected):
            time.sleep(0.001)
        while pub.offer(b"x" * 1000) > 0:  # fill the window
            pass
        calls = []
        python_offer = Publication._offer
        monkeypatch.setattr(Publication, "_offer", lambda self, *a: calls.append(1) or python_offer(self, *a))
        start = time.monotonic()
        tries = 0
        while tries < 20_000 or not calls:
            assert pub.offer(b"x" * 1000) == BACK_PRESSURED
            tries += 1
        elapsed = time.monotonic() - start
        assert len(calls) <= elapsed / 0.1 + 2, f"{len(calls)} of {tries} held-back offers went to Python"
        assert sub.poll(lambda data, header: None, 100) > 0  # room again: the next offers go in
        deadline = time.monotonic() + 30
        while pub.offer(b"y") < 0:
            assert time.monotonic() < deadline
            sub.poll(lambda data, header: None, 100)
