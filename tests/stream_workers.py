"""Functions run in real worker processes (spawned interpreters) by the stream tests
(publications and subscriptions), and the message format they share with the test.

A stream message is `HEADER (producer, seq, payload length, crc32 of payload)` followed by a
payload whose length depends on (producer, seq) only: a checker can tell that every message
arrived exactly once, in order per producer, intact and not truncated.

Every loop backs off with `lockstep.BackoffIdleStrategy` while it cannot make progress (the
test machine has 2 cores), and gives up with an error after `STALL_S` seconds without any.
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib

import lockstep

HEADER = struct.Struct("<IIII")
MTU = 1408
MAX_PAYLOAD = 3 * MTU - HEADER.size  # whole message up to 3 x MTU: 4 frames
STALL_S = 60.0
_BLOBS: dict[int, bytes] = {}


def payload_length(producer: int, seq: int) -> int:
    """1 .. MAX_PAYLOAD bytes, drawn from (producer, seq): mostly small, every size class
    (one frame, two, three, four frames) often."""
    h = (seq * 2654435761 + producer * 40503 + 12345) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 2246822519) & 0xFFFFFFFF
    h ^= h >> 13
    kind = h % 16
    if kind < 11:
        return 1 + (h >> 8) % 200
    if kind < 14:
        return 1 + (h >> 8) % 1400
    return 1 + (h >> 8) % MAX_PAYLOAD


def _blob(producer: int) -> bytes:
    blob = _BLOBS.get(producer)
    if blob is None:
        blob = _BLOBS[producer] = random.Random(1000 + producer).randbytes(16384)
    return blob


def make_message(producer: int, seq: int) -> bytes:
    length = payload_length(producer, seq)
    start = (seq * 97) % 8192
    payload = _blob(producer)[start:start + length]
    return HEADER.pack(producer, seq, length, zlib.crc32(payload)) + payload


class StreamChecker:
    """Consumer side: `handler(data, header)` checks each message; `seen[p]` counts producer
    p's messages. Any loss, duplicate, reordering, truncation or corruption raises."""

    def __init__(self, producers: int) -> None:
        self.seen = [0] * producers
        self.sessions: dict[int, set[int]] = {}
        self.count = 0

    def check(self, data) -> int:
        producer, seq, length, crc = HEADER.unpack_from(data)
        if producer >= len(self.seen):
            raise AssertionError(f"unknown producer {producer}")
        expected = self.seen[producer]
        if seq != expected:
            raise AssertionError(
                f"producer {producer}: expected seq {expected}, got {seq} (lost, duplicated or reordered)")
        if length != payload_length(producer, seq) or len(data) != HEADER.size + length:
            raise AssertionError(
                f"producer {producer} seq {seq}: payload length {len(data) - HEADER.size}, expected {length}")
        if zlib.crc32(data[HEADER.size:]) != crc:
            raise AssertionError(f"producer {producer} seq {seq}: payload checksum mismatch")
        self.seen[producer] = expected + 1
        self.count += 1
        return producer

    def handler(self, data, header) -> None:
        producer = self.check(data)
        self.sessions.setdefault(producer, set()).add(header.session_id)


def offer_with_backoff(pub: lockstep.Publication, msg, idle, *, stall_s: float = STALL_S) -> int:
    """Offer until accepted; back off on NOT_CONNECTED / BACK_PRESSURED / ADMIN_ACTION."""
    result = pub.offer(msg)
    if result > 0:
        return result
    deadline = time.monotonic() + stall_s
    while True:
        if result == lockstep.CLOSED or result == lockstep.MAX_POSITION_EXCEEDED:
            raise AssertionError(f"offer failed: {lockstep.status_name(result)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress for {stall_s} s: last offer {lockstep.status_name(result)}")
        idle.idle(0)
        result = pub.offer(msg)
        if result > 0:
            idle.reset()
            return result


def wait_connected(pub: lockstep.Publication, subscribers: int = 1, timeout: float = STALL_S) -> None:
    """Wait until `subscribers` position counters are registered for the publication's log."""
    deadline = time.monotonic() + timeout
    idle = lockstep.SleepingIdleStrategy(1_000_000)
    while len(pub._subscribers()) < subscribers:
        if time.monotonic() > deadline:
            raise AssertionError(f"{pub}: {len(pub._subscribers())} of {subscribers} subscribers after {timeout} s")
        idle.idle(0)


# -- publishers --------------------------------------------------------------------------------

def publish(stream_id: int, producer: int, count: int, exclusive: bool, term_length: int, ready, go) -> None:
    """Create the publication, report (producer, session id, path) on `ready`, wait for `go`,
    then offer messages 0..count-1 of `producer` with back-off, and close."""
    pub = lockstep.Publication(stream_id, exclusive=exclusive, term_length=term_length)
    ready.put((producer, pub.session_id, str(pub.path)))
    if not go.wait(STALL_S):
        raise AssertionError("never told to go")
    idle = lockstep.BackoffIdleStrategy()
    for seq in range(count):
        offer_with_backoff(pub, make_message(producer, seq), idle)
    pub.close()


def publish_counter_batches(stream_id: int, count: int, batch: int, term_length: int, ready) -> None:
    """Exclusive publication of `count` 8-byte messages holding 0..count-1 (uint64), offered
    with `offer_batch` `batch` at a time (back-off when not all were accepted)."""
    import numpy as np

    pub = lockstep.Publication(stream_id, exclusive=True, term_length=term_length)
    ready.put((pub.session_id, str(pub.path)))
    wait_connected(pub)
    idle = lockstep.BackoffIdleStrategy()
    offsets = np.arange(batch, dtype=np.int64) * 8
    lengths = np.full(batch, 8, dtype=np.int32)
    next_seq = 0
    last_progress = time.monotonic()
    while next_seq < count:
        n = min(batch, count - next_seq)
        data = np.arange(next_seq, next_seq + n, dtype="<u8")
        accepted, result = pub.offer_batch(data, offsets[:n], lengths[:n])
        next_seq += accepted
        if accepted:
            last_progress = time.monotonic()
            idle.reset()
            continue
        if result in (lockstep.CLOSED, lockstep.MAX_POSITION_EXCEEDED):
            raise AssertionError(f"offer_batch failed: {lockstep.status_name(result)}")
        if time.monotonic() - last_progress > STALL_S:
            raise AssertionError(f"no progress for {STALL_S} s at seq {next_seq}: {lockstep.status_name(result)}")
        idle.idle(0)
    pub.close()


def publish_then_hang(stream_id: int, producer: int, count: int, exclusive: bool, term_length: int,
                      published) -> None:
    """Offer `count` messages, report the position on `published`, then sleep until killed."""
    pub = lockstep.Publication(stream_id, exclusive=exclusive, term_length=term_length)
    idle = lockstep.BackoffIdleStrategy()
    position = 0
    for seq in range(count):
        position = offer_with_backoff(pub, make_message(producer, seq), idle)
    published.put((pub.session_id, str(pub.path), position))
    while True:
        time.sleep(3600)


def claim_and_hang(stream_id: int, producer: int, before: int, term_length: int, claimed,
                   fill: bool = True) -> None:
    """On a SHARED stream: offer `before` messages, then try_claim a frame, fill part of it
    (with `fill`), report (claim position, length) on `claimed` and sleep until killed: a
    publisher dying between claim and commit."""
    pub = lockstep.Publication(stream_id, term_length=term_length)
    idle = lockstep.BackoffIdleStrategy()
    for seq in range(before):
        offer_with_backoff(pub, make_message(producer, seq), idle)
    deadline = time.monotonic() + STALL_S
    while True:
        claim = pub.try_claim(200)
        if claim:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no claim: {lockstep.status_name(claim.status)}")
        idle.idle(0)
    if fill:
        claim.buffer[:100] = b"\xee" * 100
    claimed.put((claim.position, 200))
    while True:
        time.sleep(3600)


# -- subscribers -------------------------------------------------------------------------------

def subscribe_and_check(stream_id: int, producers: int, per_producer: int, images: int, ready, result) -> None:
    """Subscribe, report on `ready` once `images` images are attached, then receive every
    message of every producer with `StreamChecker`; put a summary (or the error) on `result`."""
    try:
        sub = lockstep.Subscription(stream_id)
        deadline = time.monotonic() + STALL_S
        idle = lockstep.BackoffIdleStrategy()
        checker = StreamChecker(producers)
        while sub.image_count < images:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {sub.image_count} of {images} images after {STALL_S} s")
            sub.poll(checker.handler, 10)  # housekeeping discovers the logs
            idle.idle(0)
        ready.put(os.getpid())
        total = producers * per_producer
        last_progress = time.monotonic()
        while checker.count < total:
            n = sub.poll(checker.handler, 256)
            if n:
                last_progress = time.monotonic()
                idle.reset()
                continue
            if time.monotonic() - last_progress > STALL_S:
                raise AssertionError(f"no message for {STALL_S} s: {checker.count} of {total}, seen {checker.seen}")
            idle.idle(0)
        result.put({"ok": True, "seen": checker.seen, "count": checker.count,
                    "sessions": {p: sorted(s) for p, s in checker.sessions.items()}})
        sub.close()
    except BaseException as e:  # report, so the test fails with the reason, not a timeout
        result.put({"ok": False, "error": f"{type(e).__name__}: {e}"})
        raise


def subscribe_then_stall(stream_id: int, read: int, commands, positions) -> None:
    """Subscribe (live), read `read` messages, report this subscriber's position on
    `positions`, then stop polling for good (sleep until killed) — a stalled or dead
    subscriber as the publisher sees it. `commands` gets "stop" to exit cleanly."""
    sub = lockstep.Subscription(stream_id)
    idle = lockstep.BackoffIdleStrategy()
    got = 0
    deadline = time.monotonic() + STALL_S
    while sub.image_count == 0:
        if time.monotonic() > deadline:
            raise AssertionError("no image")
        sub.poll(lambda d, h: None, 10)
        idle.idle(0)
    positions.put(("attached", sub.images[0].position))
    while got < read:
        n = sub.poll(lambda d, h: None, read - got)
        got += n
        if n == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {got} of {read}")
            idle.idle(0)
    positions.put(("stalled", sub.images[0].position))
    while True:
        try:
            if commands.get(timeout=3600) == "stop":
                sub.close()
                return
        except Exception:
            pass
