"""Streams across real processes (spawned interpreters mapping the same files): many shared
publishers to two subscribers, and one exclusive publisher streaming a million messages.
Every process backs off when it cannot progress; the guards are no-progress timeouts, never
wall-clock limits on speed."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest

import stream_workers as sw
from lockstep import BackoffIdleStrategy, Subscription
from lockstep.transport.client import TYPE_SUBSCRIBER_POSITION, client_for

pytestmark = pytest.mark.slow
STALL_S = 60.0


def _get(q, what: str, timeout: float = STALL_S):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def _wait_subscribers(session_id: int, stream_id: int, count: int, lsdir) -> None:
    counters = client_for(lsdir).counters
    deadline = time.monotonic() + STALL_S
    while len(counters.find_stream(TYPE_SUBSCRIBER_POSITION, session_id, stream_id)) < count:
        assert time.monotonic() < deadline, f"{count} subscribers did not attach"
        time.sleep(0.01)


def test_three_shared_publishers_two_subscribers(lsdir, procs, mp):
    """3 publisher processes x 200k messages of 17 B .. 3 x MTU (crc32 inside) on one shared
    stream -> a subscriber process and this test: each gets every message exactly once,
    intact, in order per publisher."""
    stream, producers, per_producer = 3001, 3, 200_000
    ready, go, sub_ready, sub_result = mp.Queue(), mp.Event(), mp.Queue(), mp.Queue()
    publishers = [procs.start(sw.publish, stream, p, per_producer, False, 1 << 20, ready, go)
                  for p in range(producers)]
    infos = [_get(ready, "publisher ready") for _ in publishers]
    session_ids = {session for _, session, _ in infos}
    assert len(session_ids) == 1, "shared publishers must share one log (one session)"
    session_id = session_ids.pop()

    # Both subscribers attach before anything is published (they join at the live position).
    sub = Subscription(stream)
    assert sub.image_count == 1
    procs.start(sw.subscribe_and_check, stream, producers, per_producer, 1, sub_ready, sub_result)
    _get(sub_ready, "subscriber process ready")
    _wait_subscribers(session_id, stream, 2, lsdir)
    go.set()

    checker = sw.StreamChecker(producers)
    total = producers * per_producer
    idle = BackoffIdleStrategy()
    last_progress = time.monotonic()
    with sub:
        while checker.count < total:
            n = sub.poll(checker.handler, 256)
            if n:
                last_progress = time.monotonic()
                idle.reset()
                continue
            if time.monotonic() - last_progress > STALL_S:
                raise AssertionError(f"no message for {STALL_S} s: {checker.count} of {total}, per producer "
                                     f"{checker.seen}; publishers alive {[p.is_alive() for p in publishers]}")
            idle.idle(0)
        assert checker.seen == [per_producer] * producers
        assert {p: sorted(s) for p, s in checker.sessions.items()} == {p: [session_id] for p in range(producers)}
        result = _get(sub_result, "subscriber process result", timeout=STALL_S * 2)
        assert result["ok"], result.get("error")
        assert result["seen"] == [per_producer] * producers
        assert result["count"] == total
        # Nothing extra after the last message.
        time.sleep(0.2)
        assert sub.poll(lambda d, h: pytest.fail(f"extra message {bytes(d)[:16]!r}"), 10) == 0
    procs.join_all(timeout=STALL_S)


def test_exclusive_publication_one_million_messages_in_order(lsdir, procs, mp):
    """One exclusive publisher process offer_batch'es 1M 8-byte sequence numbers; this test
    reads them with poll_batch (numpy, no per-message Python call): all, once, in order."""
    stream, count = 3002, 1_000_000
    ready = mp.Queue()
    sub = Subscription(stream)
    procs.start(sw.publish_counter_batches, stream, count, 256, 1 << 20, ready)
    session_id, path = _get(ready, "publisher ready")
    expected_next = 0
    positions_ok = True
    last_position = 0
    idle = BackoffIdleStrategy()
    offsets8 = np.arange(8)

    def on_batch(batch) -> None:
        nonlocal expected_next, positions_ok, last_position
        assert batch.session_id == session_id
        assert (batch.lengths == 8).all(), "every message is 8 bytes"
        values = batch.buffer[batch.offsets[:, None] + offsets8].view("<u8").ravel()
        n = len(values)
        if not np.array_equal(values, np.arange(expected_next, expected_next + n, dtype="<u8")):
            bad = int(np.flatnonzero(values != np.arange(expected_next, expected_next + n, dtype="<u8"))[0])
            raise AssertionError(f"message {expected_next + bad}: got {int(values[bad])} (lost or reordered)")
        positions = batch.positions
        positions_ok &= bool(positions[0] > last_position and (np.diff(positions) > 0).all())
        last_position = int(positions[-1])
        expected_next += n

    last_progress = time.monotonic()
    with sub:
        while expected_next < count:
            n = sub.poll_batch(on_batch)
            if n:
                last_progress = time.monotonic()
                idle.reset()
                continue
            if time.monotonic() - last_progress > STALL_S:
                raise AssertionError(f"no message for {STALL_S} s: {expected_next} of {count}")
            idle.idle(0)
        assert expected_next == count
        assert positions_ok
        assert last_position == count * 64  # 8-byte payload + 32-byte header, aligned to 32
        procs.join_all(timeout=STALL_S)
        # The publisher closed: the image ends at its end-of-stream and the log is removed.
        deadline = time.monotonic() + STALL_S
        while sub.image_count:
            assert sub.poll(lambda d, h: pytest.fail("extra message"), 10) == 0
            assert time.monotonic() < deadline, "image never finished"
            time.sleep(0.01)
    import pathlib
    assert not pathlib.Path(path).exists()
