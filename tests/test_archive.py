"""The archive: a recorder process records a live stream frame for frame into segment
files + a catalog; recordings read back byte-identical, from any position to any position,
onto a live stream, and into the order-book machine to the same state hash as the live
replicas; `--until`, snapshots next to recordings, live-hash comparison, the step debugger
in a real terminal; a recorder SIGKILLed mid-segment recovers; damaged files give a
`LockstepError` naming file and offset. Guards are no-progress timeouts, never speed limits."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import struct
import subprocess
import sys
from pathlib import Path

import archive_workers as aw
from helpers import Terminal, drive
import cluster_workers as cw
import numpy as np
import pytest
from lockstep import (
    FileFormatError,
    Publication,
    Replica,
    Sequencer,
    SequencerClient,
    Subscription,
)
from lockstep.archive import Archive, Recorder
from lockstep.archive.catalog import Catalog
from lockstep.archive.replay import ReplaySession
from lockstep.archive.segments import FRAME_HEADER
from lockstep.examples.orderbook import OrderBook

STREAM = 100
MACHINE = "lockstep.examples.orderbook:OrderBook"


def lockstep_cli(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True,
                          timeout=timeout, input=input)


def _drive(until, *steps, what: str) -> None:
    """helpers.drive with this module's stall limit."""
    drive(until, *steps, what=what, stall_s=cw.STALL_S)


def _record_orderbook(lsdir, count: int, *, hashes: str | None = None, **recorder_kwargs):
    """In one process: sequencer, recorder (and optionally a replica writing hashes) over
    `count` order-book commands. Returns the archive."""
    seq = Sequencer(lsdir)
    rec = Recorder(lsdir, stream_id=STREAM, **recorder_kwargs)
    replica = Replica(OrderBook(), lsdir, name=hashes, hash_every=100, send_outputs=False) if hashes else None
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    send = cw.sender(client, list(cw.commands(0, count, seed=3)))
    steps = [send, seq.do_work, rec.do_work] + ([replica.do_work] if replica else [])
    _drive(lambda: seq.last_sequence == count and rec.position == seq.position
           and (replica is None or replica.last_sequence == count), *steps, what="recording the order book")
    if replica:
        replica.record_hash()
        replica.close()
    rec.close()
    client.close()
    seq.close()
    return Archive(rec.archive.dir)


# -- byte-identical frames ---------------------------------------------------------------

def test_recording_holds_the_terms_bytes_padding_and_fragments_included(lsdir):
    """Mixed sizes (fragmented messages, padding at term ends): the segments hold exactly
    the bytes of the log's terms, frames() yields them, messages() the messages sent."""
    term = 1 << 16
    rec = Recorder(lsdir, stream_id=7, segment_length=1 << 17)
    pub = Publication(7, lsdir, exclusive=True, term_length=term)
    rec.discover()
    rng = np.random.default_rng(5)
    sent = []
    while True:  # under two terms: the log still holds every byte to compare with (it
        # cleans the partition after the active one when it rotates)
        size = int(rng.choice([1, 17, 100, 1400, 3000, 5000]))
        if pub.position + size + 4 * 32 + size // 8 > 2 * term - 2048:
            break
        message = bytes(rng.integers(0, 256, size, dtype=np.uint8))
        _drive(lambda: bool(sent) and sent[-1][0] is message, lambda: _offer(pub, message, sent), rec.do_work,
               what="publishing")
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    assert rec.recording_id == 0
    log_bytes = bytes(pub.log.file.array[:2 * term])  # partitions 0, 1 = terms 0, 1
    stop = pub.position
    rec.close()
    arch = Archive.for_dir(lsdir)
    [desc] = arch.recordings()
    assert (desc.start_position, desc.stop_position, desc.state, desc.term_length) == (0, stop, "stopped", term)
    segments = b"".join(p.read_bytes() for p in arch.segment_files(0))
    assert segments[:stop] == log_bytes[:stop]
    assert not any(segments[stop:])
    with arch.reader(0) as reader:
        frames = list(reader.frames())
    assert b"".join(f for _, f in frames) == log_bytes[:stop]
    assert any(FRAME_HEADER.unpack_from(f)[3] == 0 for _, f in frames), "expected padding at a term end"
    assert any(FRAME_HEADER.unpack_from(f)[2] == 0x80 for _, f in frames), "expected fragmented messages"
    with arch.reader(0) as reader:
        assert [(p, h["position"]) for p, h in reader.messages()] == [(m, pos) for m, pos in sent]
    # From any position to any position: message boundaries, and from inside a fragmented
    # message (skipped to the next whole one).
    positions = [0] + [pos for _, pos in sent]
    for a, b in [(positions[3], positions[20]), (positions[10], stop), (frames[5][0], positions[-2])]:
        with arch.reader(0, start=a, stop=b) as reader:
            got = [(p, h["position"]) for p, h in reader.messages()]
        want = [(m, pos) for m, pos in sent if pos <= b and pos - len(m) > a - 32 and _first_frame(frames, pos, m) >= a]
        assert got == want
    pub.close()


def _offer(pub, message, sent) -> int:
    result = pub.offer(message)
    if result > 0:
        sent.append((message, result))
        return 1
    return 0


def _first_frame(frames, end_position, message) -> int:
    """Position of the first frame of the message that ends at `end_position`."""
    frame_positions = [p for p, _ in frames]
    i = frame_positions.index(next(p for p in reversed(frame_positions) if p < end_position))
    while FRAME_HEADER.unpack_from(frames[i][1])[2] & 0x80 == 0:
        i -= 1
    return frame_positions[i]


@pytest.mark.slow
def test_record_one_million_messages_live_and_replay_byte_identical_frames(lsdir, procs, mp):
    """A publisher process sends 1M messages; a recorder process records them live; the
    segments hold exactly the frames the publisher wrote, and the reader gives back every
    message in order."""
    count, size, term = 1_000_000, 16, 1 << 20
    h = cw.Harness(mp, procs)
    stop = h.stop_flag()
    h.start(aw.run_publisher, "pub", lsdir, 9, count, h.progress, 0, size=size, term_length=term)
    h.wait_reports(["pub"], "started")
    h.start(aw.run_recorder, "rec", lsdir, stop, h.progress, 1, stream_id=9, segment_length=8 << 20)
    h.wait_reports(["rec"], "started")
    [published] = h.wait_reports(["pub"])
    h.wait(lambda: h.progress[1] == published["position"], "the recorder caught up")
    stop.set()
    h.wait_reports(["rec"])
    h.procs.join_all()
    arch = Archive.for_dir(lsdir)
    [desc] = arch.recordings()
    frame = 64  # 32-byte header + 16-byte payload, aligned
    assert (desc.start_position, desc.stop_position, desc.state) == (0, count * frame, "stopped")
    # Byte-identical: every frame as the publisher's appender wrote it (1 MiB terms hold
    # exactly 16384 such frames: no padding).
    raw = np.frombuffer(b"".join(p.read_bytes() for p in arch.segment_files(desc.recording_id)),
                        dtype=np.uint8)[:count * frame].reshape(count, frame)
    expected = np.zeros((count, frame), dtype=np.uint8)
    positions = np.arange(count, dtype=np.int64) * frame
    header = np.zeros(count, dtype=[("length", "<i4"), ("version", "u1"), ("flags", "u1"), ("type", "<i2"),
                                    ("term_offset", "<i4"), ("session_id", "<i4"), ("stream_id", "<i4"),
                                    ("term_id", "<i4"), ("reserved", "<i8")])
    header["length"], header["flags"], header["type"] = 32 + size, 0xC0, 1
    header["term_offset"] = positions & (term - 1)
    header["session_id"], header["stream_id"] = published["session_id"], 9
    header["term_id"] = ((desc.initial_term_id + (positions >> 20) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)
    expected[:, :32] = header.view(np.uint8).reshape(count, 32)
    expected[:, 32:48] = np.frombuffer(aw.numbered_batch(0, count, size), dtype=np.uint8).reshape(count, size)
    mismatched = np.flatnonzero((raw != expected).any(axis=1))
    assert mismatched.size == 0, f"{mismatched.size} frames differ, first at position {mismatched[:1] * frame}"
    # Read back as a subscription: every message, in order, at its position.
    numbers = np.empty(count, dtype=np.int64)
    ends = np.empty(count, dtype=np.int64)
    seen = 0

    def handler(data, hdr):
        nonlocal seen
        numbers[seen] = struct.unpack_from("<q", data)[0]
        ends[seen] = hdr.position
        seen += 1

    with arch.reader(desc.recording_id) as reader:
        while reader.poll(handler, 4096):
            pass
    assert seen == count
    assert (numbers == np.arange(count)).all() and (ends == positions + frame).all()


# -- replay into the state machine ---------------------------------------------------------

@pytest.mark.slow
def test_replay_into_the_order_book_reaches_the_live_replicas_hash(lsdir, procs, mp):
    """Sequencer, two replicas, two clients and a recorder as processes; the recording
    replayed into OrderBook (API and CLI) gives the replicas' hash, and --compare finds
    every live hash equal."""
    h = cw.Harness(mp, procs)
    seq_stop, rec_stop = h.stop_flag(), h.stop_flag()
    h.start(cw.run_sequencer, "sequencer", lsdir, seq_stop, h.progress, 0)
    h.wait_reports(["sequencer"], "started")
    h.start(aw.run_recorder, "rec", lsdir, rec_stop, h.progress, 5)
    h.wait_reports(["rec"], "started")
    per_client, replicas = 8_000, ["a", "b"]
    total = 2 * per_client
    for i, name in enumerate(replicas):
        h.start(cw.run_replica, name, lsdir, total, h.progress, 1 + i, hash_every=500)
    h.wait_reports(replicas, "started")
    for i in range(2):
        h.start(cw.run_client, f"c{i}", lsdir, i, per_client, h.progress, 10 + i)
    results = h.wait_reports(replicas)
    h.wait_reports(["c0", "c1"])
    assert len({r["hash"] for r in results}) == 1
    last_position = results[0]["last_position"]
    h.wait(lambda: h.progress[5] >= last_position, "the recorder caught up")
    seq_stop.set()
    h.wait_reports(["sequencer"])
    rec_stop.set()
    h.wait_reports(["rec"])
    h.procs.join_all()

    arch = Archive.for_dir(lsdir)
    [desc] = arch.recordings()
    with ReplaySession(arch, desc.recording_id, OrderBook()) as session:
        session.run()
        result = session.result()
    assert result.hash == results[0]["hash"]
    assert (result.sequence, result.position) == (results[0]["last_sequence"], last_position)
    hashes_files = [r["hashes_file"] for r in results]
    proc = lockstep_cli("replay", str(desc.recording_id), "--machine", MACHINE, "--json",
                        *sum((["--compare", f] for f in hashes_files), []))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["hash"] == results[0]["hash"] and out["divergence"] is None
    assert out["compared"] >= 2 * (total // 500)


def test_compare_names_the_first_divergent_position(lsdir, tmp_path):
    _record_orderbook(lsdir, 1_000, hashes="live")
    records = Path(lsdir / "live.hashes").read_bytes()
    assert len(records) >= 10 * 32
    bad = bytearray(records)
    bad[3 * 32 + 16] ^= 0xFF  # the fourth recorded hash
    tampered = tmp_path / "tampered.hashes"
    tampered.write_bytes(bytes(bad))
    position = struct.unpack_from("<q", records, 3 * 32)[0]
    ok = lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", str(lsdir / "live.hashes"))
    assert ok.returncode == 0 and "all equal" in ok.stdout, ok.stdout + ok.stderr
    proc = lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", str(tampered), "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["divergence"]["position"] == position and out["divergence"]["hashes_file"] == str(tampered)
    text = lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", str(tampered))
    assert text.returncode == 1 and f"FIRST DIVERGENCE at position {position}" in text.stdout


def test_until_stops_exactly_after_the_message_and_its_snapshot_resumes_to_the_same_hash(lsdir):
    arch = _record_orderbook(lsdir, 3_000)
    with arch.reader(0) as reader:
        positions = [hdr["position"] for _, hdr in reader.messages()]
    full = json.loads(lockstep_cli("replay", "0", "--machine", MACHINE, "--json").stdout)
    assert full["messages"] == 3_000 and full["position"] == positions[-1]
    until = positions[1234]
    proc = lockstep_cli("replay", "0", "--machine", MACHINE, "--until", str(until), "--write-snapshot", "--json")
    assert proc.returncode == 0, proc.stderr
    part = json.loads(proc.stdout)
    assert (part["messages"], part["position"], part["sequence"]) == (1235, until, 1235)
    snapshot = Path(part["snapshot_written"])
    assert snapshot.parent == arch.dir and snapshot.name.endswith(f"-{until:020d}.snap")
    # a position between messages: stops after the last message before it
    between = json.loads(lockstep_cli("replay", "0", "--machine", MACHINE, "--until", str(until + 32),
                                      "--json").stdout)
    assert between["position"] == until
    resumed = json.loads(lockstep_cli("replay", "0", "--machine", MACHINE, "--snapshot", str(snapshot),
                                      "--json").stdout)
    assert resumed["start_position"] == until and resumed["messages"] == 3_000 - 1235
    assert resumed["hash"] == full["hash"] and resumed["position"] == full["position"]
    text = lockstep_cli("replay", "0", "--machine", MACHINE)
    assert text.returncode == 0 and f"state hash {full['hash']}" in text.stdout


def test_replay_onto_a_live_stream(lsdir):
    arch = _record_orderbook(lsdir, 500)
    sub = Subscription(42, lsdir, start="earliest", join="earliest")
    pub = Publication(42, lsdir, exclusive=True)
    _drive(lambda: sub.discover() > 0, lambda: 0, what="subscribing")
    assert arch.replay_onto(0, pub) == 500
    got = []
    _drive(lambda: len(got) == 500, lambda: sub.poll(lambda d, h: got.append(bytes(d)), 100), what="reading")
    with arch.reader(0) as reader:
        assert got == [p for p, _ in reader.messages()]
    pub.close()
    sub.close()


# -- the step debugger in a real terminal -----------------------------------------------------

def test_step_debugger_in_a_terminal(lsdir):
    arch = _record_orderbook(lsdir, 400)
    with arch.reader(0) as reader:
        messages = list(reader.messages())
    term = Terminal([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", MACHINE, "--step"])
    try:
        term.expect("(replay @0) ")
        term.send("next")
        out = term.expect("(replay @")
        assert f"@{messages[0][1]['position']} seq 1 " in out and "NewOrder{" in out
        assert "changed:" in out and "commands: 0 -> 1" in out
        term.send("next 2")
        out = term.expect("(replay @")
        assert "seq 2 " in out and "seq 3 " in out
        target = messages[99][1]["position"]
        term.send(f"continue {target}")
        out = term.expect(f"(replay @{target}) ")
        assert f"now at position {target} (sequence 100)" in out
        term.send("show-state")
        out = term.expect("(replay @")
        book = OrderBook()
        with ReplaySession(arch, 0, book, until=target) as session:
            session.run()
        assert f"commands = {book.commands}" in out and f"hash {book.state_hash().hex()}" in out
        term.send("template Cancel")
        out = term.expect("(replay @")
        assert "Cancel{" in out and "stopped after the next Cancel" in out
        term.send("write-snapshot")
        out = term.expect("(replay @")
        assert "snapshot at position" in out and ".snap" in out
        term.send("continue")
        out = term.expect("(replay @")
        assert "end of recording" in out
        term.send("quit")
        out = term.expect("state hash ")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


# -- crashes --------------------------------------------------------------------------------

@pytest.mark.slow
def test_recorder_sigkilled_mid_segment_recovers_and_continues(lsdir, procs, mp):
    count = 300_000
    h = cw.Harness(mp, procs)
    h.start(aw.run_publisher, "pub", lsdir, 9, count, h.progress, 0, term_length=1 << 16, batch=200)
    h.wait_reports(["pub"], "started")
    stop = h.stop_flag()  # a SIGKILLed recorder must not wedge it (mp.Event would)
    kwargs = dict(stream_id=9, segment_length=1 << 17)
    h.start(aw.run_recorder, "rec", lsdir, stop, h.progress, 1, **kwargs)
    h.wait_reports(["rec"], "started")
    h.wait(lambda: h.progress[1] > count * 64 // 3, "a third recorded")
    h.kill("rec")
    arch = Archive.for_dir(lsdir)
    [desc] = arch.recordings()
    assert desc.state == "active" and desc.stop_position % 64 == 0  # a frame boundary
    with arch.reader(0) as reader:  # what the catalog claims reads back whole
        numbers = [struct.unpack_from("<q", p)[0] for p, _ in reader.messages()]
    assert numbers == list(range(len(numbers)))
    h.start(aw.run_recorder, "rec2", lsdir, stop, h.progress, 2, **kwargs)
    [started] = h.wait_reports(["rec2"], "started")
    [repaired] = started["repaired"]
    assert repaired["recording_id"] == 0 and repaired["stop_position"] >= desc.stop_position
    assert started["recording_id"] == 0 and started["start"] == repaired["stop_position"]  # extended
    [published] = h.wait_reports(["pub"])
    h.wait(lambda: h.progress[2] == published["position"], "the restarted recorder caught up")
    stop.set()
    h.wait_reports(["rec2"])
    [desc] = arch.recordings()
    assert (desc.recording_id, desc.state, desc.start_position, desc.stop_position) == (
        0, "stopped", 0, published["position"])
    with arch.reader(0) as reader:
        numbers = np.fromiter((struct.unpack_from("<q", p)[0] for p, _ in reader.messages()), dtype=np.int64)
    assert numbers.size == count and (numbers == np.arange(count)).all()


def _recorded(lsdir, messages: int = 2_000) -> tuple[Archive, int]:
    """A stopped recording of `messages` numbered messages (stream 9, 64 KiB terms,
    128 KiB segments). Returns the archive and the stop position."""
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    rec.discover()
    for i in range(messages):
        while pub.offer(aw.numbered(i, 16)) < 0:
            rec.do_work()
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    stop = pub.position
    rec.close()
    pub.close()
    return Archive.for_dir(lsdir), stop


@pytest.mark.parametrize("tail", ["uncommitted", "runs past the term", "stale term id"])
def test_a_torn_tail_is_never_read_and_the_catalog_is_repaired(lsdir, tail):
    """As a killed recorder leaves it: catalog active with a stale stop position, and after
    the last good frame a frame that must not count. A new recorder repairs the catalog to
    the last complete frame and zeroes the rest."""
    arch, stop = _recorded(lsdir)
    [desc] = arch.recordings()
    Catalog(arch.dir).update(dataclasses.replace(desc, state="active", stop_position=stop - 10 * 64))
    segment = arch.dir / f"0-{stop - stop % (1 << 17)}.rec"
    offset = stop % (1 << 17)
    torn = bytearray(aw.numbered(2_000, 16).ljust(32, b"\0"))
    frame = FRAME_HEADER.pack(48, 0, 0xC0, 1, stop & 0xFFFF, desc.session_id, 9,
                              desc.initial_term_id + (stop >> 16), 0) + bytes(torn)
    if tail == "uncommitted":  # killed between writing the frame and its length
        frame = b"\0\0\0\0" + frame[4:]
    elif tail == "runs past the term":
        frame = struct.pack("<i", (1 << 16) - (stop & 0xFFFF) + 64) + frame[4:]
    else:
        frame = frame[:20] + struct.pack("<i", desc.initial_term_id + 7) + frame[24:]
    with open(segment, "r+b") as f:
        f.seek(offset)
        f.write(frame)
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)  # its stream has no publisher now
    [repaired] = rec.repaired
    rec.close()
    assert (repaired.stop_position, repaired.state) == (stop, "stopped")
    assert not any(segment.read_bytes()[offset:]), "what followed the last good frame is zeroed"
    with arch.reader(0) as reader:
        numbers = [struct.unpack_from("<q", p)[0] for p, _ in reader.messages()]
    assert numbers == list(range(2_000))


# -- damaged files -----------------------------------------------------------------------------

def test_truncated_segment_is_an_error_naming_file_and_offset(lsdir):
    arch, _ = _recorded(lsdir)
    first = arch.segment_files(0)[0]
    os.truncate(first, 5000)
    with pytest.raises(FileFormatError, match=rf"{first}: length: .*truncated at offset 5000"):
        list(arch.reader(0).messages())
    proc = lockstep_cli("dump", str(first))
    assert proc.returncode == 1 and proc.stderr.startswith("lockstep: error: ") and str(first) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_frame_in_a_segment_is_an_error_naming_file_and_offset(lsdir):
    arch, _ = _recorded(lsdir, 4_000)
    second = arch.segment_files(0)[1]
    with open(second, "r+b") as f:
        f.seek(640 + 8)
        f.write(struct.pack("<i", 12345))  # the term offset field of the frame at offset 640
    with pytest.raises(FileFormatError, match=rf"{second}: frame at offset 640 .*term offset field"):
        list(arch.reader(0).messages())
    proc = lockstep_cli("dump", str(second))
    assert proc.returncode == 1 and "frame at offset 640" in proc.stderr and str(second) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:64 + 100], r"descriptor at offset 64: truncated"),
    (lambda raw: raw[:64 + 128 + 40] + b"\xff" + raw[64 + 128 + 41:], r"descriptor 1 at offset 192: crc32"),
    (lambda raw: b"NOTACATL" + raw[8:], r"magic at offset 0"),
    (lambda raw: raw[:10], r"header at offset 0: truncated"),
])
def test_damaged_catalog_is_an_error_naming_file_and_offset(lsdir, damage, message):
    arch, _ = _recorded(lsdir, 10)
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)  # a second (empty) session: second descriptor
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    rec.discover()
    rec.close()
    pub.close()
    path = arch.catalog.path
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FileFormatError, match=f"{path}: {message}"):
        arch.recordings()
    with pytest.raises(FileFormatError, match=f"{path}: {message}"):
        Recorder(lsdir, stream_id=9)
    proc = lockstep_cli("recordings")
    assert proc.returncode == 1 and proc.stderr.startswith(f"lockstep: error: {path}: ")
    assert len(proc.stderr.strip().splitlines()) == 1


# -- command line ------------------------------------------------------------------------------

def test_record_recordings_and_dump_from_the_command_line(lsdir):
    """`lockstep record` in the background while the order book is sequenced; `recordings
    --json` lists it; `dump SEGMENT --json` decodes the sequenced commands by name."""
    seq = Sequencer(lsdir)
    recorder = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "record", "--stream", "100", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = recorder.stderr.readline()
        assert "recording stream 100" in line, line
        client = SequencerClient(lsdir)
        send = cw.sender(client, list(cw.commands(0, 300)))
        _drive(lambda: seq.last_sequence == 300, send, seq.do_work, what="sequencing")
        final = seq.position

        def recorded() -> bool:
            found = Archive.for_dir(lsdir).recordings()
            return bool(found) and found[0].stop_position == final

        _drive(recorded, seq.do_work, what="the recorder catching up")
        recorder.terminate()
        out, err = recorder.communicate(timeout=60)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, err
    summary = json.loads(out)
    assert summary["recordings"][0]["stop_position"] == final and summary["recordings"][0]["state"] == "stopped"
    listing = lockstep_cli("recordings", "--json")
    [row] = [json.loads(line) for line in listing.stdout.splitlines()]
    assert row["recording_id"] == 0 and row["stream_id"] == 100 and row["stop_position"] == final
    assert "stream=100" in lockstep_cli("recordings").stdout
    [segment] = Archive.for_dir(lsdir).segment_files(0)
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "dump", str(segment), "--json"], capture_output=True,
                          text=True, env={**os.environ, "LOCKSTEP_SCHEMAS": "lockstep.examples.orderbook"})
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(frames) == 300 and frames[0]["sequence"] == 1 and frames[-1]["position"] + (frames[-1]["length"] + 31) // 32 * 32 == final
    assert frames[0]["message"].startswith(("NewOrder{", "Cancel{"))
    seq.close()
    client.close()


def test_replay_errors_are_one_line(lsdir):
    _record_orderbook(lsdir, 50)
    for args, text in [(["replay", "7", "--machine", MACHINE], "no recording 7"),
                       (["replay", "0", "--machine", "no.such.module:X"], "cannot import module"),
                       (["replay", "0", "--machine", "lockstep.examples.orderbook"], "expected module:Class"),
                       (["replay", "0", "--machine", MACHINE, "--until", "999999999"], "beyond recording 0")]:
        proc = lockstep_cli(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("lockstep: error: ") and text in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("durability", ["segment", "interval"])
def test_fsync_durability_never_claims_more_than_was_synced(lsdir, durability):
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17, durability=durability, fsync_interval_ms=5)
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    rec.discover()
    arch = Archive.for_dir(lsdir)
    claimed = []
    for i in range(6_000):
        while pub.offer(aw.numbered(i, 16)) < 0:
            rec.do_work()
        if i % 500 == 0:
            [desc] = arch.recordings()
            assert desc.stop_position <= rec.position
            claimed.append(desc.stop_position)
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    rec.close()
    [desc] = arch.recordings()
    assert (desc.stop_position, desc.state) == (pub.position, "stopped")
    assert claimed == sorted(claimed) and claimed[-1] > 0, "the stop position advanced at sync points"
    with arch.reader(0) as reader:
        assert [struct.unpack_from("<q", p)[0] for p, _ in reader.messages()] == list(range(6_000))
    pub.close()


def test_a_bad_file_beside_the_stream_does_not_stop_the_recorder(lsdir):
    """A garbage file named like one of the stream's logs (planted, or another program's) is
    skipped as a subscription skips it: the recorder goes on recording the real publisher
    and its messages read back intact (it used to raise out of its own discovery)."""
    (lsdir / "9-12345.logbuffer").write_bytes(b"\x07" * 100_000)
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    rec.discover()
    (lsdir / "9-54321.logbuffer").write_bytes(b"garbage")  # one found later, by housekeeping
    for i in range(500):
        while pub.offer(aw.numbered(i, 16)) < 0:
            rec.do_work()
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    rec.close()
    pub.close()
    [desc] = Archive.for_dir(lsdir).recordings()
    with Archive.for_dir(lsdir).reader(desc.recording_id) as reader:
        assert [payload for payload, _ in reader.messages()] == [aw.numbered(i, 16) for i in range(500)]


def test_a_publisher_that_dies_and_resumes_its_session_stays_in_one_recording(lsdir):
    """A restarted sequencer resumes its log (same session): the recorder's image goes idle
    (no live publisher: parked) and is announced again when it has more. The recording goes
    on, one recording, every message once and intact (the image announced again was
    recorded a second time, into a second recording: each took alternate blocks, both had
    holes — what the fault campaign found)."""
    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    session = pub.session_id
    rec.discover()
    sent = 0

    def offer(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            while pub.offer(aw.numbered(sent, 16)) < 0:
                rec.do_work()
            sent += 1

    for _round in range(3):
        offer(300)
        _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
        pub.close(end_of_stream=False)  # the publisher goes: the image idles, parked
        _drive(lambda: not rec._sub.images, rec.do_work, what="the image to be parked")
        pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16, session_id=session)
        offer(100)  # unread when the next housekeeping looks: the parked image is announced again
        time.sleep(0.15)  # (housekeeping runs every 100 ms)
        rec._sub.maintain()
    offer(300)
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    rec.close()
    pub.close()
    [desc] = Archive.for_dir(lsdir).recordings()
    with Archive.for_dir(lsdir).reader(desc.recording_id) as reader:
        assert [payload for payload, _ in reader.messages()] == [aw.numbered(i, 16) for i in range(sent)]


def test_an_evicted_recorder_says_so_and_its_successor_continues_the_recording(lsdir):
    """A recorder taken for dead by the publisher (paused past its liveness, here: its position
    counter freed) is told (ImageLostError), starts no recording at the live position (that
    one would take precedence over the stopped one and its gap could never be filled), and a
    restarted recorder continues the same recording from its stop while the log still holds it."""
    from lockstep import ImageLostError
    from lockstep.transport.client import client_for

    rec = Recorder(lsdir, stream_id=9, segment_length=1 << 17)
    pub = Publication(9, lsdir, exclusive=True, term_length=1 << 16)
    rec.discover()
    for i in range(200):
        while pub.offer(aw.numbered(i, 16)) < 0:
            rec.do_work()
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    [image] = rec._sub.images
    client_for(lsdir).counters.free(image._counter.id)  # what a publisher does to a dead subscriber
    for i in range(200, 300):
        assert pub.offer(aw.numbered(i, 16)) > 0
    with pytest.raises(ImageLostError):
        _drive(lambda: False, rec.do_work, what="the loss to be told")
    assert len(rec.recordings()) == 1
    rec.close()
    with Recorder(lsdir, stream_id=9, segment_length=1 << 17) as again:  # continues recording 0
        again.discover()
        _drive(lambda: again.position == pub.position, again.do_work, what="recording the rest")
    pub.close()
    [desc] = Archive.for_dir(lsdir).recordings()
    with Archive.for_dir(lsdir).reader(desc.recording_id) as reader:
        assert [payload for payload, _ in reader.messages()] == [aw.numbered(i, 16) for i in range(300)]
