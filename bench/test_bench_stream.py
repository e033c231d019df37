"""Stream micro benchmarks from Python, one process: offer, receive, poll, try_claim and the
batch paths, per message, next to the floor (an empty cffi call) measured in the same run.

Run: pytest bench/ --benchmark-only   (see bench/README.md)
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from lockstep import ControlledAction, Publication, Subscription

PAYLOAD = bytes(range(32))
BATCH = 1024
STREAM = 1301


@pytest.fixture
def stream(lsdir):
    """A connected exclusive publication (1 MiB terms) and its subscription."""
    sub = Subscription(STREAM, lsdir)
    pub = Publication(STREAM, lsdir, exclusive=True)
    deadline = time.monotonic() + 30
    while not (sub.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "no connection"
        time.sleep(0.001)
    yield pub, sub
    pub.close()
    sub.close()


_CONTINUE = ControlledAction.CONTINUE


def _continue(data, header):
    return _CONTINUE


def _noop(data, header):
    pass


@pytest.mark.benchmark(group="offer+read")
def test_offer_receive(benchmark, stream):
    """offer() one 32-byte message, receive() it back: the one-call-per-message paths."""
    pub, sub = stream
    offer, receive = pub.offer, sub.receive

    def offer_receive():
        offer(PAYLOAD)
        return receive()

    assert benchmark(offer_receive) == PAYLOAD


@pytest.mark.benchmark(group="offer+read")
def test_offer_poll_one(benchmark, stream):
    """offer() one message, poll(handler, 1) it: the handler form (a view and a header)."""
    pub, sub = stream
    offer, poll = pub.offer, sub.poll

    def offer_poll():
        offer(PAYLOAD)
        return poll(_noop, 1)

    assert benchmark(offer_poll) == 1


@pytest.mark.benchmark(group="offer+read")
def test_offer_controlled_poll_one(benchmark, stream):
    """offer() one message, controlled_poll(handler, 1) it, the handler returning CONTINUE: poll's C loop
    plus reading the action."""
    pub, sub = stream
    offer, poll = pub.offer, sub.controlled_poll

    def offer_poll():
        offer(PAYLOAD)
        return poll(_continue, 1)

    assert benchmark(offer_poll) == 1


@pytest.mark.benchmark(group="offer+read")
def test_offer_image_poll_one(benchmark, stream):
    """offer() one message, Image.poll(handler, 1) it: one image, no round-robin."""
    pub, sub = stream
    offer, poll = pub.offer, sub.images[0].poll

    def offer_poll():
        offer(PAYLOAD)
        return poll(_noop, 1)

    assert benchmark(offer_poll) == 1


@pytest.mark.benchmark(group="offer+read")
def test_offer_256_poll_256(benchmark, stream):
    """256 offer() calls, one poll(handler, 256): the handler called per message, the loop in C."""
    pub, sub = stream
    offer, poll = pub.offer, sub.poll

    def offer_poll():
        for _ in range(256):
            offer(PAYLOAD)
        return poll(_noop, 256)

    benchmark.extra_info["messages_per_call"] = 256
    assert benchmark(offer_poll) == 256


@pytest.mark.benchmark(group="offer+read")
def test_try_claim_commit_poll_one(benchmark, stream):
    """try_claim(32), fill, commit, poll(handler, 1): the Aeron way on both sides."""
    pub, sub = stream
    try_claim, poll = pub.try_claim, sub.poll

    def claim_poll():
        claim = try_claim(32)
        claim.buffer[:] = PAYLOAD
        claim.commit()
        return poll(_noop, 1)

    assert benchmark(claim_poll) == 1


@pytest.mark.benchmark(group="offer+read")
def test_try_claim_commit_receive(benchmark, stream):
    """try_claim(32), fill, commit, receive(): writing in place."""
    pub, sub = stream
    receive = sub.receive

    def claim_receive():
        claim = pub.try_claim(32)
        claim.buffer[:] = PAYLOAD
        claim.commit()
        return receive()

    assert benchmark(claim_receive) == PAYLOAD


@pytest.mark.benchmark(group="read")
def test_receive_empty(benchmark, stream):
    """receive() with nothing there: the cost of one idle spin."""
    assert benchmark(stream[1].receive) is None


@pytest.mark.benchmark(group="batch")
def test_offer_batch_poll_batch(benchmark, stream):
    """offer_batch of 1024 x 32 B and poll_batch of them: numpy arrays, no call per message."""
    pub, sub = stream
    data = np.zeros(32 * BATCH, dtype=np.uint8)
    offsets = np.arange(BATCH, dtype=np.int64) * 32
    lengths = np.full(BATCH, 32, dtype=np.int32)
    counted = [0]

    def count(batch):
        counted[0] += len(batch)

    def round_trip():
        accepted, _ = pub.offer_batch(data, offsets, lengths)
        while sub.poll_batch(count, BATCH):
            pass
        return accepted

    benchmark.extra_info["messages_per_call"] = BATCH
    assert benchmark(round_trip) == BATCH
