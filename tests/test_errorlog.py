"""The distinct error log in cnc.dat (Agrona's `DistinctErrorLog` format), agents recording
their errors and re-raising them, `lockstep errors`, a corrupt error log, and agents
stopping cleanly on SIGTERM/SIGINT. Real files and real processes; nothing is mocked and no
test asserts a wall-clock time."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from helpers import run_python
from lockstep import (Counters, FileFormatError, LockstepError, Publication, Replica, Sequencer,
                      SequencerClient, StateMachine, Subscription)
from lockstep.archive import Archive
from lockstep.transport.errorlog import ErrorLog, describe, read_errors, record_error
from lockstep.transport.idle import run_agent, stop_on_signals

STALL_S = 60.0


def lockstep_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _section(lsdir) -> tuple[bytes, int]:
    """The raw bytes of cnc.dat's error-log section, and its offset in the file."""
    with Counters(lsdir) as c:
        offset, length = c.error_log_offset, c.error_log_length
    data = (lsdir / "cnc.dat").read_bytes()
    return data[offset:offset + length], offset


def _agrona_read(section: bytes) -> list[tuple[int, int, int, str]]:
    """Agrona's ErrorLogReader.read, transcribed: (count, first, last, text) per record."""
    out, offset = [], 0
    while offset < len(section):
        length = struct.unpack_from("<i", section, offset)[0]
        if length == 0:
            break
        count, last, first = struct.unpack_from("<iqq", section, offset + 4)
        out.append((count, first, last, section[offset + 24:offset + length].decode("utf-8")))
        offset += (length + 7) & ~7
    return out


# -- format --------------------------------------------------------------------------------

def test_records_are_agronas_layout_byte_for_byte(lsdir):
    assert record_error(lsdir, "first error", timestamp_ms=1_000) is True
    assert record_error(lsdir, "second", timestamp_ms=1_100) is True
    assert record_error(lsdir, "first error", timestamp_ms=2_000) is False  # seen before: counted
    assert record_error(lsdir, "first error", timestamp_ms=1_500) is False  # late: last stays 2000
    section, offset = _section(lsdir)
    with Counters(lsdir) as c:
        assert offset == 128 + 1024 * (512 + 128) and c.error_log_length == 1 << 20  # after the counters
    # length int32 @0 (header 24 + text), count int32 @4, last ms int64 @8, first ms int64 @16, text @24
    assert struct.unpack_from("<iiqq", section, 0) == (24 + 11, 3, 2_000, 1_000)
    assert section[24:35] == b"first error"
    # the next record is aligned to 8: align(35, 8) = 40
    assert section[35:40] == bytes(5)
    assert struct.unpack_from("<iiqq", section, 40) == (24 + 6, 1, 1_100, 1_100)
    assert section[64:70] == b"second"
    assert struct.unpack_from("<i", section, 72)[0] == 0  # end of the log
    assert _agrona_read(section) == [(3, 1_000, 2_000, "first error"), (1, 1_100, 1_100, "second")]
    assert [(r.offset, r.count, r.first_ms, r.last_ms, r.text) for r in read_errors(lsdir)] == [
        (0, 3, 1_000, 2_000, "first error"), (40, 1, 1_100, 1_100, "second")]


def test_exceptions_are_told_apart_by_type_message_and_last_frame(lsdir):
    def fail(value):
        raise ValueError(f"bad value {value}")

    errors = []
    for value in (1, 1, 2):
        try:
            fail(value)
        except ValueError as e:
            errors.append(e)
    text = describe(errors[0])
    assert text.startswith("ValueError: bad value 1 (at ") and text.endswith(" in fail)")
    assert __file__ in text
    for e in errors:
        record_error(lsdir, e)
    records = read_errors(lsdir)
    assert [(r.count, r.text.split(" (at ")[0]) for r in records] == [(2, "ValueError: bad value 1"),
                                                                       (1, "ValueError: bad value 2")]
    assert describe(FileFormatError("/x", "broken")) == "lockstep.errors.FileFormatError: /x: broken"
    record_error(lsdir, "caf\u00e9 \u2603")  # ASCII only in the log
    assert read_errors(lsdir)[-1].text == "caf\\xe9 \\u2603"


def test_error_log_object_and_closed_use(lsdir):
    with ErrorLog(lsdir) as log:
        assert log.read() == []
        assert log.record("x") and not log.record("x")
        assert [(r.count, r.text) for r in log.read()] == [(2, "x")]
    with pytest.raises(LockstepError, match="closed"):
        log.record("y")
    with pytest.raises(LockstepError, match="closed"):
        log.read()


def test_missing_cnc_is_a_clear_error(lsdir):
    with pytest.raises(FileFormatError, match="cnc.dat: no such file"):
        read_errors(lsdir)
    proc = lockstep_cli("errors", "--dir", str(lsdir))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("lockstep: error: ") and "cnc.dat" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- concurrency ---------------------------------------------------------------------------

TEXTS = 20
ROUNDS = 150


def _text(i: int) -> str:
    return f"shared error {i}: " + "x" * (i * 7)


def _writer(dir: str, worker: int, start) -> None:
    start.wait(STALL_S)
    with ErrorLog(dir) as log:
        for r in range(ROUNDS):
            for k in range(TEXTS):
                log.record(_text((k + worker * 7) % TEXTS), timestamp_ms=r)
            log.record(f"only worker {worker}", timestamp_ms=r)


def test_writers_in_several_processes_lose_no_observation(lsdir, procs, mp):
    """Four processes record the same new texts at once (each must be claimed once) and their
    own: every observation is counted, in one record per text unless a writer gave up
    waiting for a preempted one (then the records of that text add up)."""
    workers = 4
    start = mp.Event()
    Counters(lsdir).close()
    for w in range(workers):
        procs.start(_writer, str(lsdir), w, start)
    start.set()
    procs.join_all()
    records = read_errors(lsdir)
    totals: dict[str, int] = {}
    for r in records:
        totals[r.text] = totals.get(r.text, 0) + r.count
        assert r.last_ms == ROUNDS - 1 and r.first_ms <= r.last_ms
    expected = {_text(i): workers * ROUNDS for i in range(TEXTS)}
    expected.update({f"only worker {w}": ROUNDS for w in range(workers)})
    assert totals == expected
    assert sum(r.count for r in records) == workers * ROUNDS * (TEXTS + 1)
    assert len(records) < 2 * len(expected)  # distinct: duplicates only by rare timeouts


# -- agents --------------------------------------------------------------------------------

def test_run_agent_records_the_error_and_reraises(lsdir):
    calls = 0

    def do_work() -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyError("no such order")
        return 1

    for _ in range(2):
        calls = 0
        with pytest.raises(KeyError):
            run_agent(do_work, error_dir=lsdir)
    [record] = read_errors(lsdir)
    assert record.count == 2
    assert record.text.startswith("KeyError: 'no such order' (at ") and record.text.endswith(" in do_work)")


def test_stopping_is_not_an_error(lsdir):
    def do_work() -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_agent(do_work, error_dir=lsdir)
    assert not (lsdir / "cnc.dat").exists() or read_errors(lsdir) == []


class _BrokenSequencer(Sequencer):
    def do_work(self, limit: int = 4096) -> int:
        raise RuntimeError("ingress exploded")


class _Exploding(StateMachine):
    def on_message(self, ctx, command: bytes) -> None:
        raise ValueError(f"cannot apply {command[:4].hex()}")

    def snapshot(self) -> bytes:
        return b""


def test_agents_record_their_errors_and_stop(lsdir):
    """Sequencer.run and Replica.run: an error in a duty cycle is in the log and propagates."""
    seq = _BrokenSequencer(lsdir)
    try:
        with pytest.raises(RuntimeError, match="ingress exploded"):
            seq.run(threading.Event())
    finally:
        seq.close()
    seq = Sequencer(lsdir)
    client = SequencerClient(lsdir)
    replica = Replica(_Exploding(), lsdir, name="exploding", send_outputs=False)
    try:
        assert client.send(b"\xde\xad\xbe\xef")
        deadline = time.monotonic() + STALL_S

        def do_work() -> int:
            assert time.monotonic() < deadline, "the replica never saw the command"
            return seq.do_work() + replica.do_work()

        with pytest.raises(ValueError, match="cannot apply deadbeef"):
            run_agent(do_work, error_dir=lsdir)  # the same loop Replica.run runs
        replica.close()
        # Replica.run itself: a new replica joins at the start of the log and meets the command.
        replica = Replica(_Exploding(), lsdir, name="exploding", send_outputs=False)
        with pytest.raises(ValueError, match="cannot apply deadbeef"):
            replica.run(lambda: time.monotonic() > deadline)
    finally:
        replica.close()
        client.close()
        seq.close()
    texts = {r.text.split(" (at ")[0]: r for r in read_errors(lsdir)}
    assert texts["RuntimeError: ingress exploded"].count == 1
    assert "in do_work)" in texts["RuntimeError: ingress exploded"].text
    assert texts["ValueError: cannot apply deadbeef"].count == 2
    assert texts["ValueError: cannot apply deadbeef"].text.endswith(" in on_message)")


def test_a_failure_to_record_does_not_hide_the_error(lsdir, capfd):
    _corrupt(lsdir, 0, 7)

    def do_work() -> int:
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        run_agent(do_work, error_dir=lsdir)
    assert "could not record an error" in capfd.readouterr().err


# -- command line ----------------------------------------------------------------------------

def test_lockstep_errors_json_and_text(lsdir):
    record_error(lsdir, "boom\nsecond line", timestamp_ms=1_700_000_000_000)
    record_error(lsdir, "boom\nsecond line", timestamp_ms=1_700_000_001_000)
    record_error(lsdir, "other", timestamp_ms=1_700_000_002_000)
    proc = lockstep_cli("errors", "--dir", str(lsdir), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["count"], r["first_ms"], r["last_ms"], r["text"]) for r in rows] == [
        (2, 1_700_000_000_000, 1_700_000_001_000, "boom\nsecond line"),
        (1, 1_700_000_002_000, 1_700_000_002_000, "other")]
    assert all(r["first"].startswith("2023-11-1") for r in rows)
    proc = lockstep_cli("errors", "--dir", str(lsdir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("2 observations  first ") and lines[0].endswith(
        "boom\\nsecond line") and lines[1].endswith("  other")
    assert "--json" in lockstep_cli("errors", "--help").stdout


def test_stat_shows_the_error_count_and_last_three(lsdir):
    for i, text in enumerate(["a", "b", "c", "d", "a"]):
        record_error(lsdir, f"error {text}", timestamp_ms=1_700_000_000_000 + i)
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "stat", "--once", "--json", "--dir", str(lsdir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)["errors"]
    assert errors["distinct"] == 4 and errors["observations"] == 5
    assert [e["text"] for e in errors["last"]] == ["error a", "error d", "error c"]
    page = lockstep_cli("stat", "--once", "--dir", str(lsdir)).stdout
    assert "errors: 4 distinct, 5 observations" in page and "2x last" in page


# -- corruption ------------------------------------------------------------------------------

def _corrupt(lsdir, at: int, length: int) -> None:
    record_error(lsdir, "a fine error")
    _, offset = _section(lsdir)
    with open(lsdir / "cnc.dat", "r+b") as f:
        f.seek(offset + at)
        f.write(struct.pack("<i", length))


@pytest.mark.parametrize("at,length", [(0, 5), (0, -3), (0, 1 << 30), (0, -(1 << 30)), (0, -(1 << 31)),
                                       (40, 23), (40, (1 << 31) - 1), (40, (1 << 20) - 39)])
def test_garbage_lengths_are_a_clear_error(lsdir, at, length):
    _corrupt(lsdir, at, length)
    with pytest.raises(FileFormatError, match=f"error log record at offset {at}: length expected"):
        read_errors(lsdir)
    with pytest.raises(LockstepError, match=f"offset {at}"):
        record_error(lsdir, "a new error")
    proc = lockstep_cli("errors", "--dir", str(lsdir))
    assert proc.returncode == 1
    assert proc.stderr.startswith("lockstep: error: ") and f"offset {at}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = lockstep_cli("stat", "--once", "--dir", str(lsdir))  # the rest of stat still shows
    assert proc.returncode == 0 and "errors: cannot read the error log" in proc.stdout


_RANDOM_CODE = r"""
import random, struct, sys
from lockstep import Counters, LockstepError
from lockstep.transport.errorlog import ErrorLog
dir, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
with Counters(dir) as c:
    offset = c.error_log_offset
outcomes = {"valid": 0, "error": 0}
with open(dir + "/cnc.dat", "r+b") as f:
    for round in range(300):
        f.seek(offset)
        f.write(bytes(4096))
        for _ in range(rng.randrange(1, 8)):  # garbage words, lengths among them
            at = rng.randrange(0, 512) & ~3
            f.seek(offset + at)
            f.write(struct.pack("<i", rng.choice([rng.randrange(-2**31, 2**31), rng.randrange(-64, 600)])))
        f.flush()
        with ErrorLog(dir) as log:
            try:
                log.read()
                log.record("probe %d" % rng.randrange(3))
                log.read()
                outcomes["valid"] += 1
            except LockstepError as e:
                assert "error log" in str(e), e
                outcomes["error"] += 1
print(outcomes)
"""


def test_random_garbage_never_crashes(lsdir):
    Counters(lsdir).close()
    proc = run_python(_RANDOM_CODE, str(lsdir), "7", timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    outcomes = eval(proc.stdout.strip().splitlines()[-1])
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 300


# -- signals ---------------------------------------------------------------------------------

def test_stop_on_signals_sets_the_event_and_restores_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + STALL_S
        while not stop.is_set():  # the handler runs between bytecodes of the main thread
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt inside the block
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before
    result = []
    thread = threading.Thread(target=lambda: result.append(stop_on_signals().__enter__()))
    thread.start()
    thread.join()
    assert isinstance(result[0], threading.Event)  # off the main thread: an Event, no handlers


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + STALL_S
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} in {STALL_S} s"
        time.sleep(0.01)


def test_lockstep_record_stops_cleanly_on_sigterm(lsdir):
    """`lockstep record` gets SIGTERM mid-stream: exit 0, recording stopped at the end of what
    it copied, segment file closed, recorder lock released (a new recorder starts at once)."""
    pub = Publication(100, lsdir)
    recorder = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "record", "--stream", "100", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "recording stream 100" in recorder.stderr.readline()
        sent = 0
        deadline = time.monotonic() + STALL_S
        while sent < 200:
            assert time.monotonic() < deadline, "the recorder never joined"
            if pub.offer(b"m" * 100) > 0:
                sent += 1
            else:
                time.sleep(0.001)
        final = pub.position

        def caught_up() -> bool:
            found = Archive.for_dir(lsdir).recordings()
            return bool(found) and found[0].stop_position == final

        _wait_for(caught_up, "recording of every message")
        recorder.send_signal(signal.SIGTERM)
        out, err = recorder.communicate(timeout=STALL_S)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        pub.close()
    assert recorder.returncode == 0, err
    assert "Traceback" not in err
    [summary] = json.loads(out)["recordings"]
    assert summary["state"] == "stopped" and summary["stop_position"] == final
    [desc] = Archive.for_dir(lsdir).recordings()
    assert desc.state == "stopped" and desc.stop_position == final and desc.stop_timestamp > 0
    open_fds = subprocess.run(["ls", f"/proc/{recorder.pid}/fd"], capture_output=True)
    assert open_fds.returncode != 0  # the process is gone
    proc = lockstep_cli("record", "--stream", "100", "--duration", "0", "--json")
    assert proc.returncode == 0, proc.stderr  # the lock was released


_AGENT_SCRIPT = r"""
import os, sys
from lockstep import Sequencer
from lockstep.transport.idle import stop_on_signals
seq = Sequencer(sys.argv[1])
with stop_on_signals() as stop:
    try:
        print("running", os.getpid(), flush=True)
        seq.run(stop)
    finally:
        seq.close()
print("stopped", seq.last_sequence, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_sequencer_process_stops_cleanly_on_a_signal(lsdir, sig):
    """A sequencer run under `stop_on_signals` ends its duty cycle on SIGTERM/SIGINT, closes
    (its counters freed, its log left open for the next one) and exits 0; a new sequencer
    continues the sequence."""
    client = SequencerClient(lsdir)
    log = Subscription(100, lsdir)  # a subscriber: the sequencer sequences only when someone listens
    agent = subprocess.Popen([sys.executable, "-c", _AGENT_SCRIPT, str(lsdir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stdout.readline().startswith("running")
        for i in range(10):
            assert client.send(b"command %d" % i)
        got = []
        _wait_for(lambda: log.poll(lambda data, header: got.append(bytes(data)), 10) >= 0 and len(got) == 10,
                  "sequenced commands")
        assert got[-1].endswith(b"command 9")
        agent.send_signal(sig)
        out, err = agent.communicate(timeout=STALL_S)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert out.splitlines()[-1] == "stopped 10"
    with Counters(lsdir) as counters:
        assert not [c for c in counters if c.owner_id == agent.pid]  # close() freed them
    seq = Sequencer(lsdir)
    try:
        assert seq.last_sequence == 10
    finally:
        seq.close()
        client.close()
        log.close()
