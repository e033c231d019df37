"""Fault injection with real processes: producers SIGKILLed between claim and commit or in
the middle of a stream of writes. The consumer must be able to get past them with
`unblock()` and lose nothing written by the living."""

from __future__ import annotations

import mmap
import struct
import time

import pytest

import workers
from helpers import drain
from lockstep import BackoffIdleStrategy, ManyToOneRing, OneToOneRing

pytestmark = pytest.mark.slow

TAIL_OFFSET = 128  # trailer offsets (spec section 1)


def test_producer_killed_between_claim_and_commit(lsdir, procs, mp):
    path = lsdir / "claim-kill"
    before, others = 50, 3000  # others' messages more than fill the ring: they back off
    with ManyToOneRing(path, 64 * 1024) as ring:
        claimed = mp.Event()
        victim = procs.start(workers.claim_and_hang, str(path), "many", 0, before, claimed)
        assert claimed.wait(60), "victim never claimed"
        writer = procs.start(workers.produce, str(path), "many", 1, others)

        checker = workers.StressChecker(2)
        # Everything before the claim is readable.
        assert drain(ring, checker.handler, expected=before) == before
        assert checker.seen == [before, 0]
        # Wait until the other producer has filled the ring behind the claim (it is then
        # back-pressured): the consumer is stuck at the claimed record.
        idle, deadline = BackoffIdleStrategy(), time.monotonic() + 60
        while ring.size() < ring.capacity // 2:
            assert time.monotonic() < deadline, f"other producer wrote only {ring.size()} bytes"
            idle.idle(0)
        stuck_at = ring.consumer_position
        assert ring.read(checker.handler) == 0
        assert ring.consumer_position == stuck_at
        assert checker.seen == [before, 0]

        procs.kill(victim)
        assert ring.read(checker.handler) == 0  # still stuck: nobody will commit it
        assert ring.consumer_position == stuck_at
        assert ring.unblock() is True

        # The consumer continues; every message of the living producer arrives, in order.
        assert drain(ring, checker.handler, expected=others) == others
        procs.join_all()  # the writer finished
        assert checker.seen == [before, others]
        assert ring.read(checker.handler) == 0
        assert ring.size() == 0
        assert ring.producer_position == ring.consumer_position
        assert ring.unblock() is False  # nothing left to unblock

        # The ring is fully usable afterwards.
        assert ring.write(9, b"after")
        got = []
        assert ring.read(lambda t, d: got.append((t, bytes(d)))) == 1
        assert got == [(9, b"after")]


@pytest.mark.parametrize("kind,cls", [("many", ManyToOneRing), ("one", OneToOneRing)])
def test_producer_killed_mid_stream(lsdir, procs, kind, cls):
    path = lsdir / f"stream-kill-{kind}"
    with cls(path, 32 * 1024) as ring:
        victim = procs.start(workers.produce_forever, str(path), kind, 0)
        checker = workers.StressChecker(2)
        # Consume while it writes (it never stops), then kill it at an arbitrary point.
        assert drain(ring, checker.handler, expected=2500) >= 2500
        procs.kill(victim)

        # A record from a living producer after whatever the dead one left (room made first:
        # the producer may have filled the ring before it died, more so on a loaded machine).
        while not ring.write(2, workers.make_message(1, 0)):
            if not ring.read(checker.handler):
                assert ring.unblock(), "ring full, with nothing to read and nothing to unblock"
        # Drain. If it died inside a write (tail moved, record not committed), the consumer
        # is stuck with data behind it; the producer is dead, so unblock (at most twice:
        # a claim that wrapped leaves a gap at the end and one at the start).
        unblocked = 0
        while True:
            if ring.read(checker.handler):
                continue
            if ring.size() == 0:
                break
            assert ring.unblock(), "stuck with data in the ring and nothing to unblock"
            unblocked += 1
        assert unblocked <= 2
        written = checker.seen[0]
        assert written >= 2500  # a contiguous prefix of its stream, every message intact
        assert checker.seen[1] == 1
        assert ring.producer_position == ring.consumer_position

        # Consistent: a new producer of the same kind writes through it, wrapping, and
        # every message arrives (for a one-to-one ring the dead producer's place is free).
        procs.start(workers.produce, str(path), kind, 1, 5000, 1)
        drain(ring, checker.handler, expected=5000)
        procs.join_all()
        assert checker.seen == [written, 5001]
        assert ring.size() == 0


def test_unblock_gap_left_by_producer_dead_before_writing_its_header(lsdir):
    """A producer that advanced the tail and died before writing its record header leaves
    a zero gap; records after it are stuck until unblock pads the gap."""
    path = lsdir / "gap"
    with ManyToOneRing(path, 1024) as ring:
        ring.write(1, b"first")
        # Move the tail by 48 bytes as a claim does, then never write the record.
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            tail_at = 1024 + TAIL_OFFSET
            (tail,) = struct.unpack_from("<q", m, tail_at)
            struct.pack_into("<q", m, tail_at, tail + 48)
        ring.write(2, b"after the gap")
        got = []
        handler = lambda t, d: got.append((t, bytes(d)))  # noqa: E731
        assert ring.read(handler) == 1
        assert ring.read(handler) == 0
        assert ring.size() == 48 + 24
        assert ring.unblock() is True
        assert ring.read(handler) == 1
        assert got == [(1, b"first"), (2, b"after the gap")]
        assert ring.size() == 0


def test_unblock_does_nothing_on_a_healthy_ring(lsdir):
    with ManyToOneRing(lsdir / "healthy", 1024) as ring:
        assert ring.unblock() is False  # empty
        ring.write(1, b"committed")
        assert ring.unblock() is False  # committed record at the head: not blocked
        got = []
        assert ring.read(lambda t, d: got.append(bytes(d))) == 1
        assert got == [b"committed"]
