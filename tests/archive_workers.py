"""Functions run in real worker processes by the archive tests: a recorder, and a publisher
of numbered messages. They report through a multiprocessing queue as `(kind, name,
payload)` tuples (the `cluster_workers.Harness` protocol) and bump a shared progress slot.
Loops back off when idle (2 cores) and fail after `STALL_S` seconds without progress."""

from __future__ import annotations

import os
import struct
import time

import lockstep
import numpy as np
from cluster_workers import STALL_S, _guarded, _Stall
from lockstep.archive import Recorder

_NUMBER = struct.Struct("<qq")


def numbered(i: int, size: int) -> bytes:
    """Message i: its number, a check word, then filler up to `size` bytes."""
    return _NUMBER.pack(i, i * 0x9E3779B97F4A7C15 % (1 << 63)) + bytes((i + k) & 0xFF for k in range(size - 16))


def numbered_batch(first: int, count: int, size: int) -> bytes:
    """Messages first..first+count-1 as `numbered` makes them (size 16: vectorized)."""
    assert size == 16
    i = np.arange(first, first + count, dtype=np.int64)
    out = np.empty((count, 2), dtype="<i8")
    out[:, 0] = i
    out[:, 1] = (i.astype(object) * 0x9E3779B97F4A7C15 % (1 << 63)).astype(np.int64)
    return out.tobytes()


def _recorder(queue, name, dir, stop, progress=None, slot=0, **kwargs):
    """Record until `stop` is set; report the recorder's position in `progress[slot]`."""
    recorder = Recorder(dir, **kwargs)
    deadline = time.monotonic() + STALL_S
    while not recorder.discover():
        if time.monotonic() > deadline:
            raise AssertionError("recorder: no publisher appeared")
        time.sleep(0.005)
    queue.put(("started", name, {"pid": os.getpid(), "recording_id": recorder.recording_id,
                                 "start": recorder.position,
                                 "repaired": [d.as_dict() for d in recorder.repaired]}))
    idle = lockstep.BackoffIdleStrategy()
    while not stop.is_set():
        n = recorder.do_work()
        if n and progress is not None:
            progress[slot] = recorder.position
        idle.idle(n)
    while recorder.do_work():
        pass
    if progress is not None:
        progress[slot] = recorder.position
    result = {"recording_ids": recorder.recording_ids, "position": recorder.position}
    recorder.close()
    queue.put(("done", name, result))


run_recorder = _guarded(_recorder, "run_recorder")
run_recorder.__module__ = __name__  # spawn pickles it by module and name


def _publisher(queue, name, dir, stream_id, count, progress=None, slot=0, *, size=16, term_length=1 << 20,
               batch=1000):
    """Publish `numbered(i)` for i in 0..count-1 on an exclusive publication, waiting out
    back-pressure and a missing subscriber (e.g. a recorder being restarted)."""
    pub = lockstep.Publication(stream_id, dir, exclusive=True, term_length=term_length)
    queue.put(("started", name, {"session_id": pub.session_id, "pid": os.getpid()}))
    idle = lockstep.BackoffIdleStrategy()
    stall = _Stall(f"publisher {name}")
    i = 0
    while i < count:
        n = min(batch, count - i)
        if size == 16:
            data = numbered_batch(i, n, size)
        else:
            data = b"".join(numbered(k, size) for k in range(i, i + n))
        offsets = np.arange(n, dtype=np.int64) * size
        lengths = np.full(n, size, dtype=np.int32)
        accepted, _ = pub.offer_batch(data, offsets, lengths)
        # offer_batch may take part of a batch: go on from the first one not taken
        i += accepted
        if accepted:
            stall.moved()
            if progress is not None:
                progress[slot] = i
        else:
            subscribers = [(c.id, c.value, c.owner_id) for c in pub._subscribers()]
            stall.check(f"(at message {i} of {count}; position {pub.position}, limit {pub.position_limit}, "
                        f"subscriber counters (id, position, pid) {subscribers})")
        idle.idle(accepted)
    result = {"position": pub.position, "session_id": pub.session_id, "count": count}
    pub.close(end_of_stream=False)
    queue.put(("done", name, result))


run_publisher = _guarded(_publisher, "run_publisher")
run_publisher.__module__ = __name__
