"""close() racing calls, fork(), and "closed" said one way (issue 13 items 3, 5, 14, 16).

Real threads race close() against every kind of call on real mapped files, many times, in a
fresh interpreter (a use-after-unmap is a SIGSEGV there, not a crash of the test run): the
process must survive, and every call that starts after close() must return CLOSED or raise
ClosedError. A receive blocked in another thread is woken by close(). A forked child that
closes what it inherited leaves the parent's stream alone. Guards are no-progress timeouts,
never speed limits.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import lockstep
from lockstep import (CLOSED, ClosedError, InvalidArgumentError, ManyToOneRing, OneToOneRing, Publication,
                      Subscription)
from lockstep.archive import Archive, Recorder
from lockstep.cluster.sequencer import SequencerClient
from lockstep.transport.counters import Counters
from lockstep.transport.ring import ControlledAction
from lockstep.transport.errorlog import ErrorLog
from lockstep.transport.logbuffer import LogBuffer
from lockstep.transport.reader import LogReader

from helpers import run_python

STREAM = 1313
TERM = 1 << 16
GUARD_S = 60.0  # no-progress guard: a call that never returns is a failure, however slow the host


def _connected(dir, *, term_length: int = TERM, start="live") -> tuple[Publication, Subscription]:
    """An exclusive publication and a subscription that sees it (with a backoff while waiting)."""
    sub = Subscription(STREAM, dir, start=start)
    pub = Publication(STREAM, dir, exclusive=True, term_length=term_length)
    idle = lockstep.BackoffIdleStrategy()
    deadline = time.monotonic() + GUARD_S
    while not (sub.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "publication and subscription never connected"
        idle.idle(0)
    return pub, sub


def _fill(pub: Publication, count: int, size: int = 100) -> None:
    for i in range(count):
        assert pub.offer(i.to_bytes(4, "little") * (size // 4)) > 0


# -- the race harness (run in a child interpreter) -------------------------------------------

def _closed_status(result: int) -> int:
    """An offer's result, with CLOSED raised as ClosedError (so every kind ends the same way)."""
    if result == CLOSED:
        raise ClosedError("CLOSED")
    return result


def _slow_poll_handler(data, header) -> None:
    """Touches the data and now and then lets another thread run mid-call (close() there)."""
    bytes(data)
    if random.random() < 0.2:
        time.sleep(0)


def _slow_ring_handler(msg_type_id, data) -> None:
    _slow_poll_handler(data, None)


def _batch_handler(batch) -> None:
    if len(batch):
        bytes(batch[len(batch) - 1])
    time.sleep(0)


def _setup(kind: str, dir: Path, shared: dict):
    """(object to close, one call) for a race of `kind`."""
    if kind in ("offer", "offer_view", "offer_batch", "try_claim"):
        big = kind in ("offer_batch", "offer_view")
        sub = shared.get("sub")
        if sub is None:
            sub = shared["sub"] = Subscription(STREAM, dir)
        pub = Publication(STREAM, dir, exclusive=True, term_length=(1 << 24) if big else TERM)
        deadline = time.monotonic() + GUARD_S
        while not (sub.discover() and pub.is_connected):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        shared["drain"] = lambda: sub.poll(lambda d, h: None, 1 << 20)
        if kind == "offer":
            return pub, lambda: _closed_status(pub.offer(b"x" * 64))
        if kind == "offer_view":  # the Python offer: a cffi call that releases the GIL (1 MiB, fragmented)
            data = memoryview(bytearray(1 << 20))
            return pub, lambda: _closed_status(pub.offer(data))
        if kind == "offer_batch":  # the case, scaled: 6 x 1 MiB in 16 MiB terms
            message = 1 << 20
            data = np.ones(6 * message, np.uint8)
            offsets = np.arange(6, dtype=np.int64) * message
            lengths = np.full(6, message, np.int32)
            return pub, lambda: _closed_status(pub.offer_batch(data, offsets, lengths)[1])

        def claim() -> int:
            c = pub.try_claim(1024)
            if c:
                c.buffer[:4] = b"abcd"
                c.commit()
            return _closed_status(c.status)
        return pub, claim
    if kind == "receive_blocking":  # nothing to read: asleep in the futex when closed
        if "pub" not in shared:
            shared["pub"], shared["keeper"] = _connected(dir)
        sub = Subscription(STREAM, dir)
        assert sub.discover() == 1
        return sub, lambda: sub.receive(timeout=None)
    if kind in ("poll", "controlled_poll", "poll_batch", "receive", "block_poll"):
        if "pub" not in shared:
            shared["pub"], shared["keeper"] = _connected(dir, term_length=1 << 22)
            _fill(shared["pub"], 10_000)
        sub = Subscription(STREAM, dir, start="earliest")
        if kind == "block_poll":  # raw frames handed to Python code while the close comes
            assert sub.discover() == 1
            image = sub.images[0]
            copied = bytearray()
            return sub, lambda: image.block_poll(lambda block, position: copied.extend(block), 8)
        if kind == "poll":
            return sub, lambda: sub.poll(_slow_poll_handler, 50)
        if kind == "controlled_poll":  # every other message aborted, so views go out of the same bytes twice
            turn = itertools.count()
            return sub, lambda: sub.controlled_poll(
                lambda d, h: (_slow_poll_handler(d, h), ControlledAction.ABORT if next(turn) % 2 else None)[1], 50)
        if kind == "poll_batch":
            return sub, lambda: sub.poll_batch(_batch_handler, 64)
        return sub, sub.receive
    if kind == "recording_poll":  # the archive's reader: its C loop over a term's messages (scan_deliver.c)
        if "archive" not in shared:
            shared["archive"] = _recording(dir, 5_000)
        reader = shared["archive"].reader(0)
        return reader, lambda: reader.poll(_slow_poll_handler, 50)
    if kind.startswith("ring_"):
        ring = ManyToOneRing(dir / f"ring-{random.getrandbits(32)}", 1 << 16)
        if kind == "ring_write":
            return ring, lambda: ring.write(1, b"y" * 100)
        if kind == "ring_read":
            for _ in range(500):
                ring.write(1, b"z" * 100)
            return ring, lambda: ring.read(_slow_ring_handler, 20)

        def claim_ring():
            c = ring.try_claim(1, 200)
            if c is not None:
                c.buffer[:1] = b"c"
                c.commit()
            return c is not None
        return ring, claim_ring
    if kind == "send_batch":
        client = SequencerClient(dir, ingress_capacity=1 << 16)
        batch = [b"s" * 40] * 32
        return client, lambda: client.send_batch(batch)
    if kind == "counters":
        counters = Counters(dir)
        return counters, lambda: (counters.find_stream(4, 0, STREAM), list(counters))
    raise ValueError(kind)


def _recording(dir: Path, count: int) -> Archive:
    """A stopped recording (id 0) of `count` numbered messages of stream STREAM, in `dir`/archive."""
    rec = Recorder(dir, stream_id=STREAM, segment_length=1 << 17, archive_dir=dir / "archive")
    pub = Publication(STREAM, dir, exclusive=True, term_length=TERM)
    rec.discover()
    for i in range(count):
        while pub.offer(i.to_bytes(4, "little") * 25) < 0:
            rec.do_work()
    deadline = time.monotonic() + GUARD_S
    while rec.position != pub.position:
        assert time.monotonic() < deadline, "the recorder never caught up"
        rec.do_work()
    rec.close()
    pub.close()
    return Archive(dir / "archive")


def _race(kind: str, iterations: int, seed: int) -> None:
    """Race close() against `kind` calls `iterations` times; raise AssertionError on a wrong outcome."""
    sys.setswitchinterval(1e-5)  # many thread switches: many interleavings
    rng = random.Random(seed)
    random.seed(seed)
    dir = Path(os.environ["LOCKSTEP_DIR"])
    shared: dict = {}
    for i in range(iterations):
        obj, call = _setup(kind, dir, shared)
        closed = threading.Event()
        problems: list[str] = []

        def worker() -> None:
            while True:
                after = closed.is_set()
                try:
                    result = call()
                except ClosedError:
                    return
                except BaseException as e:  # noqa: BLE001 - any other outcome is the failure
                    problems.append(f"{type(e).__name__}: {e}")
                    return
                if after:
                    problems.append(f"a call begun after close() returned {result!r}, not CLOSED/ClosedError")
                    return

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        time.sleep(rng.random() * 0.003)
        obj.close()
        closed.set()
        thread.join(GUARD_S)
        assert not thread.is_alive(), f"{kind} #{i}: a call still had not returned {GUARD_S} s after close()"
        assert not problems, f"{kind} #{i} (seed {seed}): {problems[0]}"
        assert obj.closed
        if "drain" in shared:
            shared["drain"]()
    for leftover in shared.values():
        if hasattr(leftover, "close"):
            leftover.close()


_RACE_CODE = """
import sys
sys.path.insert(0, sys.argv[1])
from test_close_races import _race
_race(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
print("ok")
"""

KINDS = {"offer": 60, "offer_view": 20, "offer_batch": 12, "try_claim": 60, "poll": 40, "controlled_poll": 40, "poll_batch": 40,
         "receive": 40, "receive_blocking": 10, "ring_write": 60, "ring_read": 60, "ring_try_claim": 60,
         "counters": 40, "block_poll": 40, "send_batch": 40, "recording_poll": 40}


@pytest.mark.parametrize("kind", list(KINDS))
def test_close_from_another_thread_mid_call(lsdir, kind):
    """Item 3 (and 16's poll racing close): close() from a second thread while a call of
    each kind runs, over and over: no crash, and calls after close say CLOSED/ClosedError."""
    seed = int(os.environ.get("LOCKSTEP_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
    proc = run_python(_RACE_CODE, str(Path(__file__).parent), kind, str(KINDS[kind]), str(seed),
                      timeout=GUARD_S * KINDS[kind] + 120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"{kind} (seed {seed}): exit {proc.returncode}\n{proc.stderr[-3000:]}")


# -- deterministic: close() while a call is inside, from a handler's other thread ------------

_POLL_CLOSED_MID_CALL = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import lockstep
from test_close_races import _connected, _fill
from pathlib import Path
import itertools
import os
pub, sub = _connected(Path(os.environ["LOCKSTEP_DIR"]))
_fill(pub, 20)
seen = []
def handler(data, header):
    seen.append(bytes(data))
    if len(seen) == 1:  # close from another thread while this poll is inside
        t = threading.Thread(target=sub.close); t.start(); t.join()
n = sub.poll(handler, 20)
assert n == 20 and len(seen) == 20, (n, len(seen))
assert [int.from_bytes(s[:4], "little") for s in seen] == list(range(20)), "messages intact, in order"
assert sub.closed
for call in (lambda: sub.poll(handler, 1), lambda: sub.poll_batch(lambda b: None), sub.receive, sub.discover):
    try:
        call()
    except lockstep.ClosedError:
        continue
    raise AssertionError("a closed subscription answered instead of raising ClosedError")
pub.close()
print("ok")
"""

_READER_CLOSED_MID_POLL = """
import sys, threading, os
sys.path.insert(0, sys.argv[1])
import lockstep
from pathlib import Path
from test_close_races import _recording
reader = _recording(Path(os.environ["LOCKSTEP_DIR"]), 100).reader(0)
seen = []
def handler(data, header):
    seen.append(bytes(data))
    if len(seen) == 1:  # close from another thread while this poll is inside
        t = threading.Thread(target=reader.close); t.start(); t.join()
n = reader.poll(handler, 20)
assert n == 20 and [int.from_bytes(s[:4], "little") for s in seen] == list(range(20)), (n, len(seen))
assert reader.closed
try:
    reader.poll(handler, 1)
except lockstep.ClosedError:
    pass
else:
    raise AssertionError("a closed reader answered instead of raising ClosedError")
print("ok")
"""

_RING_CLOSED_MID_READ = """
import sys, threading, os
import lockstep
ring = lockstep.OneToOneRing(os.path.join(os.environ["LOCKSTEP_DIR"], "ring"), 1 << 16)
for i in range(50):
    assert ring.write(1, i.to_bytes(4, "little") * 25)
seen = []
def handler(msg_type_id, data):
    seen.append(bytes(data))
    if len(seen) == 1:
        t = threading.Thread(target=ring.close); t.start(); t.join()
n = ring.read(handler, 50)
assert n == 50 and [int.from_bytes(s[:4], "little") for s in seen] == list(range(50))
for call in (lambda: ring.read(handler), lambda: ring.write(1, b"x"), ring.size):
    try:
        call()
    except lockstep.ClosedError:
        continue
    raise AssertionError("a closed ring answered instead of raising ClosedError")
print("ok")
"""


@pytest.mark.parametrize("code", [_POLL_CLOSED_MID_CALL, _RING_CLOSED_MID_READ, _READER_CLOSED_MID_POLL],
                         ids=["poll", "ring_read", "recording_poll"])
def test_close_while_a_handler_runs_lets_the_call_finish(lsdir, code):
    """Item 16: poll (and ring read) racing close never raise 'released memoryview' nor
    touch unmapped memory: the call in flight finishes its messages, later calls raise ClosedError."""
    proc = run_python(code, str(Path(__file__).parent))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit {proc.returncode}\n{proc.stderr[-3000:]}")


# -- item 5: a blocked receive is woken by close ----------------------------------------------

@pytest.mark.parametrize("timeout", [None, 3600.0])
def test_close_wakes_a_blocked_receive(lsdir, timeout):
    """receive(timeout=None) (or a long timeout) blocked in another thread raises ClosedError
    once close() is called — and a message offered after close is not handed out."""
    pub, sub = _connected(lsdir)
    outcome: list = []
    entered = threading.Event()

    def reader() -> None:
        entered.set()
        try:
            outcome.append(sub.receive(timeout=timeout))
        except BaseException as e:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(e)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    entered.wait(GUARD_S)
    time.sleep(0.05)  # (most likely asleep in the futex by now; either way it must end)
    sub.close()
    pub.offer(b"after close")
    thread.join(GUARD_S)
    assert not thread.is_alive(), "receive() blocked in another thread was not woken by close()"
    assert len(outcome) == 1 and isinstance(outcome[0], ClosedError), outcome
    pub.close()


# -- item 14: fork ----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_closing_inherited_objects_leaves_the_parent_alone(lsdir):
    """A child that closes the exclusive Publication, Subscription and ring it inherited
    does not end the parent's stream nor free its subscriber: the parent keeps publishing
    and every message arrives. In the child the inherited objects are closed (CLOSED /
    ClosedError) while objects it opens itself work."""
    pub, sub = _connected(lsdir)
    ring = OneToOneRing(lsdir / "ring", 1 << 12)
    before = [pub.offer(b"before %d" % i) for i in range(10)]
    assert min(before) > 0
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 0
        try:
            assert pub.closed and sub.closed and ring.closed, "inherited objects are closed in the child"
            assert pub.offer(b"from the child") == CLOSED
            for call in (lambda: sub.poll(lambda d, h: None), sub.receive, lambda: ring.write(1, b"c")):
                try:
                    call()
                    code = 3
                except ClosedError:
                    pass
            pub.close()
            sub.close()
            ring.close()
            with Publication(STREAM + 1, lsdir) as own:  # its own objects work
                assert own.offer(b"own") == lockstep.NOT_CONNECTED and not own.closed
        except BaseException:  # noqa: BLE001 - reported by the exit code
            import traceback
            traceback.print_exc()
            code = code or 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's checks failed (see its stderr)"
    assert not pub.closed and not sub.closed and not ring.closed
    assert pub.path.exists(), "the child's close removed the parent's log"
    after = []
    idle = lockstep.BackoffIdleStrategy()
    for i in range(100):
        deadline = time.monotonic() + GUARD_S
        while (result := pub.offer(b"after %d" % i)) < 0:
            assert result != CLOSED, "the parent's publication was closed by the child"
            assert time.monotonic() < deadline, f"offer stuck at {lockstep.status_name(result)}"
            sub.poll(lambda d, h: None, 0)
            idle.idle(0)
        after.append(result)
    got: list[bytes] = []
    deadline = time.monotonic() + GUARD_S
    while len(got) < 110:
        if not sub.poll(lambda d, h: got.append(bytes(d)), 100):
            assert time.monotonic() < deadline, f"only {len(got)} of 110 messages arrived"
            idle.idle(0)
    assert got == [b"before %d" % i for i in range(10)] + [b"after %d" % i for i in range(100)]
    assert ring.write(1, b"parent") and ring.read(lambda t, d: None) == 1
    pub.close()
    sub.close()
    ring.close()


# -- item 16: "closed" said one way -------------------------------------------------------------

def test_closed_subscription_raises_closed_error_everywhere(lsdir):
    pub, sub = _connected(lsdir)
    pub.offer(b"unread")
    sub.close()
    for call in (lambda: sub.poll(lambda d, h: None), lambda: sub.poll_batch(lambda b: None), sub.receive,
                 lambda: sub.receive(timeout=0.01), sub.discover):
        with pytest.raises(ClosedError, match="closed"):
            call()
    sub.close()  # twice is fine
    pub.close()


def test_closed_publication_says_closed(lsdir):
    pub, sub = _connected(lsdir)
    pub.close()
    assert pub.closed
    assert pub.offer(b"x") == CLOSED
    assert pub.offer(memoryview(b"x")) == CLOSED
    assert pub.offer_batch(b"xx", np.array([0, 1]), np.array([1, 1])) == (0, CLOSED)
    assert pub.try_claim(8).status == CLOSED
    assert pub.position == CLOSED
    assert pub.is_connected is False
    with pytest.raises(ClosedError, match=str(pub.path)):
        pub.position_limit
    sub.close()


def test_freed_counter_raises_closed_error(lsdir):
    counters = Counters(lsdir)
    counter = counters.allocate(1001, "freed soon")
    counter.set(5)
    counter.free(reuse_delay_ms=0)
    reused = counters.allocate(1001, "someone else")  # may take the same record
    reused.set(7)
    for call in (lambda: counter.set(1), counter.get, lambda: counter.add(1), lambda: counter.propose_max(9)):
        with pytest.raises(ClosedError, match=f"counter {counter.id}"):
            call()
    assert reused.get() == 7, "a freed counter wrote into a reused record"
    assert counter.closed and not reused.closed
    reused.free()
    counters.close()


def test_bad_arguments_are_invalid_argument_errors(lsdir):
    pub, sub = _connected(lsdir)
    with pytest.raises(InvalidArgumentError, match="offsets"):
        pub.offer_batch(b"abcd", np.array([0.0, 1.5]), np.array([1, 1]))
    with pytest.raises(InvalidArgumentError, match="lengths"):
        pub.offer_batch(b"abcd", np.array([0, 1]), [1.0, 1.0])
    for bad in ("x", 1.5, True, 0, -1):
        with pytest.raises(InvalidArgumentError, match="liveness_timeout_ms"):
            Publication(STREAM + 2, lsdir, liveness_timeout_ms=bad)
        with pytest.raises(InvalidArgumentError, match="liveness_timeout_ms"):
            Subscription(STREAM + 2, lsdir, liveness_timeout_ms=bad)
    assert pub.offer_batch(b"abcd", [0, 2], [2, 2])[0] == 2  # integer lists still do
    pub.close()
    sub.close()


def test_every_closable_object_has_closed(lsdir):
    """One way to say closed: `closed` is False while open and True after close(), everywhere."""
    pub, sub = _connected(lsdir)
    [image] = sub.images
    log = LogBuffer.open(pub.path)
    reader = LogReader(pub.path)
    objects = [reader, log, image, sub, pub, OneToOneRing(lsdir / "r1", 1 << 12),
               ManyToOneRing(lsdir / "r2", 1 << 12), Counters(lsdir), ErrorLog(lsdir), SequencerClient(lsdir)]
    for obj in objects:
        assert obj.closed is False, obj
    for obj in objects:
        obj.close()
        assert obj.closed is True, obj
    with pytest.raises(ClosedError):
        log.tail_position
    with pytest.raises(ClosedError):
        reader.poll(lambda d, h: None)


def test_a_ring_call_inside_close_before_the_closed_class_raises(lsdir):
    """The window inside close() between `_token = None` and the switch to the closed class
    (other threads run there: _detach loops over the C objects): a ring call that falls back
    to Python then must raise ClosedError, not read views the teardown is about to release
    (the rare `released memoryview` of the ring_read race above)."""
    ring = ManyToOneRing(lsdir / "window.ring", 1 << 12)
    assert ring.write(1, b"x")
    token, ring._token = ring._token, None  # as close() leaves it before _detach() finishes
    ring._fast_read.detach()
    ring._fast_write.detach()
    with pytest.raises(ClosedError):
        ring.read(lambda t, d: None, 10)
    with pytest.raises(ClosedError):
        ring.write(1, b"y")
    ring._fast_controlled_read.detach()
    with pytest.raises(ClosedError):  # (its fallback held no token: a close could tear down under it)
        ring.controlled_read(lambda t, d: ControlledAction.CONTINUE, 10)
    ring._fast_try_claim.detach()  # (detached, it hands the call to the fallback: which called it again,
    with pytest.raises(ClosedError):  # a RecursionError in a clean-clone CI run of the ring_try_claim race)
        ring.try_claim(1, 8)
    ring._token = token
    ring.close()
