"""Worker processes of the lost-image tests (tests/test_lost_images.py and the fault campaign's
SIGSTOP rounds): a subscriber that reads a stream of numbered messages with one of the read
calls, records every message and every loss it is told of, in order, and reports them.

A message is its sequence number (8 bytes) padded to 32 bytes: one 64-byte frame.

`check_events` is the rule every report must satisfy: messages in order, none twice, and
every jump in the sequence right after a loss was told. A message handed out as a view
(poll, poll_batch) that a loss told later starts at or before is retracted: the process was
paused while its handler read it, so it may have been overwritten (receive() copies and checks
before returning: nothing of it is ever retracted).
"""

from __future__ import annotations

import os
import struct
import time

import lockstep
import lockstep.transport.client

SEQ = struct.Struct("<q")
PAYLOAD = 32
FRAME = 64
STALL_S = 60.0
MODES = ("receive", "poll", "poll_batch", "callbacks")


def message(seq: int) -> bytes:
    return SEQ.pack(seq).ljust(PAYLOAD, b"\0")


def seq_of(data) -> int:
    return SEQ.unpack_from(data)[0]


def read_and_report(stream_id: int, mode: str, last_seq, attached, stop, result, *,
                    liveness_timeout_ms: int = lockstep.transport.client.DEFAULT_LIVENESS_TIMEOUT_MS) -> None:
    """Subscribe to `stream_id`, then read with `mode` until message `last_seq` (an int, or a
    shared value set later) or `stop`: report on `result` the events in order: ("msg", seq,
    position after it, None for receive) and ("lost", from, to, reason)."""
    events: list[tuple] = []
    last_of = (lambda: last_seq) if isinstance(last_seq, int) else (lambda: last_seq.value)

    def unavailable(image: lockstep.Image) -> None:
        if image.lost is not None:
            e = image.lost
            events.append(("lost", e.from_position, e.to_position, e.reason))

    sub = lockstep.Subscription(stream_id, liveness_timeout_ms=liveness_timeout_ms,
                                on_unavailable_image=unavailable if mode == "callbacks" else None)
    deadline = time.monotonic() + STALL_S
    while not sub.discover():
        if time.monotonic() > deadline:
            raise AssertionError("no publication to subscribe to")
        time.sleep(0.001)
    attached.put(os.getpid())
    got: list[int] = []

    def on_message(data, header) -> None:
        got.append((seq_of(data), header.position))

    def on_batch(batch) -> None:
        got.extend((seq_of(batch[i]), int(batch.positions[i])) for i in range(len(batch)))

    idle = lockstep.BackoffIdleStrategy()
    done = False
    last = time.monotonic()
    while not done and not stop.is_set():
        try:
            if mode == "receive":
                data = sub.receive()
                if data is not None:
                    got.append((seq_of(data), None))  # (a copy, checked before it is returned)
            elif mode == "poll_batch":
                sub.poll_batch(on_batch)
            else:
                sub.poll(on_message, 100)
        except lockstep.ImageLostError as e:
            events.append(("lost", e.from_position, e.to_position, e.reason))
        if got:
            events.extend(("msg", seq, position) for seq, position in got)
            done = got[-1][0] >= last_of()
            got.clear()
            idle.reset()
            last = time.monotonic()
        else:
            done = bool(events) and events[-1][0] == "msg" and events[-1][1] >= last_of()
            if time.monotonic() - last > STALL_S:
                raise AssertionError(f"no message for {STALL_S} s; events so far: {events[-5:]}")
            idle.idle(0)
    result.put(events)
    sub.close()


def publish_until_stopped(stream_id: int, liveness_timeout_ms: int, rate: int, ready, go, stop, result) -> None:
    """An exclusive publication (subscribers evicted after `liveness_timeout_ms`) that offers
    messages 0, 1, ... at about `rate` per second, with back-off, until `stop`; reports how
    many were accepted."""
    pub = lockstep.Publication(stream_id, exclusive=True, term_length=64 * 1024,
                               liveness_timeout_ms=liveness_timeout_ms)
    ready.put(pub.session_id)
    if not go.wait(STALL_S):
        raise AssertionError("never told to go")
    idle = lockstep.BackoffIdleStrategy()
    seq = 0
    started = time.monotonic()
    last = started
    while not stop.is_set():
        if seq > (time.monotonic() - started) * rate:
            time.sleep(0.001)
            continue
        if pub.offer(message(seq)) > 0:
            seq += 1
            last = time.monotonic()
            idle.reset()
        else:
            if time.monotonic() - last > STALL_S:
                raise AssertionError(f"publisher stuck at message {seq} for {STALL_S} s")
            idle.idle(0)
    result.put(seq)
    pub.close()


def check_events(events: list[tuple], first: int, last: int, who: str = "subscriber") -> tuple[int, int]:
    """Apply the rule above to a worker's events; returns (losses told, messages retracted)."""
    kept: list[tuple] = []  # ("msg", seq, position, told just before)
    told, losses, retracted = False, 0, 0
    for event in events:  # first the retractions: a loss may cover messages handed out before it
        if event[0] == "lost":
            losses += 1
            told = True
            while kept and kept[-1][2] is not None and kept[-1][2] > event[1]:
                kept.pop()  # read from a view the loss starts before: may be torn
                retracted += 1
            continue
        kept.append((*event[:3], told))
        told = False
    expected = first
    for _, seq, _, after_loss in kept:
        assert seq == expected or (after_loss and seq > expected), (
            f"{who}: message {seq} after {expected - 1}, no loss told in between (events {events[:3]}...)")
        expected = seq + 1
    assert expected - 1 == last or events[-1][0] == "lost", f"{who}: stopped at {expected - 1} of {last}"
    return losses, retracted
