"""Functions run in real worker processes (spawned interpreters) by the multi-process and
fault tests, and the message format they share with the consuming test.

A stress message is `HEADER (producer, seq, payload length, crc32 of payload)` followed
by a payload whose length depends on (producer, seq): the consumer can check that every
message arrives exactly once, in order per producer, intact and not truncated.
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib

import lockstep

HEADER = struct.Struct("<IIII")
_BLOBS: dict[int, bytes] = {}


def ring_class(kind: str):
    return {"one": lockstep.OneToOneRing, "many": lockstep.ManyToOneRing}[kind]


def payload_length(producer: int, seq: int) -> int:
    """0..199 bytes, and every 997th message a large one (2000..2999) to exercise wrap."""
    if seq % 997 == 0:
        return 2000 + (seq * 13 + producer) % 1000
    return (seq * 7919 + producer * 31) % 200


def _blob(producer: int) -> bytes:
    blob = _BLOBS.get(producer)
    if blob is None:
        blob = _BLOBS[producer] = random.Random(producer).randbytes(8192)
    return blob


def make_message(producer: int, seq: int) -> bytes:
    length = payload_length(producer, seq)
    start = (seq * 97) % 4096
    payload = _blob(producer)[start:start + length]
    return HEADER.pack(producer, seq, length, zlib.crc32(payload)) + payload


class StressChecker:
    """The consumer side: `handler` checks each message; `seen[p]` counts producer p's."""

    def __init__(self, producers: int) -> None:
        self.seen = [0] * producers

    def handler(self, msg_type_id: int, data: memoryview) -> None:
        producer, seq, length, crc = HEADER.unpack_from(data)
        if msg_type_id != producer + 1:
            raise AssertionError(f"message of producer {producer} has type id {msg_type_id}")
        expected = self.seen[producer]
        if seq != expected:
            raise AssertionError(f"producer {producer}: expected seq {expected}, got {seq} (lost, duplicated or reordered)")
        if length != payload_length(producer, seq) or len(data) != HEADER.size + length:
            raise AssertionError(f"producer {producer} seq {seq}: payload length {len(data) - HEADER.size}, expected {length}")
        if zlib.crc32(data[HEADER.size:]) != crc:
            raise AssertionError(f"producer {producer} seq {seq}: payload checksum mismatch")
        self.seen[producer] = expected + 1


def produce(path: str, kind: str, producer: int, count: int, first_seq: int = 0) -> None:
    """Write messages first_seq..first_seq+count-1 of `producer`, backing off while full."""
    ring = ring_class(kind)(path)
    idle = lockstep.BackoffIdleStrategy()
    write = ring.write
    type_id = producer + 1
    for seq in range(first_seq, first_seq + count):
        msg = make_message(producer, seq)
        if not write(type_id, msg):
            while not write(type_id, msg):
                idle.idle(0)
            idle.reset()
    ring.close()


def produce_forever(path: str, kind: str, producer: int) -> None:
    """Write messages with increasing seq until killed."""
    ring = ring_class(kind)(path)
    idle = lockstep.BackoffIdleStrategy()
    seq = 0
    while True:
        msg = make_message(producer, seq)
        while not ring.write(producer + 1, msg):
            idle.idle(0)
        idle.reset()
        seq += 1


def claim_and_hang(path: str, kind: str, producer: int, before: int, claimed) -> None:
    """Write `before` messages, then claim space for one more, fill half of it, set
    `claimed` and sleep until killed: a producer dying between claim and commit."""
    ring = ring_class(kind)(path)
    for seq in range(before):
        assert ring.write(producer + 1, make_message(producer, seq))
    claim = ring.try_claim(producer + 1, 64)
    assert claim is not None
    claim.buffer[:32] = b"\xee" * 32
    claimed.set()
    while True:
        time.sleep(3600)


def counters_allocate(dir: str, count: int, barrier, results) -> None:
    """At the same moment as the other workers (`barrier`), open the directory's counters
    (racing to create cnc.dat); then, again all together, allocate `count` counters
    labelled with our pid and put `(pid, ids)` on `results`."""
    barrier.wait(60)
    counters = lockstep.Counters(dir)
    barrier.wait(60)
    pid = os.getpid()
    ids = []
    for i in range(count):
        c = counters.allocate(1500, f"pid {pid} #{i}", key=struct.pack("<qi", pid, i))
        c.set(pid * 1000 + i)
        ids.append(c.id)
    results.put((pid, ids))
    counters.close()


def counters_set_then_read(dir: str, counter_id: int, value: int, seen, done) -> None:
    """Set counter `counter_id` to `value`; then wait until the parent sets it to
    `value + 1` and report that through `seen` (values cross processes both ways)."""
    counters = lockstep.Counters(dir)
    counters.set(counter_id, value)
    deadline = time.monotonic() + 60
    idle = lockstep.BackoffIdleStrategy()
    while counters.get(counter_id) != value + 1 and time.monotonic() < deadline:
        idle.idle(0)
    seen.put(counters.get(counter_id))
    done.wait(60)
    counters.close()
