"""Processes for test_receive.py (spawned: importable at module level)."""

from __future__ import annotations

import struct
import time
import zlib

import lockstep

STALL_S = 60.0


def receive_blocking(dir: str, stream_id: int, count: int, out) -> None:
    """Report "attached" once a publisher's log is found, then receive `count` messages with
    receive(timeout=None) (blocking) and put each on `out`."""
    with lockstep.Subscription(stream_id, dir) as sub:
        deadline = time.monotonic() + STALL_S
        while not sub.discover():
            if time.monotonic() > deadline:
                raise AssertionError("no publisher appeared")
            time.sleep(0.005)
        out.put("attached")
        for _ in range(count):
            out.put(sub.receive(timeout=None))


def offer_numbered(dir: str, stream_id: int, count: int, term_length: int) -> None:
    """Offer `count` messages: sequence (int64), crc32 of the rest, a body of varying length."""
    with lockstep.Publication(stream_id, dir, exclusive=True, term_length=term_length) as pub:
        deadline = time.monotonic() + STALL_S
        while not pub.is_connected:
            if time.monotonic() > deadline:
                raise AssertionError("no subscriber appeared")
            time.sleep(0.001)
        idle = lockstep.BackoffIdleStrategy()
        for i in range(count):
            body = bytes((i + k) & 0xFF for k in range(i % 61))
            msg = struct.pack("<qI", i, zlib.crc32(body)) + body
            stalled_since = None
            while pub.offer(msg) < 0:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > STALL_S:
                    raise AssertionError(f"back-pressured for {STALL_S} s at message {i}")
                idle.idle(0)
            idle.reset()
        while pub.is_connected:  # the reader drains before the log goes
            time.sleep(0.01)
