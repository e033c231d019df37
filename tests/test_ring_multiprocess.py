"""Stress: real producer processes, one consumer (this test process), a real mapped ring.

Every message must arrive exactly once, in order per producer, with an intact payload
(length and crc32 checked). Producers and the consumer back off when there is nothing to
do (2 cores: spinning would starve the other side). No wall-clock asserts; the consumer
gives up with a clear message if nothing arrives for 60 s.
"""

from __future__ import annotations

import pytest

import workers
from helpers import drain
from lockstep import ManyToOneRing, OneToOneRing

pytestmark = pytest.mark.slow


def test_many_to_one_four_producers(lsdir, procs):
    producers, per_producer = 4, 250_000
    path = lsdir / "mpsc"
    with ManyToOneRing(path, 64 * 1024) as ring:
        for p in range(producers):
            procs.start(workers.produce, str(path), "many", p, per_producer)
        checker = workers.StressChecker(producers)
        got = drain(ring, checker.handler, expected=producers * per_producer)
        procs.join_all()
        assert got == producers * per_producer
        assert checker.seen == [per_producer] * producers
        # Nothing more, nothing half-written: the ring is empty and consistent.
        assert ring.read(checker.handler) == 0
        assert ring.size() == 0
        assert ring.producer_position == ring.consumer_position
        assert ring.producer_position > 100 * ring.capacity  # wrapped many times


def test_one_to_one_single_producer(lsdir, procs):
    count = 1_000_000
    path = lsdir / "spsc"
    with OneToOneRing(path, 256 * 1024) as ring:
        procs.start(workers.produce, str(path), "one", 0, count)
        checker = workers.StressChecker(1)
        got = drain(ring, checker.handler, expected=count)
        procs.join_all()
        assert got == count
        assert checker.seen == [count]
        assert ring.read(checker.handler) == 0
        assert ring.size() == 0
        assert ring.producer_position == ring.consumer_position
