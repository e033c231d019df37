"""`offer` and `receive` — the one-call-per-message paths (vectorcall objects in C) — and the
blocking receive: messages intact, in order, once, across term rotation, padding and
fragments, mixed freely with `poll`; a blocked reader sleeps on the futex and a writer wakes it."""

from __future__ import annotations

import gc
import struct
import tempfile
import time
import weakref
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockstep
from lockstep import (BACK_PRESSURED, CLOSED, ClosedError, InvalidArgumentError, LockstepError, Publication,
                      Subscription)
from lockstep.transport.mapped import MappedFile

import receive_workers as rw

STREAM = 1201
TERM = 64 * 1024
META_READER_WAITING = 512  # logbuffer_descriptor.h: lockstep's fields in Aeron's unused metadata
META_WAKE_SEQUENCE = 576


def _connected(dir, **pub_kwargs) -> tuple[Publication, Subscription]:
    sub = Subscription(STREAM, dir)
    pub = Publication(STREAM, dir, exclusive=True, term_length=TERM, **pub_kwargs)
    deadline = time.monotonic() + 30
    while not (sub.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "publication and subscription did not connect"
        time.sleep(0.001)
    return pub, sub


def _message(i: int, size: int) -> bytes:
    body = (i.to_bytes(4, "little") * (size // 4 + 1))[:size]
    return body


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.one_of(st.integers(0, 100), st.integers(1300, 4000)), min_size=1, max_size=120),
       reads=st.lists(st.sampled_from(["receive", "image", "poll1", "poll"]), min_size=1, max_size=8),
       rounds=st.integers(1, 12))
def test_receive_and_poll_mixed_deliver_each_message_once_in_order(sizes, reads, rounds):
    """Small terms force rotation and padding; sizes over the mtu payload force fragments. Any
    mix of receive / poll(…, 1) / poll(…, n) sees every message once, in order, intact."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as dir:
        pub, sub = _connected(dir)
        with pub, sub:
            [image] = sub.images
            sent: list[bytes] = []
            got: list[bytes] = []
            for r in range(rounds):
                for k, size in enumerate(sizes):
                    msg = _message(len(sent), size)
                    while pub.offer(msg) < 0:
                        _read_some(reads[len(got) % len(reads)], sub, image, got)
                    sent.append(msg)
            stalls = 0
            while len(got) < len(sent):
                before = len(got)
                _read_some(reads[len(got) % len(reads)], sub, image, got)
                stalls = 0 if len(got) > before else stalls + 1
                assert stalls < 10_000, f"stuck at {len(got)} of {len(sent)}"
            assert got == sent
            assert sub.receive() is None and image.position == pub.position


def _read_some(how: str, sub: Subscription, image, got: list[bytes]) -> None:
    if how == "receive":
        data = sub.receive()
        if data is not None:
            got.append(data)
    elif how == "image":
        data = image.receive()
        if data is not None:
            got.append(data)
    else:
        sub.poll(lambda d, h: got.append(bytes(d)), 1 if how == "poll1" else 7)


def test_offer_takes_any_contiguous_buffer_and_reserved_value(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        payloads = [b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), np.arange(4, dtype=np.int32)]
        for i, p in enumerate(payloads):
            assert pub.offer(p, i + 7) > 0
        assert pub.offer(b"kw", reserved_value=99) > 0
        seen = []
        while len(seen) < 5:
            sub.poll(lambda d, h: seen.append((bytes(d), h.reserved_value)), 10)
        assert seen == [(b"bytes", 7), (b"bytearray", 8), (b"memoryview", 9),
                        (np.arange(4, dtype=np.int32).tobytes(), 10), (b"kw", 99)]
        with pytest.raises(TypeError):
            pub.offer("text is not bytes")
        with pytest.raises(InvalidArgumentError):
            pub.offer(np.arange(8)[::2])  # not contiguous
    assert pub.offer(b"after close") == CLOSED


def test_offer_is_back_pressured_not_blocked_and_receive_frees_space(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        sent = 0
        while pub.offer(_message(sent, 100)) > 0:
            sent += 1
        assert pub.offer(b"x") == BACK_PRESSURED
        assert sent >= (TERM // 2) // 160  # the window, term/2, went in
        for i in range(sent):
            assert sub.receive() == _message(i, 100)
        assert sub.receive() is None
        assert pub.offer(b"again") > 0 and sub.receive() == b"again"


def test_receive_after_close(lsdir):
    pub, sub = _connected(lsdir)
    [image] = sub.images
    pub.offer(b"left behind")
    sub.close()
    with pytest.raises(ClosedError):
        image.receive()
    with pytest.raises(ClosedError):
        sub.receive()  # closed says so, as poll() does (issue 13 item 16)
    with pytest.raises(ClosedError):
        sub.receive(timeout=None)  # never waits forever on a closed subscription
    pub.close()


def test_receive_rejects_a_corrupt_frame_with_a_lockstep_error(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        position = pub.offer(b"will be corrupted")
        with open(pub.path, "r+b") as f:  # the first frame (partition 0, offset 0)
            f.write(struct.pack("<i", TERM + 64))  # its length now runs past the term
        with pytest.raises(LockstepError):
            sub.receive()
        assert position > 0


def test_receive_timeout_returns_none_when_nothing_comes(lsdir):
    sub = Subscription(STREAM, lsdir)
    with sub:
        assert sub.receive(timeout=0.05) is None  # no publisher at all
        pub = Publication(STREAM, lsdir, exclusive=True, term_length=TERM)
        with pub:
            assert sub.receive(timeout=0.3) is None  # discovered meanwhile, but silent
            assert sub.image_count == 1
            pub.offer(b"now")
            assert sub.receive(timeout=5) == b"now"
            with pytest.raises(TypeError):
                sub.receive(1, 2)
            with pytest.raises(TypeError):
                sub.receive(wait=1)


def _send(pub: Publication, how: str, data: bytes) -> None:
    if how == "claim":
        with pub.try_claim(len(data)) as claim:
            claim.buffer[:] = data
    elif how == "batch":
        assert pub.offer_many([data]) == (1, pub.position)
    else:
        assert pub.offer(data) > 0


@pytest.mark.parametrize("how", ["offer", "shared", "claim", "batch"])
def test_blocked_reader_sleeps_on_the_futex_and_a_writer_wakes_it(lsdir, procs, mp, how):
    """The child blocks in receive(timeout=None): it sets the log's waiting flag and sleeps;
    each commit (offer, offer on a shared log, try_claim + commit, offer_batch) wakes it (the
    wake sequence moves) and it gets every message, in order."""
    pub = Publication(STREAM, lsdir, exclusive=how != "shared", term_length=TERM)
    with pub:
        out = mp.Queue()
        procs.start(rw.receive_blocking, str(lsdir), STREAM, 3, out)
        assert out.get(timeout=60) == "attached"
        file = MappedFile.open(pub.path)  # shared (a read-only open maps a private copy)
        words = file.memoryview()[3 * TERM:].cast("i")
        try:
            for i in range(3):
                _wait(lambda: words[META_READER_WAITING // 4] == 1, "the reader to go to sleep")
                wakes = words[META_WAKE_SEQUENCE // 4]
                _send(pub, "offer" if how == "shared" else how, _message(i, 24))
                assert out.get(timeout=60) == _message(i, 24)
                assert words[META_WAKE_SEQUENCE // 4] != wakes  # woken by the writer
        finally:
            words.release()
            file.close()
        procs.join_all()


def test_receive_across_processes_every_message_once_in_order(lsdir, procs, mp):
    """Two processes, one offer() per message and one receive() per message, a small term
    (many rotations); crc and sequence checked for each."""
    count = 200_000
    procs.start(rw.offer_numbered, str(lsdir), STREAM, count, TERM)
    sub = Subscription(STREAM, lsdir)
    with sub:
        expected = 0
        last = time.monotonic()
        while expected < count:
            data = sub.receive(timeout=1.0)
            if data is None:
                assert time.monotonic() - last < 60, f"stalled at {expected} of {count}"
                continue
            last = time.monotonic()
            seq, crc = struct.unpack_from("<qI", data)
            assert seq == expected and crc == zlib.crc32(data[12:])
            expected += 1
    procs.join_all()


def test_publications_and_subscriptions_are_collected_without_close(lsdir):
    """The C objects refer back to their owners (a cycle): the garbage collector frees them."""
    pub, sub = _connected(lsdir)
    refs = [weakref.ref(pub), weakref.ref(sub), weakref.ref(sub.images[0])]
    del pub, sub
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_lockstep_bench_ping_block_mode_round_trips(lsdir):
    from lockstep.bench import ping

    result = ping(size=32, messages=300, warmup=30, idle="block")
    assert result["messages"] == 300 and 0 < result["p50_ns"] <= result["p99_ns"] <= result["max_ns"]


def test_hot_paths_leak_no_references(lsdir):
    """offer / receive (one and several images, empty and not) and send keep reference counts
    balanced: a leak per call would grow these counts by the number of calls."""
    import sys

    from lockstep import SequencerClient

    sub = Subscription(STREAM, lsdir)
    pubs = [Publication(STREAM, lsdir, exclusive=True, term_length=TERM) for _ in range(2)]
    client = SequencerClient(lsdir)
    with sub, pubs[0], pubs[1], client:
        deadline = time.monotonic() + 30
        while not (sub.discover() == 2 and all(p.is_connected for p in pubs)):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        payload = b"refcounted payload"
        calls = 20_000

        def run():
            for _ in range(calls):
                sub.receive()  # empty: every image says None
                pubs[0].offer(payload)
                assert sub.receive() == payload
                client.send(payload)

        run()  # warm up caches and free lists
        before = sys.getrefcount(None), sys.getrefcount(payload), sys.getrefcount(True)
        run()
        after = sys.getrefcount(None), sys.getrefcount(payload), sys.getrefcount(True)
        # Other threads (heartbeats) and housekeeping touch these counts a little; a leak per
        # call would move them by tens of thousands.
        assert all(abs(a - b) < calls // 20 for a, b in zip(after, before)), (before, after)
