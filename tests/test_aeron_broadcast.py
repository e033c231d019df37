"""The broadcast receiver against a transmitter written from spec/aeron-driver-protocol.md §2.2
(records, padding at the wrap, tail intent/latest/tail stores): every record once and intact
while it keeps up; a lapped receiver says so and resumes at the latest record."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockstep.aeron.broadcast import BroadcastReceiver, Lapped

CAPACITY = 1024
TRAILER = 128


class Transmitter:
    """Aeron's broadcast transmitter, in Python, over a bytearray."""

    def __init__(self, buffer: bytearray) -> None:
        self.buf = buffer
        self.words = memoryview(buffer).cast("q")
        self.t = CAPACITY // 8  # trailer word index: intent, tail, latest

    def send(self, msg_type: int, payload: bytes) -> None:
        length = 8 + len(payload)
        aligned = (length + 7) & ~7
        tail = self.words[self.t + 1]
        index = tail & (CAPACITY - 1)
        gap = CAPACITY - index
        if aligned > gap:  # padding to the end, the record at index 0
            self.words[self.t] = tail + aligned + gap
            struct.pack_into("<ii", self.buf, index, gap, -1)
            tail += gap
            index = 0
        else:
            self.words[self.t] = tail + aligned
        struct.pack_into("<ii", self.buf, index, length, msg_type)
        self.buf[index + 8:index + 8 + len(payload)] = payload
        self.words[self.t + 2] = tail
        self.words[self.t + 1] = tail + aligned


def make():
    buf = bytearray(CAPACITY + TRAILER)
    return Transmitter(buf), BroadcastReceiver(memoryview(buf), 0, CAPACITY)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=CAPACITY // 8), min_size=1, max_size=60), st.integers(1, 8))
def test_every_record_once_and_intact_while_keeping_up(payloads, batch):
    tx, rx = make()
    got = []
    for i, payload in enumerate(payloads):
        tx.send(0x0F00 + (i % 16), payload)
        if i % batch == batch - 1:
            while (record := rx.receive()) is not None:
                got.append(record)
    while (record := rx.receive()) is not None:
        got.append(record)
    assert got == [(0x0F00 + (i % 16), p) for i, p in enumerate(payloads)]


def test_a_new_receiver_sees_the_latest_record_once():
    tx, _ = make()
    tx.send(1, b"old")
    tx.send(2, b"latest")
    rx = BroadcastReceiver(memoryview(tx.buf), 0, CAPACITY)
    assert rx.receive() == (2, b"latest")
    assert rx.receive() is None


def test_lapped_receiver_reports_and_resumes_at_the_latest():
    tx, rx = make()
    for i in range(100):  # 100 x 72 bytes through a 1 KiB buffer: far past the receiver
        tx.send(7, bytes([i]) * 64)
    with pytest.raises(Lapped):
        rx.receive()
    assert rx.lapped_count == 1
    assert rx.receive() == (7, bytes([99]) * 64)
    tx.send(8, b"next")
    assert rx.receive() == (8, b"next")
    assert rx.receive() is None
