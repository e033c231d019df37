"""The one-C-call paths — offer, receive, poll(handler), controlled_poll, try_claim, ring write / read /
controlled_read / try_claim (vectorcall objects in C) — and the blocking receive: messages
intact, in order, once, across term rotation, padding, fragments and wrap-around, mixed freely
with each other and with the Python fallbacks; a blocked reader sleeps on the futex and a
writer wakes it."""

from __future__ import annotations

import gc
import itertools
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
from lockstep.transport.reader import LogReader

import receive_workers as rw

STREAM = 1201
TERM = 64 * 1024
META_READER_WAITING = 512  # logbuffer_descriptor.h: lockstep's fields in Aeron's unused metadata
META_WAKE_SEQUENCE = 576


def _connected(dir, term_length: int = TERM, **pub_kwargs) -> tuple[Publication, Subscription]:
    sub = Subscription(STREAM, dir)
    pub = Publication(STREAM, dir, exclusive=True, term_length=term_length, **pub_kwargs)
    deadline = time.monotonic() + 30
    while not (sub.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "publication and subscription did not connect"
        time.sleep(0.001)
    return pub, sub


def _message(i: int, size: int) -> bytes:
    body = (i.to_bytes(4, "little") * (size // 4 + 1))[:size]
    return body


READS = ["receive", "image", "poll1", "poll", "image_poll", "poll_big", "py_poll", "py_sub_poll", "raise",
         "controlled", "image_controlled"]
# controlled_poll's actions in turn, one per message handed out (ABORT: handed out again)
_ACTIONS = [lockstep.ControlledAction.CONTINUE, lockstep.ControlledAction.ABORT, lockstep.ControlledAction.COMMIT,
            None, lockstep.ControlledAction.BREAK]
_handed = itertools.count()
WRITES = ["offer", "claim", "claim_kept"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.one_of(st.integers(0, 100), st.integers(1300, 4000)), min_size=1, max_size=120),
       reads=st.lists(st.sampled_from(READS), min_size=1, max_size=8),
       writes=st.lists(st.sampled_from(WRITES), min_size=1, max_size=4),
       rounds=st.integers(1, 12))
def test_receive_and_poll_mixed_deliver_each_message_once_in_order(sizes, reads, writes, rounds):
    """Small terms force rotation and padding; sizes over the mtu payload force fragments. Any
    mix of receive / poll in C (subscription and image, limits 1, 7, 300) / the Python poll /
    a handler that raises, over messages offered or claimed (the claim reused or kept), sees
    every message once, in order, intact."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as dir:
        pub, sub = _connected(dir)
        with pub, sub:
            [image] = sub.images
            sent: list[bytes] = []
            got: list[bytes] = []
            kept = []
            for r in range(rounds):
                for k, size in enumerate(sizes):
                    msg = _message(len(sent), size)
                    while not _write(writes[len(sent) % len(writes)], pub, msg, kept):
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


def _write(how: str, pub: Publication, msg: bytes, kept: list) -> bool:
    """One message by offer or try_claim (a kept claim is never reused); False when back-pressured."""
    if how == "offer" or len(msg) > pub.max_payload_length:
        return pub.offer(msg) > 0
    claim = pub.try_claim(len(msg))
    if not claim:
        return False
    claim.buffer[:] = msg
    claim.commit()
    if how == "claim_kept":
        kept.append((claim, claim.position))
        assert all(c.position == p for c, p in kept[-3:])  # kept claims are never refilled
    return True


def _read_some(how: str, sub: Subscription, image, got: list[bytes]) -> None:
    if how == "receive":
        data = sub.receive()
        if data is not None:
            got.append(data)
    elif how == "image":
        data = image.receive()
        if data is not None:
            got.append(data)
    elif how in ("controlled", "image_controlled"):
        def controlled(data, header):
            action = _ACTIONS[next(_handed) % len(_ACTIONS)]
            if action is not lockstep.ControlledAction.ABORT:
                got.append(bytes(data))
            return action
        (sub if how == "controlled" else image).controlled_poll(controlled, 7)
    elif how == "raise":
        def boom(data, header):
            got.append(bytes(data))
            raise _Boom
        try:
            sub.poll(boom, 5)
        except _Boom:
            pass  # the failing message counts as consumed, the rest stay
    else:
        handler = lambda d, h: got.append(bytes(d))  # noqa: E731
        if how == "image_poll":
            image.poll(handler, 7)
        elif how == "py_poll":
            LogReader.poll(image, handler, 7)  # the Python body C falls back to
        elif how == "py_sub_poll":
            Subscription.poll(sub, handler, 3)
        else:
            sub.poll(handler, {"poll1": 1, "poll": 7, "poll_big": 300}[how])


class _Boom(Exception):
    pass


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


@pytest.mark.parametrize("api", ["poll", "receive", "claim"])
def test_lockstep_bench_ping_and_throughput_measure_each_api(lsdir, api):
    """`lockstep bench ping|throughput --api poll|receive|claim`: both sides use the API named."""
    import json
    import subprocess
    import sys

    for command in (["ping", "--messages", "300", "--warmup", "30", "--idle", "backoff"],
                    ["throughput", "--messages", "20000"]):
        proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "bench", *command, "--api", api, "--json"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["api"] == api
        assert result.get("msgs_per_sec", 1) > 0 and result.get("p50_ns", 1) > 0


def test_lockstep_bench_ping_block_needs_receive(lsdir):
    from lockstep.bench import ping

    with pytest.raises(InvalidArgumentError, match="api receive"):
        ping(messages=10, warmup=1, idle="block", api="poll")


def test_hot_paths_leak_no_references(lsdir):
    """offer / receive / poll (one and several images, empty and not, a failing handler),
    try_claim + commit, ring write / try_claim / read / controlled_read and send keep
    reference counts balanced: a leak per call would grow these counts by the number of calls."""
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

        ring = lockstep.ManyToOneRing(lsdir / "ring", 1 << 16)
        image0 = next(image for image in sub.images if image.session_id == pubs[0].session_id)
        header = image0._header

        def handler(data, header):
            pass

        def ring_handler(msg_type_id, data):
            return lockstep.ControlledAction.CONTINUE

        def failing(data, header):
            raise _Boom

        def run():
            for i in range(calls):
                sub.receive()  # empty: every image says None
                pubs[0].offer(payload)
                assert sub.receive() == payload
                client.send(payload)
                assert sub.poll(handler, 10) == 0  # empty, two images
                pubs[i & 1].offer(payload)
                assert sub.poll(handler, 10) == 1
                claim = pubs[0].try_claim(len(payload))
                claim.buffer[:] = payload
                claim.commit()
                assert image0.poll(handler, 1) == 1
                ring.write(1, payload)
                with ring.try_claim(2, len(payload)) as ring_claim:
                    ring_claim.buffer[:] = payload
                assert ring.read(ring_handler, 1) == 1 and ring.controlled_read(ring_handler) == 1
                if not i & 255:  # the error paths: the message is consumed, nothing leaks
                    pubs[0].offer(payload)
                    with pytest.raises(_Boom):
                        sub.poll(failing, 10)
            return claim, ring_claim

        claims = run()  # warm up caches and free lists
        counted = (None, payload, True, handler, ring_handler, header, *claims)
        before = [sys.getrefcount(o) for o in counted]
        run()
        after = [sys.getrefcount(o) for o in counted]
        ring.close()
        # Other threads (heartbeats) and housekeeping touch these counts a little; a leak per
        # call would move them by tens of thousands.
        assert all(abs(a - b) < calls // 20 for a, b in zip(after, before)), (before, after)


# -- the other fast paths: poll's Header and view, ring write/read/controlled_read/try_claim ----

RING_READS = ["read", "read1", "read3", "controlled", "controlled_commit", "controlled_break",
              "controlled_abort", "py_read", "raise", "controlled_raise"]
RING_WRITES = ["write", "claim", "claim_kept", "py_write", "bytearray"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 500), min_size=1, max_size=60),
       reads=st.lists(st.sampled_from(RING_READS), min_size=1, max_size=6),
       writes=st.lists(st.sampled_from(RING_WRITES), min_size=1, max_size=4),
       many=st.booleans(), rounds=st.integers(1, 8))
def test_ring_fast_paths_mixed_deliver_each_message_once_in_order(sizes, reads, writes, many, rounds):
    """A small ring (wrap-around, padding, back-pressure): any mix of write / try_claim (kept or
    reused) / the Python write, and read / controlled_read in C (every action, handlers that
    raise) / the Python read, sees every message once, in order, intact, with its type id."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as dir:
        ring_cls = lockstep.ManyToOneRing if many else lockstep.OneToOneRing
        with ring_cls(f"{dir}/ring", 4096) as ring:
            sent: list[tuple[int, bytes]] = []
            got: list[tuple[int, bytes]] = []
            kept: list = []
            for _ in range(rounds):
                for size in sizes:
                    msg = (len(sent) % 1000 + 1, _message(len(sent), size))
                    stalls = 0
                    while not _ring_write(writes[len(sent) % len(writes)], ring, msg, kept):
                        _ring_read(reads[len(got) % len(reads)], ring, got)
                        stalls += 1
                        assert stalls < 10_000
                    sent.append(msg)
            stalls = 0
            while len(got) < len(sent):
                before = len(got)
                _ring_read(reads[len(got) % len(reads)], ring, got)
                stalls = 0 if len(got) > before else stalls + 1
                assert stalls < 10_000, f"stuck at {len(got)} of {len(sent)}"
            assert got == sent
            assert ring.read(lambda t, d: None) == 0 and ring.size() == 0


def _ring_write(how: str, ring, msg: tuple[int, bytes], kept: list) -> bool:
    type_id, data = msg
    if how == "write":
        return ring.write(type_id, data)
    if how == "bytearray":
        return ring.write(type_id, bytearray(data))
    if how == "py_write":
        return type(ring).__mro__[1].write(ring, type_id, data)  # the Python body C falls back to
    claim = ring.try_claim(type_id, len(data))
    if claim is None:
        return False
    claim.buffer[:] = data
    claim.commit()
    if how == "claim_kept":
        kept.append((claim, claim.index))
        assert all(c.index == i for c, i in kept[-3:])  # kept claims are never refilled
    return True


def _ring_read(how: str, ring, got: list) -> None:
    take = lambda t, d: got.append((t, bytes(d)))  # noqa: E731
    if how.startswith("read"):
        ring.read(take, {"read": 1 << 20, "read1": 1, "read3": 3}[how])
    elif how == "py_read":
        type(ring).__mro__[1].read(ring, take, 5)
    elif how in ("raise", "controlled_raise"):
        def boom(t, d):
            got.append((t, bytes(d)))
            raise _Boom
        try:
            (ring.read if how == "raise" else ring.controlled_read)(boom, 4)
        except _Boom:
            pass  # the failing message counts as consumed
    else:
        action = {"controlled": lockstep.ControlledAction.CONTINUE, "controlled_commit": lockstep.ControlledAction.COMMIT,
                  "controlled_break": lockstep.ControlledAction.BREAK,
                  "controlled_abort": lockstep.ControlledAction.ABORT}[how]
        seen = [0]

        def controlled(t, d):
            seen[0] += 1
            if action == lockstep.ControlledAction.ABORT and seen[0] == 3:
                return action  # the third stays in the ring
            got.append((t, bytes(d)))
            return action if action != lockstep.ControlledAction.ABORT else None
        ring.controlled_read(controlled, 5)


def test_poll_hands_one_reused_header_and_a_read_only_view_valid_during_the_call(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        positions = [pub.offer(b"first", 5), pub.offer(b"second" * 500, 6)]  # the second is fragmented
        seen, views = [], []

        def handler(data, header):
            assert data.readonly
            views.append(data)
            seen.append((bytes(data), header, header.as_dict(), repr(header), header.frame_length))

        assert sub.poll(handler, 10) == 2
        (d0, h0, dict0, repr0, _), (d1, h1, dict1, _, frame_length1) = seen
        assert h0 is h1 is image._header  # one Header per image, filled in C, not rebuilt
        assert (d0, d1) == (b"first", b"second" * 500)
        assert dict0 == {"position": positions[0], "session_id": pub.session_id, "stream_id": STREAM,
                         "term_id": dict0["term_id"], "term_offset": 0, "flags": 0xC0, "reserved_value": 5}
        assert dict1["position"] == positions[1] and dict1["flags"] == 0xC0 and dict1["reserved_value"] == 6
        assert dict1["term_offset"] == 64 and 32 < frame_length1 <= pub.max_payload_length + 32
        assert repr0 == (f"Header(position={positions[0]}, session_id={pub.session_id}, stream_id={STREAM}, "
                         f"term_id={dict0['term_id']}, term_offset=0, flags=0xc0)")
        for view in views:  # kept past the call: released, not a window onto reused memory
            with pytest.raises(ValueError):
                bytes(view)


def test_poll_read_and_claim_after_close_raise_closed_error(lsdir):
    pub, sub = _connected(lsdir)
    [image] = sub.images
    pub.offer(b"left behind")
    sub.close()
    with pytest.raises(ClosedError):
        image.poll(lambda d, h: None, 10)
    with pytest.raises(ClosedError):
        image.poll(lambda d, h: None)
    with pytest.raises(ClosedError):
        sub.poll(lambda d, h: None)  # as receive() (issue 13 item 16: closed says so everywhere)
    claim = pub.try_claim(8)
    pub.close()
    assert not pub.try_claim(8) and pub.try_claim(8).status == CLOSED
    claim.buffer[:] = b"12345678"
    claim.commit()  # an outstanding claim keeps its frame mapped

    ring = lockstep.OneToOneRing(lsdir / "ring", 4096)
    assert ring.write(1, b"x")
    ring_claim = ring.try_claim(2, 4)
    ring.close()
    for call in (lambda: ring.write(1, b"y"), lambda: ring.read(lambda t, d: None),
                 lambda: ring.controlled_read(lambda t, d: None), lambda: ring.try_claim(1, 4),
                 ring_claim.commit):
        with pytest.raises(ClosedError):
            call()


def test_handler_that_closes_its_subscription_or_ring_finishes_the_call_then_closed(lsdir):
    """A handler that closes what it reads: the call hands out the messages it already took
    (intact, in order, as the Python path and a close from another thread do; the unmap waits
    for the call), consumes them, then every later call raises ClosedError."""
    pub, sub = _connected(lsdir)
    with pub:
        for i in range(5):
            pub.offer(b"m%d" % i)
        got = []

        def close_after_two(data, header):
            got.append(bytes(data))
            if len(got) == 2:
                sub.close()

        assert sub.poll(close_after_two, 10) == 5
        assert got == [b"m%d" % i for i in range(5)]
        assert sub.closed
        with pytest.raises(ClosedError):
            sub.poll(close_after_two, 10)
    ring_path = lsdir / "ring"
    with lockstep.ManyToOneRing(ring_path, 4096) as ring:
        for i in range(5):
            ring.write(1, b"r%d" % i)
        seen = []

        def close_ring(t, d):
            seen.append(bytes(d))
            ring.close()

        assert ring.read(close_ring) == 5 and seen == [b"r%d" % i for i in range(5)]
        with pytest.raises(ClosedError):
            ring.read(close_ring)
    with lockstep.ManyToOneRing(ring_path) as ring:  # what was handed out was consumed: never again
        assert ring.read(lambda t, d: seen.append(bytes(d))) == 0 and ring.size() == 0


def test_fast_types_take_their_c_struct_by_buffer_of_its_exact_size(lsdir):
    from lockstep._native import ffi
    from lockstep._native._fastpath import Offer, Poll, Receive, RingRead, Send, TryClaim

    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        wrong = ffi.buffer(ffi.new("int64_t[4]"))
        with pytest.raises(ValueError, match="ls_image_t"):
            Poll(wrong, ffi.buffer(image._scan_out), image._rx, print)
        with pytest.raises(TypeError, match="ls_ring_buffer_t"):
            RingRead(12345, print)
        with pytest.raises(ValueError, match="ls_publication_t"):
            TryClaim(wrong, pub._view, print, lockstep.BufferClaim, print, print)
        # the older per-message types too: an address int was taken unchecked (a bad one crashed)
        address = int(ffi.cast("uintptr_t", pub.handle))
        with pytest.raises(TypeError, match="ls_publication_t"):
            Offer(address, print)
        with pytest.raises(ValueError, match="ls_image_t"):
            Receive(wrong, 0, print)
        with pytest.raises(TypeError, match="ls_ring_buffer_t"):
            Send(address, 1, 0, print)


def test_methods_are_documented_and_calls_go_to_c(lsdir):
    from lockstep._native._fastpath import FastMethod

    pub, sub = _connected(lsdir)
    with pub, sub:
        for cls, name in [(Subscription, "poll"), (LogReader, "poll"), (Publication, "try_claim"),
                          (Subscription, "receive"), (LogReader, "receive"), (Publication, "offer"),
                          (lockstep.SequencerClient, "send"), (lockstep.SequencerClient, "send_batch"),
                          (lockstep.OneToOneRing, "read"), (lockstep.OneToOneRing, "write"),
                          (lockstep.ManyToOneRing, "controlled_read"), (lockstep.ManyToOneRing, "try_claim")]:
            assert isinstance(vars(cls).get(name) or vars(cls.__mro__[1])[name], FastMethod)
            assert getattr(cls, name).__doc__  # the class shows the documented Python method
        assert type(sub.poll).__name__ == "PollAny" and type(sub.images[0].poll).__name__ == "Poll"
        assert type(pub.try_claim).__name__ == "TryClaim" and type(pub.offer).__name__ == "Offer"
        assert type(sub.receive).__name__ == "ReceiveAny" and type(sub.images[0].receive).__name__ == "Receive"
        assert "offer" not in vars(pub) and "receive" not in vars(sub)  # no instance attribute shadows them


def test_reused_views_survive_whatever_a_handler_does_with_them(lsdir):
    """poll and ring read re-point one view per message when nothing else holds it: a handler
    that releases it, keeps it, or exports it (numpy) still gets each later message intact."""
    pub, sub = _connected(lsdir)
    with pub, sub, lockstep.OneToOneRing(lsdir / "ring", 4096) as ring:
        kept, arrays, got = [], [], []

        def handler(data, header=None):
            got.append(bytes(data))
            step = len(got) % 4
            if step == 1:
                data.release()
            elif step == 2:
                kept.append(data)
            elif step == 3:
                arrays.append(np.frombuffer(data, dtype=np.uint8))

        for i in range(40):
            pub.offer(_message(i, 24))
            ring.write(1, _message(i, 24))
            assert sub.poll(handler, 10) == 1 and ring.read(lambda t, d: handler(d)) == 1
        assert got == [_message(i, 24) for i in range(40) for _ in range(2)]
        claims = []
        for i in range(3):
            claim = pub.try_claim(8)
            view = claim.buffer
            view[:] = b"claim %02d" % i
            claim.commit()
            with pytest.raises(ValueError):
                view[:1] = b"x"  # a committed claim's buffer is released
            claims.append(claim)


def test_a_claim_loop_reuses_two_claim_objects_and_kept_claims_stay(lsdir):
    """`claim = try_claim(n)` in a loop still holds the previous claim when it asks for the next:
    the two cached claims alternate (no object per message); kept ones are never refilled."""
    pub, sub = _connected(lsdir)
    with pub, sub, lockstep.ManyToOneRing(lsdir / "ring", 4096) as ring:
        for source in ("publication", "ring"):
            seen, kept = set(), []
            for i in range(20):
                claim = pub.try_claim(8) if source == "publication" else ring.try_claim(1, 8)
                claim.buffer[:] = b"claim %02d" % i
                claim.commit()
                seen.add(id(claim))
                if i in (5, 6):
                    kept.append((claim, claim.position if source == "publication" else claim.index))
            del claim
            assert len(seen) <= 4, source  # two cached, and two more in place of the kept ones
            assert all((c.position if source == "publication" else c.index) == p for c, p in kept)
        got = []
        while sub.poll(lambda d, h: got.append(bytes(d)), 100):
            pass
        ring.read(lambda t, d: got.append(bytes(d)))
        assert got == [b"claim %02d" % i for i in range(20)] * 2


def test_poll_over_several_images_takes_turns_keeps_each_sessions_order_and_limit(lsdir):
    sub = Subscription(STREAM, lsdir)
    pubs = [Publication(STREAM, lsdir, exclusive=True, term_length=TERM) for _ in range(3)]
    with sub, pubs[0], pubs[1], pubs[2]:
        deadline = time.monotonic() + 30
        while not (sub.discover() == 3 and all(p.is_connected for p in pubs)):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        for i in range(50):
            for k, pub in enumerate(pubs):
                assert pub.offer(b"%d:%d" % (k, i)) > 0
        got: list[tuple[int, bytes]] = []
        first_sessions = []
        while True:
            before = len(got)
            n = sub.poll(lambda d, h: got.append((h.session_id, bytes(d))), 7)
            assert n == len(got) - before and n <= 7
            if not n:
                break
            first_sessions.append(got[before][0])
        by_pub = {p.session_id: k for k, p in enumerate(pubs)}
        for k, pub in enumerate(pubs):
            assert [d for s, d in got if s == pub.session_id] == [b"%d:%d" % (k, i) for i in range(50)]
        assert len(set(first_sessions[:3])) == 3, "each poll starts at the next image"
        assert set(by_pub) == set(first_sessions)


def test_poll_rejects_a_corrupt_frame_with_a_lockstep_error(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        pub.offer(b"will be corrupted")
        with open(pub.path, "r+b") as f:  # the first frame (partition 0, offset 0)
            f.write(struct.pack("<i", TERM + 64))  # its length now runs past the term
        with pytest.raises(LockstepError, match=str(pub.path.name)):
            sub.poll(lambda d, h: None, 10)


def test_rings_and_claims_are_collected_without_close(lsdir):
    """The fast objects (and a publication's or ring's cached claims) refer back to their owners:
    the garbage collector frees them."""
    pub, sub = _connected(lsdir)
    ring = lockstep.ManyToOneRing(lsdir / "ring", 4096)
    with pub.try_claim(4) as claim:
        claim.buffer[:] = b"four"
    with ring.try_claim(1, 4) as ring_claim:
        ring_claim.buffer[:] = b"four"
    refs = [weakref.ref(o) for o in (pub, sub, ring)]
    del pub, sub, ring, claim, ring_claim
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_poll_in_c_tells_a_loss_at_once_when_nothing_more_is_there(lsdir):
    """An image evicted (its position counter freed by a publisher that took it for dead) right
    after a poll in C handed out a message: the next poll finds nothing new, yet says so at once —
    ImageLostError, or on_unavailable_image — as the Python poll does; the next message comes from
    the image that rejoined, after the loss was told."""
    from lockstep.transport.client import client_for

    pub, sub = _connected(lsdir)
    told: list = []
    with pub, sub, Subscription(STREAM, lsdir, on_unavailable_image=lambda image: told.append(image.lost)) as cb:
        deadline = time.monotonic() + 30
        while not cb.discover():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert pub.offer(b"one") > 0
        for s in (sub, cb):
            assert s.poll(lambda d, h: None, 10) == 1 and type(s.poll).__name__ == "PollAny"
        counters = client_for(lsdir).counters
        for s in (sub, cb):
            counters.free(s.images[0]._counter.id)
        with pytest.raises(lockstep.ImageLostError, match="evicted"):
            sub.poll(lambda d, h: pytest.fail("handed out a message after the loss"), 10)
        assert cb.poll(lambda d, h: pytest.fail("handed out a message after the loss"), 10) == 0
        assert len(told) == 1 and "evicted" in str(told[0])
        position = pub.offer(b"two")
        assert position > 0
        for s in (sub, cb):
            got: list = []
            while not got:
                assert time.monotonic() < deadline + 30
                s.poll(lambda d, h: got.append((bytes(d), h.position)), 10)
            assert got == [(b"two", position)]


_CLOSE_UNDER_C_HANDLERS = r"""
import os, threading, time
from pathlib import Path
import lockstep

d = Path(os.environ["LOCKSTEP_DIR"])
sub = lockstep.Subscription(77, d)
pubs = [lockstep.Publication(77, d, exclusive=True, term_length=1 << 16) for _ in range(3)]
deadline = time.monotonic() + 60
while not (sub.discover() == 3 and all(p.is_connected for p in pubs)):
    assert time.monotonic() < deadline
    time.sleep(0.001)
for i in range(20):
    for k, pub in enumerate(pubs):
        assert pub.offer(b"%d:%02d:" % (k, i) + bytes(900)) > 0  # (within the publisher window)
assert type(sub.poll).__name__ == "PollAny"

def close_from_another_thread(obj):
    t = threading.Thread(target=obj.close)
    t.start()
    t.join()
    assert obj.closed

seen = []
def handler(data, header):
    if not seen:
        close_from_another_thread(sub)
    seen.append(bytes(data))  # after close() returned: still mapped, intact
n = sub.poll(handler, 100)
session = seen[0][:2]
assert n == len(seen) == 20 and seen == [session + b"%02d:" % i + bytes(900) for i in range(20)], n
try:
    sub.poll(handler, 100)
    raise AssertionError("poll after close answered")
except lockstep.ClosedError:
    pass

path = d / "ring"
ring = lockstep.ManyToOneRing(path, 1 << 16)
for i in range(30):
    assert ring.write(1, b"%02d" % i + bytes(1000))
got = []
def controlled(msg_type_id, data):
    if not got:
        close_from_another_thread(ring)
    got.append(bytes(data))
    return lockstep.ControlledAction.CONTINUE
assert ring.controlled_read(controlled, 30) == 30 and got == [b"%02d" % i + bytes(1000) for i in range(30)]
with lockstep.ManyToOneRing(path) as again:  # what was handed out was consumed
    assert again.size() == 0
for pub in pubs:
    pub.close()
print("ok")
"""


def test_close_from_another_thread_under_a_c_handler_keeps_the_views_mapped(lsdir):
    """close() from another thread while a handler of the C poll (over several images) or the C
    controlled_read runs: the handler's view is still mapped and intact after close() returns,
    the call hands out (and consumes) what it already took, then ClosedError. (Without the C
    poll counting as in flight the unmap came at once: SIGSEGV; a ring read that stopped at the
    close left what it had handed out unconsumed.)"""
    from helpers import run_python

    proc = run_python(_CLOSE_UNDER_C_HANDLERS, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit {proc.returncode}\n{proc.stderr[-3000:]}")


def test_poll_in_c_confirms_what_it_handed_out_so_a_reader_that_kept_up_is_never_told_lapped(lsdir):
    """A private LogReader (nothing holds the writers back) reads term 0 to its very end, and a
    poll that finds nothing more confirms those views were intact (as the Python poll's
    `_nothing_yet` does). When the writers then move into term 2 — two terms past where that batch
    began, not past the position — the reader is not lapped: it gets term 1 intact, in order,
    and no ImageLostError for bytes it had already been handed and confirmed."""
    from lockstep.transport.logbuffer import LogBuffer

    pub, live = _connected(lsdir)
    with pub, live:
        payload = 1024 - 32  # one 1 KiB frame each: a term holds exactly TERM // 1024 of them
        per_term = TERM // 1024

        def send(first: int, count: int) -> None:
            for i in range(first, first + count):
                deadline = time.monotonic() + 30
                while pub.offer(_message(i, payload)) <= 0:
                    assert time.monotonic() < deadline, f"offer {i} stuck"
                    live.poll(lambda d, h: None, 1000)
                live.poll(lambda d, h: None, 1000)

        assert pub.position == 0
        reader = LogReader(LogBuffer.open(pub.path, writable=True), 0)
        with reader:
            got: list[bytes] = []
            take = lambda d, h: got.append(bytes(d))  # noqa: E731
            send(0, per_term)  # term 0, to its end
            assert reader.poll(take, 1000) == per_term and reader.position == TERM
            assert reader.poll(take, 1000) == 0  # nothing more: what it handed out is confirmed
            send(per_term, per_term + 3)  # all of term 1, and into term 2
            assert reader.poll(take, 1000) == per_term + 3
            assert got == [_message(i, payload) for i in range(2 * per_term + 3)]


@pytest.mark.parametrize("timeout", ["x", -1, float("nan"), True])
def test_receive_with_a_timeout_that_is_not_seconds_is_an_invalid_argument(lsdir, timeout):
    with lockstep.Subscription(41) as sub:
        with pytest.raises(lockstep.InvalidArgumentError, match="timeout"):
            sub.receive(timeout=timeout)
        assert sub.receive(timeout=0.01) is None  # a real timeout still times out


def test_block_poll_hands_the_raw_frames_once_and_a_failed_block_again(lsdir):
    """block_poll (Aeron's blockPoll, the recorder's read): the blocks it hands are the frames
    as they lie, in order, no gap, no repeat, split at term ends (padding and fragments
    included: parsed back, they give every message intact); a handler that raises gets the
    same block on the next call."""
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        start = image.position
        messages = [_message(i, size) for i, size in enumerate([100, 3000, 40, 8000, 7, 5000, 64] * 12)]
        blocks: list[tuple[int, bytes]] = []
        calls = []

        def copy(block, position):
            calls.append(position)
            if len(calls) in (3, 9):
                raise OSError("disk full")
            blocks.append((position, bytes(block)))

        failed = 0
        for message in messages:
            assert pub.offer(message) > 0
            while True:
                try:
                    if not image.block_poll(copy, 4):
                        break
                except OSError:
                    failed += 1  # handed again by the next call
        assert failed == 2 and calls[2] == calls[3] and calls[8] == calls[9]  # the failed block came again
        end = image.position
        assert end == pub.position and blocks[0][0] == start and end - start > 2 * TERM
        assert all(p + len(b) == q for (p, b), (q, _) in zip(blocks, blocks[1:]))  # no gap, no repeat
        assert blocks[-1][0] + len(blocks[-1][1]) == end
        assert all(p // TERM == (p + len(b) - 1) // TERM for p, b in blocks)  # one term each
        stream = b"".join(b for _, b in blocks)
        got, partial, at = [], b"", 0
        while at < len(stream):
            length, _, flags, kind = struct.unpack_from("<iBBH", stream, at)  # Aeron's frame header
            if kind == 1:  # data: reassemble B..E
                partial = (b"" if flags & 0x80 else partial) + stream[at + 32:at + length]
                if flags & 0x40:
                    got.append(partial)
            at += (length + 31) & ~31
        assert got == messages
