"""Fault rounds for a full filesystem: a publisher process streams to this process through a
lockstep directory on a small tmpfs while each round fills the filesystem to its last page,
has a child interpreter try to make more there (a publication, a ring) — a NoSpaceError naming
the file, never a SIGBUS — and frees the space again, after which the same creations work.
Afterwards this process has every message the publisher saw accepted, once, in order: the
stream never stopped while the disk was full (its files were reserved when made).
Rounds: 4 in CI, or --soak N / $LOCKSTEP_SOAK_ROUNDS."""

from __future__ import annotations

import errno
import json
import os
import queue
import time

import lost_workers as lw
from helpers import run_python
from lockstep import BackoffIdleStrategy, Subscription

STREAM = 1400
RATE = 20_000  # messages/s offered (2 shared cores)
STALL_S = 60.0

_CREATE = r"""
import json, os, sys
import lockstep
dir, tag = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, make):
    try:
        obj = make()
    except lockstep.LockstepError as e:
        out[name] = [type(e).__name__, str(e)]
        return
    obj.close()
    out[name] = ["ok", ""]
attempt("publication", lambda: lockstep.Publication(5000 + int(tag), dir, exclusive=True))
ring = os.path.join(dir, f"full-{tag}.ring")
attempt("ring", lambda: lockstep.ManyToOneRing(ring, capacity=1 << 20))
if os.path.exists(ring):
    os.unlink(ring)
print(json.dumps(out))
"""


def _rounds(config) -> int:
    soak = config.getoption("--soak", default=None)
    return soak or int(os.environ.get("LOCKSTEP_SOAK_ROUNDS") or 4)


def _get(q, what: str):
    try:
        return q.get(timeout=STALL_S)
    except queue.Empty:
        raise AssertionError(f"no {what} within {STALL_S} s") from None


def _fill(path) -> int:
    """Write `path` until the filesystem has no page left; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 4096):
            block = b"\xff" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += chunk
    return written


def _create(lsdir, tag: int) -> dict:
    proc = run_python(_CREATE, str(lsdir), str(tag), timeout=STALL_S)
    assert proc.returncode == 0, f"creating on a full filesystem crashed (exit {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def test_filling_the_filesystem_mid_run_loses_nothing(small_fs, monkeypatch, procs, mp, request):
    fs = small_fs("16m")
    lsdir = fs / "lockstep"
    monkeypatch.setenv("LOCKSTEP_DIR", str(lsdir))
    rounds = _rounds(request.config)
    ready, go, stop_pub, count = mp.Queue(), mp.Event(), mp.Event(), mp.Queue()
    procs.start(lw.publish_until_stopped, STREAM, 10_000, RATE, ready, go, stop_pub, count)
    _get(ready, "publisher")
    got: list[int] = []
    collect = lambda data, header: got.append(lw.seq_of(data))  # noqa: E731
    idle = BackoffIdleStrategy()
    refused = 0
    with Subscription(STREAM) as sub:
        def read_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                idle.idle(sub.poll(collect, 1000))

        deadline = time.monotonic() + STALL_S
        while not sub.discover():
            assert time.monotonic() < deadline, "no publication"
        go.set()
        read_for(0.2)
        for r in range(rounds):
            filler = fs / f"filler-{r}"
            assert _fill(filler) > 0
            before = len(got)
            full = _create(lsdir, r)
            for what, (kind, message) in full.items():
                assert kind == "NoSpaceError", f"round {r}: {what} on a full filesystem: {kind} {message}"
                assert "no space left" in message and str(lsdir) in message, message
                refused += 1
            progress_by = time.monotonic() + STALL_S
            while len(got) < before + RATE // 20:  # the stream goes on while the disk is full
                assert time.monotonic() < progress_by, f"round {r}: the stream stopped on a full filesystem"
                read_for(0.05)
            filler.unlink()
            free = _create(lsdir, r)
            assert all(kind == "ok" for kind, _ in free.values()), f"round {r}: after freeing the space: {free}"
            read_for(0.05)
        stop_pub.set()
        sent = _get(count, "publisher's count")
        drain_by = time.monotonic() + STALL_S
        while len(got) < sent:
            assert time.monotonic() < drain_by, f"stuck at {len(got)} of {sent}"
            read_for(0.05)
    assert got == list(range(sent)), "messages lost or reordered while the filesystem was full"
    procs.join_all(STALL_S)
    print(f"full filesystem rounds: {rounds}, {refused} creations refused with NoSpaceError, {sent} messages checked")
