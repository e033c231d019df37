"""Doorbells: every idle agent sleeps on a futex its writers ring. A ring consumer asleep is
woken by each commit kind (the flag it set is taken, the wake sequence moves) and misses
nothing; one BlockingIdleStrategy wait covers a ring and several logs; a blocked receive over
several images sleeps once on all of them; a gateway asleep behind a backlogged log is woken
by a halt on its side channel; the blocking idle comes back for housekeeping."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import lockstep
from lockstep import BlockingIdleStrategy, ManyToOneRing, Publication, Subscription
from lockstep._native import lib
from lockstep.archive import Recorder
from lockstep.cluster.gateway import Gateway, halt, resume
from lockstep.cluster.replica import Replica, StateMachine
from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH, Sequencer
from lockstep.transport.idle import agent_idle, run_agent
from lockstep.transport.mapped import MappedFile

import doorbell_workers as dw

CAPACITY = 1 << 12
STREAM = 1801
TERM = 64 * 1024
WAITING = CAPACITY + lib.LS_RB_CONSUMER_WAITING_OFFSET  # ring_buffer_descriptor.h
WAKES = CAPACITY + lib.LS_RB_WAKE_SEQUENCE_OFFSET
META = 3 * TERM  # a log's metadata (logbuffer_descriptor.h: its doorbell)
LOG_WAITING = META + lib.LS_LOG_READER_WAITING_OFFSET
LOG_WAKES = META + lib.LS_LOG_WAKE_SEQUENCE_OFFSET


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


class _Words:
    """int32 words of a shared mapping of `path` (a read-only open would map a private copy)."""

    def __init__(self, path) -> None:
        self.file = MappedFile.open(path)
        self.view = self.file.memoryview().cast("i")

    def __getitem__(self, offset: int) -> int:
        return self.view[offset // 4]

    def close(self) -> None:
        self.view.release()
        self.file.close()


def _commit(ring: ManyToOneRing, how: str, i: int) -> None:
    data = bytes([i]) * 12
    if how == "write":
        assert ring.write(7, data)
    else:
        claim = ring.try_claim(7, len(data))
        claim.buffer[:] = data
        claim.commit()


@pytest.mark.parametrize("how", ["write", "claim"])
def test_sleeping_ring_reader_is_woken_by_each_commit(lsdir, procs, mp, how):
    """The reader sets the ring's waiting flag and sleeps; each write / claim + commit takes
    the flag and moves the wake sequence; the reader gets every message, in order, once."""
    path = lsdir / "doorbell.ring"
    with ManyToOneRing(path, CAPACITY) as ring:
        words = _Words(path)
        try:
            out = mp.Queue()
            procs.start(dw.ring_reader, str(path), 3, out)
            assert out.get(timeout=60) == "attached"
            for i in range(3):
                _wait(lambda: words[WAITING] == 1, "the reader to go to sleep")
                wakes = words[WAKES]
                _commit(ring, how, i)
                assert out.get(timeout=60) == (7, bytes([i]) * 12)
                assert words[WAKES] == wakes + 1  # woken by the commit: once
        finally:
            words.close()
        procs.join_all()


def test_abort_of_a_claim_wakes_a_reader_stuck_behind_it(lsdir, procs, mp):
    """A claim at the head holds the reader back; a message committed behind it wakes the
    reader, which finds nothing at the head and sleeps again; the abort wakes it again and
    it reads the message after the aborted claim."""
    path = lsdir / "doorbell.ring"
    with ManyToOneRing(path, CAPACITY) as ring:
        words = _Words(path)
        try:
            claim = ring.try_claim(7, 8)
            out = mp.Queue()
            procs.start(dw.ring_reader, str(path), 1, out)
            assert out.get(timeout=60) == "attached"
            _wait(lambda: words[WAITING] == 1, "the reader to go to sleep")
            assert ring.write(7, b"behind")
            _wait(lambda: words[WAITING] == 1, "the reader to sleep again behind the claim")
            wakes = words[WAKES]
            claim.abort()
            assert out.get(timeout=60) == (7, b"behind")
            assert words[WAKES] == wakes + 1
        finally:
            words.close()
        procs.join_all()


def test_a_writer_with_nobody_asleep_does_not_ring(lsdir):
    with ManyToOneRing(lsdir / "quiet.ring", CAPACITY) as ring:
        words = _Words(ring.path)
        try:
            for i in range(100):
                assert ring.write(1, b"x" * 8)
                ring.read(lambda t, d: None)
            assert (words[WAITING], words[WAKES]) == (0, 0)
            assert ring.wait(timeout=0) is False  # nothing there: announced, then timed out
            assert words[WAITING] == 1
            assert ring.write(1, b"y")  # a consumer that stopped asleep costs one wake
            assert (words[WAITING], words[WAKES]) == (0, 1)
            assert ring.wait(timeout=10) is True  # a message is there: no sleep
        finally:
            words.close()


def test_a_ring_left_with_its_consumer_asleep_opens_again(lsdir):
    """The doorbell fields are part of the trailer: a ring whose consumer died asleep (flag
    set, wake sequence moved) is valid, while garbage next to them is not."""
    path = lsdir / "left.ring"
    with ManyToOneRing(path, CAPACITY) as ring:
        ring.wait(timeout=0)
        assert ring.write(1, b"m")
        ring.wait(timeout=0)
    with ManyToOneRing(path) as ring:
        assert ring.read(lambda t, d: None) == 1
    with open(path, "r+b") as f:
        f.seek(WAITING + 8)
        f.write(b"\x01")
    with pytest.raises(lockstep.FileFormatError, match="trailer"):
        ManyToOneRing(path)


def test_one_wait_covers_a_ring_and_several_logs(lsdir, procs, mp):
    """An agent reading a ring and a two-image subscription sleeps once on all three
    doorbells (each flag set at once); a commit to any of them wakes it; it reads every
    message of each source in order, once."""
    ring_path = lsdir / "agent.ring"
    with ManyToOneRing(ring_path, CAPACITY) as ring, \
            Publication(STREAM, lsdir, exclusive=True, term_length=TERM) as a, \
            Publication(STREAM, lsdir, exclusive=True, term_length=TERM) as b:
        out = mp.Queue()
        procs.start(dw.agent_reading_ring_and_stream, str(ring_path), str(lsdir), STREAM, 6, out)
        assert out.get(timeout=60) == "attached"
        ring_words, a_words, b_words = _Words(ring_path), _Words(a.path), _Words(b.path)
        try:
            asleep = lambda: ring_words[WAITING] == a_words[LOG_WAITING] == b_words[LOG_WAITING] == 1  # noqa: E731
            for i, (words, offset, send) in enumerate([
                    (b_words, LOG_WAKES, lambda i: b.offer(b"b%d" % i)),
                    (ring_words, WAKES, lambda i: ring.write(3, b"r%d" % i)),
                    (a_words, LOG_WAKES, lambda i: a.offer(b"a%d" % i))] * 2):
                _wait(asleep, "the agent to sleep on all three")
                wakes = words[offset]
                assert send(i)
                _wait(lambda: words[offset] != wakes, "the commit to ring the agent's doorbell")
            got, sleeps = out.get(timeout=60)
        finally:
            for w in (ring_words, a_words, b_words):
                w.close()
        sessions = {a.session_id: "a", b.session_id: "b"}
        got = [(sessions.get(src, src), data) for src, data in got]
        assert got == [("b", b"b0"), ("ring", b"r1"), ("a", b"a2"), ("b", b"b3"), ("ring", b"r4"), ("a", b"a5")]
        assert sleeps >= 6
        procs.join_all()


def test_blocked_receive_over_several_images_sleeps_once_on_all(lsdir, procs, mp):
    """receive(timeout=None) with two images sleeps in one wait on both logs: a process
    blocked there for half a second barely runs (today's 1 ms turns woke it every turn), and
    a message on either image wakes it."""
    with Publication(STREAM, lsdir, exclusive=True, term_length=TERM) as a, \
            Publication(STREAM, lsdir, exclusive=True, term_length=TERM) as b:
        out = mp.Queue()
        child = procs.start(dw.blocked_receive_several_images, str(lsdir), STREAM, 2, out)
        assert out.get(timeout=60) == "attached"
        a_words, b_words = _Words(a.path), _Words(b.path)
        try:
            _wait(lambda: a_words[LOG_WAITING] == b_words[LOG_WAITING] == 1, "the reader to sleep on both logs")
            before = _voluntary_switches(child.pid)
            time.sleep(0.5)
            switches = _voluntary_switches(child.pid) - before
            assert switches < 50, f"blocked in receive, it still woke {switches} times in 0.5 s"
            wakes = b_words[LOG_WAKES]
            assert b.offer(b"to b") > 0
            assert out.get(timeout=60) == b"to b"
            assert b_words[LOG_WAKES] == wakes + 1
            _wait(lambda: a_words[LOG_WAITING] == 1, "the reader to sleep again")
            assert a.offer(b"to a") > 0
            assert out.get(timeout=60) == b"to a"
        finally:
            a_words.close()
            b_words.close()
        procs.join_all()


def _voluntary_switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for pid {pid}")


def test_gateway_asleep_behind_a_backlog_is_woken_by_a_halt(lsdir, procs, mp):
    """A gateway whose venue takes no more requests sleeps on its side channel alone while
    the log holds a backlog it does not read; a halt through the side channel wakes it (the
    ring's wake sequence moves) and it acts at once, far behind the log's tail."""
    backlog = 2000
    with Subscription(DEFAULT_LOG_STREAM, lsdir, start="earliest") as holder, \
            Publication(DEFAULT_LOG_STREAM, lsdir, term_length=1 << 20) as log:  # holder: connected, reads nothing
        _wait(lambda: holder.discover() and log.is_connected, "the log to connect")
        for i in range(backlog):
            assert log.offer(bytes(SEQUENCED_HEADER_LENGTH) + i.to_bytes(8, "little")) > 0
        out = mp.Queue()
        procs.start(dw.gateway_until_halted, str(lsdir), "slow", out)
        assert out.get(timeout=60) == ("attached", "BlockingIdleStrategy")
        path = lsdir / "priority-slow.ring"
        words = _Words(path)
        trailer = path.stat().st_size - lib.LS_RB_TRAILER_LENGTH - CAPACITY  # (WAITING is for CAPACITY)
        try:
            _wait(lambda: words[trailer + WAITING] == 1, "the gateway to sleep on its side channel")
            wakes = words[trailer + WAKES]
            sent = halt(lsdir, "slow", reason="test")
            assert sent["gateways"] == [{"gateway": "slow", "delivered": True, "alive": True}]
            report = out.get(timeout=60)
            assert words[trailer + WAKES] == wakes + 1
        finally:
            words.close()
        assert report["sleeps"] >= 1
        assert 0 < report["requests"] < backlog
        assert report["disconnected_at_position"] == report["position_at_act"] < report["log_position"] == log.position
        procs.join_all()


def test_a_gateway_gives_way_once_when_it_acts_on_a_halt(lsdir, monkeypatch):
    """`halt --all` wakes every gateway at once; on a busy box the others may wait on the CPU
    of the first, behind the log it drains next (in the demo: 1-5 ms). The one that acted
    yields its CPU once, right after acting, and not again while halted or on a resume."""
    import lockstep.cluster.gateway as gateway_module

    yields: list[bool] = []
    with Gateway("a", lsdir) as gw, Gateway("b", lsdir) as other:
        monkeypatch.setattr(gateway_module.os, "sched_yield", lambda: yields.append(gw.halted and other.halted))
        gw.do_work(), other.do_work()
        assert yields == []
        halt(lsdir, all=True, reason="test")
        yields.clear()  # (the sender's own: see the next test)
        gw.do_work()
        assert gw.halted and yields == [False]  # acted, then gave way (before the other had)
        other.do_work()
        assert yields == [False, True]
        halt(lsdir, "a", reason="again")  # already halted: nothing to act on
        resume(lsdir, "a")
        yields.clear()
        gw.do_work()
        assert not gw.halted and yields == []
        halt(lsdir, "a", reason="second")
        yields.clear()
        gw.do_work()
        assert gw.halted and len(yields) == 1


def test_a_halt_sender_gives_way_once_after_writing_the_halts(lsdir, monkeypatch):
    """The gateways a halt wakes are often queued on the sender's CPU (a wakee goes by its
    waker); a sender that goes on working (the demo's risk monitor reads the flood next) kept
    them waiting up to ~1 ms. `halt`/`resume` yield once, after every ring holds the record."""
    import lockstep.cluster.gateway as gateway_module

    with Gateway("a", lsdir) as a, Gateway("b", lsdir) as b:
        held: list[tuple[int, int]] = []
        monkeypatch.setattr(gateway_module.os, "sched_yield",
                            lambda: held.append((a.side_channel.size(), b.side_channel.size())))
        halt(lsdir, all=True, reason="test")
        assert len(held) == 1 and all(size > 0 for size in held[0])  # both written before it gave way
        a.do_work(), b.do_work()
        held.clear()
        resume(lsdir, "a")
        assert len(held) == 1


def test_blocking_idle_comes_back_for_housekeeping(lsdir):
    """With nothing written, the blocking idle returns after its timeout (and sooner when the
    agent's next timer says so), so an agent's duty cycle keeps running: heartbeats and
    liveness checks go on while it sleeps."""
    with ManyToOneRing(lsdir / "idle.ring", CAPACITY) as ring:
        idle = BlockingIdleStrategy(ring, max_spins=0, max_yields=0, timeout_ns=5_000_000)
        assert idle.wait(1_000_000) is False
        cycles = []
        run_agent(lambda: cycles.append(1) or 0, lambda: len(cycles) >= 5, idle)
        assert idle.sleeps >= 5
        timed = BlockingIdleStrategy(ring, max_spins=0, max_yields=0, timeout_ns=10**12,
                                     wake_at=lambda: time.monotonic_ns() + 1_000_000)
        timed.idle(0)  # would hang for 1000 s without the timer
        assert timed.sleeps == 1
        assert ring.write(1, b"there")
        assert idle.wait(10**12) is True  # already there: returns at once


def test_agents_idle_blocking_by_default(lsdir):
    """The sequencer, a replica, a gateway and the recorder sleep on their doorbells unless
    told otherwise."""
    class Machine(StateMachine):
        def on_message(self, ctx, command) -> None:
            pass

        def snapshot(self) -> bytes:
            return b""

        def restore(self, data: bytes) -> None:
            pass

        def state_hash(self) -> bytes:
            return b""

    with Sequencer(lsdir) as seq, Replica(Machine(), lsdir, name="r") as replica, Gateway("g", lsdir) as gw, \
            Recorder(lsdir, stream_id=DEFAULT_LOG_STREAM, archive_dir=lsdir.parent / "archive") as recorder:
        for agent in (seq, replica, gw, recorder):
            assert isinstance(agent_idle(agent.do_work), BlockingIdleStrategy), agent
        rings, images = [], []
        gw.doorbells(rings, images)
        assert len(rings) == 1 and len(images) == 1  # the side channel and the sequenced log


def _lockstep_json(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bench_halt_reports_side_channel_log_delay_and_round_trip(lsdir):
    """`lockstep bench halt --json`: each halt acted on (sent -> acted), the delay it would
    have had in the log, resumes, and a blocking round trip of the same run."""
    r = _lockstep_json("bench", "halt", "--halts", "5", "--round-trips", "300", "--gap-ms", "5")
    assert r["halts"] == 5 and r["gateway_idle"] == "BlockingIdleStrategy"
    for key in ("side_channel", "queued_in_log", "queued_at_venue_pace", "resume", "round_trip_block"):
        assert 0 < r[key]["p50_ns"] <= r[key]["p99_ns"] <= r[key]["max_ns"], key
    assert r["log_messages_written"] > 0 and r["p99_to_round_trip_p50"] > 0


def test_demo_summary_has_the_cpu_its_processes_used(lsdir):
    s = _lockstep_json("demo")
    assert s["cpu_seconds"]["processes"] > 0 and s["cpu_seconds"]["driver"] > 0
    assert s["orders_to_venues_after_halt"] == 0


def test_a_paced_sender_sleeps_until_shortly_before_each_send_time(monkeypatch):
    """The sequencer benchmark's client paces by sleeping (a spinning client takes one of 2
    cores from the agents it measures), then spins the last stretch: it never sends early."""
    from lockstep import bench

    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s) or real_sleep(s))
    for _ in range(3):
        deadline = time.monotonic_ns() + 5_000_000
        bench._pace_until(deadline, spin_ns=1_000_000)
        assert time.monotonic_ns() >= deadline
    assert len(slept) == 3 and all(0 < s <= 0.004 for s in slept)
    bench._pace_until(time.monotonic_ns() - 1, spin_ns=1_000_000)  # already due: neither sleeps nor waits
    assert len(slept) == 3


def test_bench_sequencer_at_a_rate_says_where_the_latency_went(lsdir):
    """`lockstep bench sequencer --rate`: besides intended send -> apply, the client's
    lateness, intended send -> sequenced (from the sequencer's timestamp), the client's send
    call -> apply, the idle's sleeps, and a blocking round trip of the same run to compare."""
    r = _lockstep_json("bench", "sequencer", "--commands", "3000", "--clients", "1", "--rate", "5000",
                       "--round-trips", "500")
    assert r["commands"] == 3000
    for part in ("latency", "to_sequenced", "client_late", "from_send"):
        assert 0 <= r[f"{part}_p50_ns"] <= r[f"{part}_p99_ns"], part
    assert r["to_sequenced_p50_ns"] <= r["latency_p50_ns"] and r["idle"]["sleeps"] > 0
    assert r["from_send_p50_ns"] <= r["latency_p50_ns"] and r["round_trip_p50_ns"] > 0
    short = _lockstep_json("bench", "sequencer", "--commands", "500", "--clients", "1", "--rate", "5000",
                           "--size", "8", "--round-trips", "0")  # no room for the send stamp: no from_send
    assert "from_send_p50_ns" not in short and "round_trip_p50_ns" not in short
