"""Streams when a peer process dies or stalls, and log buffer files that are corrupt: a
killed subscriber stops holding the publisher back, a publisher killed mid-claim does not
wedge the stream, a killed exclusive publisher's image drains and goes away, and bad files
give a clear LockstepError (from the API and from `lockstep dump`), never a crash."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stream_workers as sw
from helpers import run_python
from lockstep import (ADMIN_ACTION, BACK_PRESSURED, NOT_CONNECTED, BackoffIdleStrategy, ImageLostError,
                      Publication, Subscription)
from lockstep.transport.client import TYPE_SUBSCRIBER_POSITION, client_for

TERM = 64 * 1024
STALL_S = 60.0


def _get(q, what: str, timeout: float = STALL_S):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def _poll_until(sub: Subscription, checker: sw.StreamChecker, expected: int, *, what: str = "") -> None:
    idle = BackoffIdleStrategy()
    last = time.monotonic()
    while checker.count < expected:
        if sub.poll(checker.handler, 100):
            last = time.monotonic()
            idle.reset()
        else:
            assert time.monotonic() - last < STALL_S, f"{what}: no message for {STALL_S} s: {checker.count} of {expected}"
            idle.idle(0)


def _subscriber_counters(lsdir, session_id: int, stream_id: int):
    return client_for(lsdir).counters.find_stream(TYPE_SUBSCRIBER_POSITION, session_id, stream_id)


# -- dead or stalled peers -----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_dead_or_frozen_subscriber_stops_holding_the_publisher_back(lsdir, procs, mp, how):
    """A subscriber process reads a little, then stops polling: the publisher (this test) is
    back-pressured at its position + half a term. Then it is SIGKILLed (pid gone) or frozen
    with SIGSTOP (pid there, heartbeat stale past liveness_timeout_ms): the publisher evicts
    its counter and offers past it, while a live subscriber (also this test) keeps up."""
    stream = 4001
    pub = Publication(stream, exclusive=True, term_length=TERM, liveness_timeout_ms=500)
    live = Subscription(stream)
    commands, positions = mp.Queue(), mp.Queue()
    worker = procs.start(sw.subscribe_then_stall, stream, 50, commands, positions)
    with pub, live:
        # Publish while the worker attaches (it joins live), and keep the live subscriber up.
        checker = sw.StreamChecker(1)
        seq = 0
        idle = BackoffIdleStrategy()
        deadline = time.monotonic() + STALL_S
        attached = None
        stalled_at = None
        first_pressure = None
        while first_pressure is None:
            assert time.monotonic() < deadline, "never back-pressured by the stalled subscriber"
            live.poll(checker.handler, 100)
            if stalled_at is None:
                try:
                    kind, value = positions.get_nowait()
                    if kind == "attached":
                        attached = value
                    else:
                        stalled_at = value
                except queue.Empty:
                    pass
            r = pub.offer(sw.make_message(0, seq))
            if r > 0:
                seq += 1
            elif r == BACK_PRESSURED and stalled_at is not None:
                first_pressure = pub.position
            else:
                assert r in (BACK_PRESSURED, NOT_CONNECTED, ADMIN_ACTION), r
                idle.idle(0)
        assert attached is not None and stalled_at >= attached
        assert len(_subscriber_counters(lsdir, pub.session_id, stream)) == 2
        # Aeron's rule: the offer that crossed the limit started below it.
        assert stalled_at + TERM // 2 <= first_pressure < stalled_at + TERM // 2 + 3 * 1408 + 64
        # It stays back-pressured while the stalled one is alive (and its heartbeat fresh).
        for _ in range(20):
            live.poll(checker.handler, 100)
            assert pub.offer(sw.make_message(0, seq)) == BACK_PRESSURED
        assert pub._evictions.get() == 0

        if how == "sigkill":
            procs.kill(worker)
        else:
            os.kill(worker.pid, signal.SIGSTOP)  # cleaned up (SIGKILL) by the fixture
        # The publisher goes past the dead subscriber's position + window.
        target = stalled_at + TERM // 2 + 2 * TERM
        deadline = time.monotonic() + STALL_S
        while pub.position < target:
            assert time.monotonic() < deadline, (
                f"publisher still held at {pub.position} (dead subscriber at {stalled_at})")
            live.poll(checker.handler, 100)
            r = pub.offer(sw.make_message(0, seq))
            if r > 0:
                seq += 1
            else:
                assert r in (BACK_PRESSURED, ADMIN_ACTION), r
                idle.idle(0)
        assert pub._evictions.get() == 1
        assert [c.owner_id for c in _subscriber_counters(lsdir, pub.session_id, stream)] == [os.getpid()]
        _poll_until(live, checker, seq, what="live subscriber")
        assert checker.seen == [seq]


def _run_dead_claim_scenario(procs, mp, stream: int, dead_claim, *, before: int = 100, after: int = 3000,
                             stall_s: float = 15.0) -> None:
    """A shared log written by this test, a subscriber (unblock_timeout_ms=300) and a worker
    publisher on the same log; `dead_claim(pub, worker_queue)` leaves a claimed, never
    committed frame and returns its start position. Then this test writes `after` messages
    past the hole: all must arrive (the hole is padded after the unblock timeout)."""
    pub = Publication(stream, term_length=TERM)  # creates the shared log
    sub = Subscription(stream, unblock_timeout_ms=300)
    with pub, sub:
        assert sub.image_count == 1
        checker = sw.StreamChecker(2)
        hole = dead_claim(pub, sub, checker)
        assert pub.position > hole
        idle = BackoffIdleStrategy()
        seq = 0
        last = time.monotonic()
        while seq < after or checker.count < before + after:
            if seq < after:
                r = pub.offer(sw.make_message(0, seq))
                if r > 0:
                    seq += 1
                    last = time.monotonic()
                else:
                    assert r in (BACK_PRESSURED, ADMIN_ACTION), r
            if sub.poll(checker.handler, 100):
                last = time.monotonic()
                idle.reset()
            else:
                idle.idle(0)
            # The unblock timeout is 300 ms: 15 s without progress means wedged.
            assert time.monotonic() - last < stall_s, (
                f"wedged: {checker.count} of {before + after} received, subscriber at "
                f"{sub.images[0].position}, dead claim at {hole}")
        assert checker.seen == [after, before]
        assert sub.images[0].position == pub.position > hole
        assert sub._unblocks.get() >= 1


def test_live_subscriber_evicted_as_dead_is_told_and_rejoins_live(lsdir):
    """A publisher may take a live subscriber for dead (its heartbeat looked stale, e.g. after
    the host paused for longer than the liveness timeout) and free its position counter. The
    next receive raises ImageLostError naming the stream, session and the range it did not get
    (the counter is never written again); a new image follows at the live position, held back
    by nobody else, and gets everything sent after it."""
    sub = Subscription(7001, lsdir)
    pub = Publication(7001, lsdir, exclusive=True, term_length=TERM)
    with sub, pub:
        deadline = time.monotonic() + STALL_S
        while not (sub.discover() and pub.is_connected):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        [image] = sub.images
        for i in range(10):
            assert pub.offer(i.to_bytes(4, "little")) > 0
        assert [int.from_bytes(sub.receive(), "little") for _ in range(5)] == [0, 1, 2, 3, 4]
        counters = client_for(lsdir).counters
        [mine] = counters.find_stream(TYPE_SUBSCRIBER_POSITION, pub.session_id, 7001)
        counters.free(mine.id)  # what the publisher's eviction does
        at = image.position
        with pytest.raises(ImageLostError) as lost:
            sub.receive()
        e = lost.value
        assert (e.stream_id, e.session_id, e.from_position, e.to_position) == (7001, pub.session_id, at, pub.position)
        assert "evicted" in str(e) and f"session {pub.session_id}" in str(e)
        assert counters.info(mine.id).value == at  # never written after the eviction
        [again] = sub.images
        assert again is not image and again.join_position == pub.position
        [counter] = counters.find_stream(TYPE_SUBSCRIBER_POSITION, pub.session_id, 7001)
        assert counter.registration_id == again.registration_id != mine.registration_id
        sent = 10
        while pub.offer(sent.to_bytes(4, "little")) > 0:  # held back by the new image: a window, no more
            sent += 1
        got = []
        while len(got) < sent - 10:
            data = sub.receive()
            if data is not None:
                got.append(int.from_bytes(data, "little"))
        assert got == list(range(10, sent))


@pytest.mark.parametrize("fill", [True, False], ids=["payload-partly-written", "payload-untouched"])
def test_publisher_killed_mid_claim_does_not_wedge_the_stream(lsdir, procs, mp, fill):
    """On a SHARED stream a publisher process try_claim's a frame and is SIGKILLed before it
    commits. Another publisher (this test) keeps writing after the dead claim: with
    unblock_timeout_ms=300 the subscriber pads over the hole and receives all of them."""
    stream, before = 4002, 100
    claimed = mp.Queue()

    def dead_claim(pub, sub, checker) -> int:
        worker = procs.start(sw.claim_and_hang, stream, 1, before, TERM, claimed, fill)
        got_claim = None
        deadline = time.monotonic() + STALL_S
        while got_claim is None:  # read the worker's messages while it writes them
            sub.poll(checker.handler, 100)
            try:
                got_claim = claimed.get_nowait()
            except queue.Empty:
                assert time.monotonic() < deadline, "worker never claimed"
                time.sleep(0.001)
        procs.kill(worker)
        claim_end, claim_length = got_claim
        # Until the claim: the worker's messages, all received.
        while checker.count < before:
            sub.poll(checker.handler, 100)
        return claim_end - ((claim_length + 32 + 31) & ~31)

    _run_dead_claim_scenario(procs, mp, stream, dead_claim, before=before)


def test_publisher_killed_after_taking_tail_space_does_not_wedge_the_stream(lsdir, procs, mp):
    """The other half of a dead claim: a publisher process writes messages and dies right after
    its atomic add on the tail, before writing a byte of its frame (simulated: the worker
    is killed, then this test moves the shared tail by one frame as the dead add did)."""
    stream, before = 4004, 100
    published = mp.Queue()

    def dead_claim(pub, sub, checker) -> int:
        worker = procs.start(sw.publish_then_hang, stream, 1, before, False, TERM, published)
        info = None
        deadline = time.monotonic() + STALL_S
        while info is None:
            sub.poll(checker.handler, 100)
            try:
                info = published.get_nowait()
            except queue.Empty:
                assert time.monotonic() < deadline, "worker never published"
        procs.kill(worker)
        while checker.count < before:
            sub.poll(checker.handler, 100)
        hole = pub.position
        assert hole < TERM - 1024
        import mmap
        with open(pub.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            active = struct.unpack_from("<i", m, 3 * TERM + 24)[0] % 3
            raw = struct.unpack_from("<q", m, 3 * TERM + 8 * active)[0]
            struct.pack_into("<q", m, 3 * TERM + 8 * active, raw + 256)
        assert pub.position == hole + 256
        return hole

    _run_dead_claim_scenario(procs, mp, stream, dead_claim, before=before)


def test_killed_exclusive_publisher_image_drains_then_is_parked_until_resumed(lsdir, procs, mp):
    """A dead exclusive publisher's image is read to the end, then no longer polled; its
    log stays, so a publisher that resumes the session (as a restarted sequencer does)
    is heard again from where the dead one stopped."""
    stream, count = 4003, 2000
    sub = Subscription(stream)
    published = mp.Queue()
    worker = procs.start(sw.publish_then_hang, stream, 0, count, True, TERM, published)
    checker = sw.StreamChecker(1)
    with sub:
        deadline = time.monotonic() + STALL_S
        info = None
        while info is None:
            sub.poll(checker.handler, 100)  # the worker needs us to keep up (window)
            try:
                info = published.get_nowait()
            except queue.Empty:
                assert time.monotonic() < deadline
        session_id, path, end = info
        procs.kill(worker)
        _poll_until(sub, checker, count, what="after the publisher died")
        assert checker.seen == [count]
        deadline = time.monotonic() + STALL_S
        while sub.image_count:
            assert time.monotonic() < deadline, "the dead publisher's image never went away"
            assert sub.poll(lambda d, h: pytest.fail("extra message"), 10) == 0
            time.sleep(0.01)
        assert Path(path).exists()
        with Publication(stream, exclusive=True, session_id=session_id, term_length=TERM) as resumed:
            assert resumed.path == Path(path)
            position = resumed.offer(b"resumed")
            assert position > end
            got = []
            deadline = time.monotonic() + STALL_S
            while not got:
                assert time.monotonic() < deadline, "the resumed log was never polled again"
                sub.poll(lambda d, h: got.append((bytes(d), h.position)), 10)
                time.sleep(0.01)
            assert got == [(b"resumed", position)]


# -- corrupt and truncated log buffer files -------------------------------------------------------

def _make_log(dir: Path, name: str = "1-shared.logbuffer", messages: int = 200) -> tuple[Path, list[int]]:
    """A real log written by a Publication (term 64 KiB); returns its path and the message end positions."""
    path = dir / name
    code = r"""
import json, sys, time
import lockstep
dir, stream = sys.argv[1], 1
sub = lockstep.Subscription(stream, dir)
pub = lockstep.Publication(stream, dir, term_length=65536)
sub.poll(lambda d, h: None)
ends = []
for i in range(int(sys.argv[2])):
    while (r := pub.offer(bytes([i % 256]) * (100 + i))) < 0:
        sub.poll(lambda d, h: None, 100)
    ends.append(r)
print(json.dumps({"path": str(pub.path), "ends": ends}))
"""
    proc = run_python(code, str(dir), str(messages))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["path"]) == path
    return path, out["ends"]


_OPEN_LOG = r"""
import json, sys
import lockstep
from lockstep.transport.reader import LogReader
path, how = sys.argv[1], sys.argv[2]
result = {"ok": True}
try:
    if how == "open":
        lockstep.LogBuffer.open(path).close()
    elif how == "read":
        with LogReader(path, position=0) as reader:
            result["messages"] = sum(1 for _ in reader.messages())
    elif how == "frames":
        with lockstep.LogBuffer.open(path) as log:
            result["frames"] = sum(1 for _ in log.frames())
except Exception as e:
    result = {"ok": False, "error": type(e).__name__, "message": str(e),
              "is_lockstep_error": isinstance(e, lockstep.LockstepError),
              "is_format_error": isinstance(e, lockstep.FileFormatError)}
print(json.dumps(result))
"""


def _isolated(path: Path, how: str) -> dict:
    proc = run_python(_OPEN_LOG, str(path), how)
    assert proc.returncode == 0, f"{how} {path} crashed (exit {proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dump(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", "dump", *args, str(path)],
                          capture_output=True, text=True, timeout=60)


def _assert_dump_fails(path: Path, *words: str) -> str:
    for args in ((), ("--json",)):
        proc = _dump(path, *args)
        assert proc.returncode not in (0, -signal.SIGSEGV), (proc.returncode, proc.stderr)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lockstep: error: "), proc.stderr
        assert "Traceback" not in proc.stderr
        assert str(path) in lines[0]
        for w in words:
            assert w in lines[0], (w, lines[0])
    return lines[0]


def _assert_format_error(result: dict, path: Path, *words: str) -> None:
    assert not result["ok"], result
    assert result["is_lockstep_error"] and result["is_format_error"], result
    assert str(path) in result["message"], result
    for w in words:
        assert w in result["message"], (w, result["message"])


def test_intact_log_opens_reads_and_dumps(tmp_path):
    path, ends = _make_log(tmp_path)
    assert _isolated(path, "open") == {"ok": True}
    assert _isolated(path, "read")["messages"] == len(ends)
    proc = _dump(path, "--json")
    assert proc.returncode == 0, proc.stderr
    data = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sum(1 for d in data if d["type"] == "DATA") == len(ends)


@pytest.mark.parametrize("keep", [0.5, 0.999, 100])
def test_truncated_log_buffer(tmp_path, keep):
    path, _ = _make_log(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if keep < 1 else keep)
    for how in ("open", "read", "frames"):
        _assert_format_error(_isolated(path, how), path, "length")
    _assert_dump_fails(path)


@pytest.mark.parametrize("bad", [1 << 17, 12345, 0, -65536])
def test_bad_term_length_in_metadata(tmp_path, bad):
    path, _ = _make_log(tmp_path)
    with open(path, "r+b") as f:
        f.seek(3 * TERM + 276)
        f.write(struct.pack("<i", bad))
    for how in ("open", "read", "frames"):
        _assert_format_error(_isolated(path, how), path, "term length")
    _assert_dump_fails(path, "term length")


@pytest.mark.parametrize("field,offset,value,word", [
    ("mtu", 272, 1000, "mtu"),
    ("page size", 280, 3000, "page size"),
    ("header length", 268, 16, "header length"),
    ("active term count", 24, 7, "term"),
    ("tail counter", 0, (5 << 32) | 33, "tail"),
])
def test_bad_metadata_fields(tmp_path, field, offset, value, word):
    path, _ = _make_log(tmp_path)
    with open(path, "r+b") as f:
        f.seek(3 * TERM + offset)
        f.write(struct.pack("<q" if field == "tail counter" else "<i", value))
    for how in ("open", "read"):
        _assert_format_error(_isolated(path, how), path, word)
    _assert_dump_fails(path, word)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes(tmp_path, seed):
    rng = random.Random(seed)
    for size in (3 * TERM + 4096, 4096, 1 << 20):
        path = tmp_path / f"random-{seed}-{size}.logbuffer"
        path.write_bytes(rng.randbytes(size))
        path.chmod(0o600)
        for how in ("open", "read", "frames"):
            result = _isolated(path, how)
            _assert_format_error(result, path)
        _assert_dump_fails(path)


@pytest.mark.parametrize("bad_length", [0x7FFF0000, 40 * 1024 * 1024, 7, 33 + 4096])
def test_corrupt_frame_length_in_the_middle_of_a_term(tmp_path, bad_length):
    """A frame in the middle of the written term gets a length that cannot be right: dump
    lists the frames before it, then fails naming that frame; a LogReader delivers the
    messages before it, then raises FileFormatError when it reaches it."""
    path, ends = _make_log(tmp_path, messages=100)
    k = 50
    frame_offset = ends[k - 1]  # message k starts where k-1 ended (first term, no rotation yet)
    assert ends[-1] < TERM
    with open(path, "r+b") as f:
        f.seek(frame_offset)
        f.write(struct.pack("<i", bad_length))
    line = _assert_dump_fails(path, f"offset {frame_offset}")
    assert "length" in line
    proc = _dump(path, "--json")
    listed = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [d["offset"] for d in listed] == [0] + ends[:k - 1]  # every frame before the bad one
    code = r"""
import json, sys
import lockstep
from lockstep.transport.reader import LogReader
got = []
try:
    with LogReader(sys.argv[1], position=0) as reader:
        while reader.poll(lambda d, h: got.append(h.position), 7):
            pass
        result = {"ok": True, "got": got}
except lockstep.FileFormatError as e:
    result = {"ok": False, "got": got, "message": str(e)}
print(json.dumps(result))
"""
    proc = run_python(code, str(path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["ok"], result
    assert result["got"] == ends[:k]  # messages before the bad frame, then the error
    assert str(path) in result["message"] and f"offset {frame_offset}" in result["message"]


def test_negative_frame_length_is_an_uncommitted_frame_for_readers(tmp_path):
    """A negative length is how Aeron marks a claimed, uncommitted frame: a reader stops
    there (nothing more yet) without error or crash."""
    path, ends = _make_log(tmp_path, messages=20)
    with open(path, "r+b") as f:
        f.seek(ends[9])
        f.write(struct.pack("<i", -160))
    code = r"""
import json, sys
from lockstep.transport.reader import LogReader
with LogReader(sys.argv[1], position=0) as reader:
    got = [h["position"] for _, h in reader.messages()]
print(json.dumps(got))
"""
    proc = run_python(code, str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ends[:10]


def test_subscription_meeting_a_corrupt_log_raises_lockstep_error(lsdir):
    """A subscriber whose log gets corrupted under it gets a LockstepError from poll, not a crash."""
    code = r"""
import json, struct, sys, time
import lockstep
sub = lockstep.Subscription(9)
pub = lockstep.Publication(9, exclusive=True, term_length=65536)
deadline = time.monotonic() + 10
while sub.image_count == 0 and time.monotonic() < deadline:
    sub.poll(lambda d, h: None); time.sleep(0.01)
ends = []
for i in range(20):
    while (r := pub.offer(b"m" * 50)) < 0:
        time.sleep(0.01)
    ends.append(r)
with open(pub.path, "r+b") as f:
    f.seek(ends[9]); f.write(struct.pack("<i", 999999))
got = []
try:
    while sub.poll(lambda d, h: got.append(h.position), 3):
        pass
    result = {"ok": True}
except lockstep.LockstepError as e:
    result = {"ok": False, "error": type(e).__name__, "message": str(e)}
result["got"] = len(got)
print(json.dumps(result))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] == "FileFormatError" and ".logbuffer" in result["message"], result
    assert result["got"] == 10
