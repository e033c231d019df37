"""RecordingReader.poll's per-message loop in C (issue 15, scan_deliver.c): every message of a
recording exactly once and in order whatever the limits (fragments reassembled, across terms
and segments), a handler that raises has its message consumed and the rest read again, views
do not outlive the call, the header and `position` say where the handler is."""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockstep import ClosedError, FileFormatError, Publication
from lockstep.archive import Archive, Recorder
from lockstep.transport.mapped import resolve_dir

from helpers import drive

TERM = 1 << 16
SEGMENT = 1 << 17
MTU = 1408


class Boom(Exception):
    pass


def _payload(i: int, size: int) -> bytes:
    """Message i: its number, then filler that depends on it."""
    return struct.pack("<q", i) + bytes((i * 7 + k) & 0xFF for k in range(size - 8))


def _sizes(count: int, seed: int = 15) -> list[int]:
    """Mostly small messages, some a few fragments long, some up to the longest a term allows (term / 8)."""
    rng = random.Random(seed)
    return [rng.choice([rng.randint(8, 200)] * 6 + [rng.randint(MTU, 4 * MTU), rng.randint(4 * MTU, TERM // 8)])
            for _ in range(count)]


def _record(dir: Path, sizes: list[int]) -> tuple[Archive, list[bytes], int]:
    """A stopped recording of `_payload(i, sizes[i])` (64 KiB terms, 128 KiB segments): the
    archive, the payloads and the stop position."""
    rec = Recorder(dir, stream_id=9, segment_length=SEGMENT, archive_dir=dir / "archive")
    pub = Publication(9, dir, exclusive=True, term_length=TERM, mtu_length=MTU)
    rec.discover()
    payloads = [_payload(i, size) for i, size in enumerate(sizes)]
    for p in payloads:
        while pub.offer(p) < 0:
            rec.do_work()
    drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    stop = pub.position
    rec.close()
    pub.close()
    return Archive(dir / "archive"), payloads, stop


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Archive, list[bytes], int]:
    return _record(resolve_dir(tmp_path_factory.mktemp("reader-poll") / "lockstep"), _sizes(600))


def test_the_recording_spans_fragments_terms_and_segments(recording):
    arch, payloads, stop = recording
    assert stop > 4 * SEGMENT and sum(len(p) > MTU - 32 for p in payloads) > 100
    assert len(arch.segment_files(0)) >= 5


@pytest.mark.parametrize("limit", [1, 2, 3, 10, 4096])
def test_every_message_once_in_order_with_its_header(recording, limit):
    arch, payloads, stop = recording
    got: list[bytes] = []
    with arch.reader(0) as reader:
        def handler(data, header):
            assert header.position == reader.position, "the position is after the message being handled"
            assert header.flags == 0xC0 and header.session_id == reader.session_id and header.stream_id == 9
            if len(data) <= MTU - 32:  # one frame (a reassembled message: its first fragment's)
                assert header.term_offset == (header.position - (header.frame_length + 31) // 32 * 32) % TERM
            got.append(bytes(data))
        while True:
            n = reader.poll(handler, limit)
            assert n <= limit
            if not n:
                break
        assert reader.position == stop
    assert got == payloads


def test_a_handler_that_raises_has_its_message_consumed_and_the_rest_read_next(recording):
    arch, payloads, _ = recording
    with arch.reader(0) as reader:
        seen: list[bytes] = []
        positions: list[int] = []

        def handler(data, header):
            seen.append(bytes(data))
            positions.append(header.position)
            if len(seen) == 3:
                raise Boom
        with pytest.raises(Boom):
            reader.poll(handler, 10)
        assert seen == payloads[:3]
        assert reader.position == positions[2], "consumed: the position is after the raising message"
        seen.clear()
        assert reader.poll(lambda d, h: seen.append(bytes(d)), 5) == 5
        assert seen == payloads[3:8], "the messages scanned after it are delivered by the next poll"


def test_a_kept_view_is_released_after_the_call(recording):
    arch, payloads, _ = recording
    big = next(i for i, p in enumerate(payloads) if len(p) > 2 * MTU)
    kept: list[memoryview] = []
    with arch.reader(0) as reader:
        assert reader.poll(lambda d, h: kept.append(d), big + 1) == big + 1
    assert len(kept) == big + 1
    for view in (kept[0], kept[big]):  # a frame's bytes in the map, and a reassembled message
        with pytest.raises(ValueError, match="released"):
            bytes(view)


@pytest.mark.parametrize("where", ["handler", "thread"])
def test_poll_from_its_own_handler_or_another_thread_meanwhile_is_refused(recording, where):
    """One scan per reader: a second poll while one is handing out its messages would overwrite it."""
    arch, payloads, _ = recording
    with arch.reader(0) as reader:
        errors: list[BaseException] = []

        def again() -> None:
            try:
                reader.poll(lambda d, h: None, 1)
            except RuntimeError as e:
                errors.append(e)

        def handler(data, header):
            if where == "handler":
                again()
            else:
                t = threading.Thread(target=again)
                t.start()
                t.join()
        assert reader.poll(handler, 2) == 2
        assert len(errors) == 2 and "already polling" in str(errors[0])
        got: list[bytes] = []
        reader.poll(lambda d, h: got.append(bytes(d)), 1)
        assert got == payloads[2:3]


def test_a_closed_reader_raises_closed_error(recording):
    arch, _, _ = recording
    reader = arch.reader(0)
    seen: list[int] = []

    def handler(data, header):
        seen.append(header.position)
        if len(seen) == 1:
            reader.close()
    n = reader.poll(handler, 5)
    assert n == len(seen) >= 1, "the call in flight finishes the term it scanned"
    with pytest.raises(ClosedError):
        reader.poll(handler, 5)
    assert reader.position == seen[-1]


def test_a_close_under_the_c_call_tears_down_when_it_returns(recording):
    """The shared fast-type lifecycle: while TermScanDeliver hands out messages it is `busy` and
    the reader's teardown (unmapping the segments) waits for it; it runs as the call returns."""
    arch, payloads, _ = recording
    reader = arch.reader(0)
    _, view, offset = reader._maps.get(reader.position)
    states: list[tuple[bool, bool, bytes]] = []

    def handler(data, header):
        if not states:
            reader.close()
        states.append((reader._deliver.busy, reader._torn_down, bytes(data)))
    assert reader._deliver(view, offset, reader.limit, 3, handler) == 3  # (no Python poll's token around it)
    assert states == [(True, False, p) for p in payloads[:3]]
    assert reader._torn_down and not reader._deliver.busy


def test_start_and_stop_inside_the_recording(recording):
    arch, payloads, stop = recording
    ends: list[int] = []
    with arch.reader(0) as reader:
        reader.poll(lambda d, h: ends.append(h.position), len(payloads))
    a, b = 40, 300
    with arch.reader(0, start=ends[a - 1], stop=ends[b - 1] + 16) as reader:  # (a stop not on a frame boundary)
        got = [p for p, _ in reader.messages()]
    assert got == payloads[a:b]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 40), st.one_of(st.none(), st.integers(0, 39))), min_size=1, max_size=60))
def test_any_limits_and_raising_handlers_deliver_each_message_once(recording, polls):
    """Property: whatever the limits and whichever calls raise, the messages handed out (a
    raising call's up to the one that raised) are the recording's, each once, in order, and
    the position is after the last of them."""
    arch, payloads, _ = recording
    got: list[bytes] = []
    with arch.reader(0) as reader:
        for limit, fail_at in polls:
            calls = [0]

            def handler(data, header):
                got.append(bytes(data))
                assert header.position == reader.position
                calls[0] += 1
                if calls[0] - 1 == fail_at:
                    raise Boom
            try:
                n = reader.poll(handler, limit)
            except Boom:
                assert fail_at is not None and calls[0] == fail_at + 1
            else:
                assert n == calls[0] <= limit and (fail_at is None or fail_at >= n)
        assert got == payloads[:len(got)]
        ends: list[int] = []
        reader.poll(lambda d, h: ends.append(h.position), 1)
        if len(got) < len(payloads):
            assert len(ends) == 1


def test_a_corrupt_frame_mid_term_ends_the_poll_after_the_messages_before_it(lsdir):
    arch, payloads, _ = _record(lsdir, [40] * 300)
    ends: list[int] = []
    with arch.reader(0) as reader:
        reader.poll(lambda d, h: ends.append(h.position), 300)
    bad = ends[99]  # the frame of message 100
    segment = arch.segment_files(0)[bad // SEGMENT]
    with open(segment, "r+b") as f:
        f.seek(bad % SEGMENT + 8)
        f.write(struct.pack("<i", 12345))  # its term offset field
    got: list[bytes] = []
    with arch.reader(0) as reader:
        with pytest.raises(FileFormatError, match=rf"{segment}: frame at offset {bad % SEGMENT} .*term offset field"):
            reader.poll(lambda d, h: got.append(bytes(d)), 1000)
        assert got == payloads[:100] and reader.position == bad
        with pytest.raises(FileFormatError):
            reader.poll(lambda d, h: got.append(bytes(d)), 1000)
        assert len(got) == 100
