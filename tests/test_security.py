"""Security beyond what test_files.py covers for rings and cnc.dat: every kind of file a
running system creates (log buffers, catalog, segments, snapshots, hash logs, lock files)
is 0600 in 0700 directories even under umask 0; a symlink or another user's file in place
of any file lockstep opens to write is refused, and the file it points to is left alone;
stream, recording, replica and snapshot names cannot reach outside the directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cluster_workers as cw
from helpers import run_python
from lockstep import (FileAccessError, InvalidArgumentError, LockstepError, Publication, Replica, Sequencer,
                      SequencerClient, Subscription)
from lockstep.archive import Archive, Recorder
from lockstep.cluster.replica import Snapshot, latest_snapshot, write_snapshot
from lockstep.transport.counters import Counters
from lockstep.examples.orderbook import OrderBook
from lockstep.transport.stream_files import stream_logs

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
OTHER_UID = 65534
TERM = 1 << 16
SEGMENT = 1 << 17


def _drive(until, *steps, what: str) -> None:
    last = time.monotonic()
    while not until():
        if sum(step() for step in steps):
            last = time.monotonic()
        assert time.monotonic() - last < cw.STALL_S, f"no progress: {what}"


# -- every file a running system makes: 0600 in 0700 -----------------------------------------

_WHOLE_SYSTEM = r"""
import os, sys, time, json
os.umask(0)  # the most permissive umask: lockstep's own modes must still hold
import lockstep
from lockstep import Sequencer, SequencerClient, Replica
from lockstep.archive import Recorder
from lockstep.archive.replay import ReplaySession
from lockstep.archive import Archive
from lockstep.examples.orderbook import OrderBook, new_order, BUY, SELL
from lockstep.cluster.gateway import Gateway
d = sys.argv[1] + "/lockstep"
seq = Sequencer(d, term_length=1 << 16, ingress_capacity=1 << 16)
rec = Recorder(d, segment_length=1 << 17)
replica = Replica(OrderBook(), d, name="book", hash_every=5, snapshot_every=10)
gateway = Gateway("gw", d)
client = SequencerClient(d)
for i in range(60):
    while not client.send(new_order(i + 1, BUY if i % 2 else SELL, 100, 1)):
        seq.do_work()
rec.discover()
deadline = time.monotonic() + 60
while replica.last_sequence < 60 or rec.position < seq.position or replica.pending_outputs:
    seq.do_work(); rec.do_work(); replica.do_work(); gateway.do_work()
    assert time.monotonic() < deadline, "no progress"
replica.take_snapshot()
for x in (gateway, replica, client, rec, seq):
    x.close()
with ReplaySession(Archive.for_dir(d), 0, OrderBook()) as session:
    session.run()
    session.write_snapshot()
print(json.dumps("ok"))
"""


def test_every_file_a_running_system_creates_is_private_even_with_umask_0(tmp_path):
    """Sequencer, recorder, replica (hashes, snapshots), gateway, client and an offline
    replay that writes a snapshot, all under umask 0, in a directory that did not exist."""
    proc = run_python(_WHOLE_SYSTEM, str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = tmp_path / "lockstep"
    kinds = set()
    for root, dirs, files in os.walk(top):
        for name in dirs + [""]:
            path = Path(root) / name
            st = os.lstat(path)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, (path, oct(st.st_mode))
            assert st.st_uid == os.geteuid()
        for name in files:
            path = Path(root) / name
            st = os.lstat(path)
            assert stat.S_ISREG(st.st_mode), path
            assert stat.S_IMODE(st.st_mode) == 0o600, f"{path}: mode {stat.S_IMODE(st.st_mode):o}, expected 600"
            assert st.st_uid == os.geteuid()
            kinds.add(name.rsplit(".", 1)[-1] if "." in name else name)
    assert {"logbuffer", "ring", "dat", "lock", "hashes", "snap", "catalog", "rec"} <= kinds, kinds
    names = {p.name for p in top.rglob("*")}
    assert {"cnc.dat", "ingress.ring", "sequencer.lock", "gateway-gw.lock", "priority-gw.ring", "book.hashes",
            "archive.catalog", "recorder-100.lock"} <= names, names
    assert not [n for n in names if n.endswith(".tmp")], "temporary files left behind"


# -- a symlink or another user's file in place of a file opened to write --------------------

def _sequenced_log(d: Path) -> None:
    seq = Sequencer(d, term_length=TERM, ingress_capacity=1 << 16)
    sub = Subscription(100, d, start="earliest")
    client = SequencerClient(d, origin_id=1)
    assert client.send(b"hello")
    _drive(lambda: seq.last_sequence == 1, seq.do_work, what="sequencing one command")
    client.close()
    sub.close()
    seq.close()


def _recording(d: Path) -> Publication:
    """A stopped recording 0 of stream 9; returns its (still open) publication."""
    pub = Publication(9, d, exclusive=True, term_length=TERM)
    rec = Recorder(d, stream_id=9, segment_length=SEGMENT)
    rec.discover()
    for i in range(50):
        while pub.offer(i.to_bytes(8, "little") * 4) < 0:
            rec.do_work()
    _drive(lambda: rec.position == pub.position, rec.do_work, what="recording")
    rec.close()
    return pub


def _extend_recording(d: Path) -> None:
    """Restart the recorder of stream 9: it extends recording 0 (writes catalog and segment)."""
    from lockstep.transport.logbuffer import LogBuffer
    [log] = stream_logs(d, 9)
    with LogBuffer.open(log) as buffer:
        session_id = buffer.session_id
    with Recorder(d, stream_id=9, segment_length=SEGMENT) as rec:
        rec.discover()
        pub = Publication(9, d, exclusive=True, term_length=TERM, session_id=session_id)
        assert pub.offer(b"more" * 8) > 0
        _drive(lambda: rec.position == pub.position, rec.do_work, what="recording more")
        pub.close(end_of_stream=False)


# kind -> (make the valid setup, the file, the writable open that must refuse it)
KINDS = {
    "log buffer (sequencer restart)": (
        _sequenced_log, lambda d: stream_logs(d, 100)[0],
        lambda d: Sequencer(d, term_length=TERM, ingress_capacity=1 << 16).close()),
    "log buffer (shared publication)": (
        lambda d: Publication(5, d, term_length=TERM).close(end_of_stream=False), lambda d: d / "5-shared.logbuffer",
        lambda d: Publication(5, d, term_length=TERM).close(end_of_stream=False)),
    "cnc.dat": (lambda d: Counters(d).close(), lambda d: d / "cnc.dat", lambda d: Counters(d).close()),
    "sequencer lock": (_sequenced_log, lambda d: d / "sequencer.lock",
                       lambda d: Sequencer(d, term_length=TERM, ingress_capacity=1 << 16).close()),
    "archive catalog": (_recording, lambda d: d / "archive" / "archive.catalog", _extend_recording),
    "archive segment": (_recording, lambda d: d / "archive" / "0-0.rec", _extend_recording),
    "recorder lock": (_recording, lambda d: d / "archive" / "recorder-9.lock", _extend_recording),
    "replica hashes": (lambda d: Replica(OrderBook(), d, name="r", send_outputs=False).close(),
                       lambda d: d / "r.hashes",
                       lambda d: Replica(OrderBook(), d, name="r", send_outputs=False).close()),
    "gateway lock": (lambda d: __import__("lockstep.cluster.gateway").cluster.gateway.Gateway("gw", d).close(),
                     lambda d: d / "gateway-gw.lock",
                     lambda d: __import__("lockstep.cluster.gateway").cluster.gateway.Gateway("gw", d).close()),
}


@pytest.mark.parametrize("kind", KINDS)
def test_symlink_in_place_of_a_file_opened_to_write_is_refused(lsdir, tmp_path, kind):
    make, file_of, reopen = KINDS[kind]
    make(lsdir)
    path = file_of(lsdir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    target = elsewhere / path.name
    os.rename(path, target)
    with open(target, "ab") as f:
        f.write(b"precious, not lockstep's" * 3)  # a torn record, an odd length: would be "repaired"
    before = target.read_bytes()
    path.symlink_to(target)
    with pytest.raises(LockstepError) as info:
        reopen(lsdir)
    assert "symlink" in str(info.value) or "symbolic link" in str(info.value), str(info.value)
    assert str(path.name) in str(info.value)
    assert target.read_bytes() == before, "the file behind the link was changed"
    assert os.path.islink(path)


@root_only
@pytest.mark.parametrize("kind", KINDS)
def test_file_of_another_user_opened_to_write_is_refused(lsdir, kind):
    make, file_of, reopen = KINDS[kind]
    make(lsdir)
    path = file_of(lsdir)
    before = path.read_bytes()
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(FileAccessError, match=f"owned by uid {OTHER_UID}") as info:
        reopen(lsdir)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_snapshot_written_over_a_symlink_replaces_the_link_not_its_target(lsdir, tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"precious")
    snap = Snapshot(64, 1, 0, b"state")
    link = lsdir / f"r-{64:020d}.snap"
    link.symlink_to(target)
    path = write_snapshot(lsdir, "r", snap)
    assert path == link and not os.path.islink(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert target.read_bytes() == b"precious"


def test_symlinked_archive_directory_is_refused(lsdir, tmp_path):
    real = tmp_path / "real-archive"
    real.mkdir(mode=0o700)
    (lsdir / "archive").symlink_to(real)
    with pytest.raises(FileAccessError, match="symlink"):
        Recorder(lsdir, stream_id=9)
    with pytest.raises(FileAccessError, match="symlink"):
        Archive.for_dir(lsdir).recordings()
    assert not any(real.iterdir())


# -- names cannot escape the directory --------------------------------------------------------

BAD_NAMES = ["../x", "../../etc/passwd", "a/b", "/abs", "..", ".", "", "x\0y"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_replica_gateway_and_snapshot_names_cannot_escape(lsdir, name):
    with pytest.raises(FileAccessError, match="not a plain file name"):
        Replica(OrderBook(), lsdir, name=name, send_outputs=False)
    with pytest.raises(FileAccessError, match="not a plain file name"):
        write_snapshot(lsdir, name, Snapshot(32, 1, 0, b"x"))
    with pytest.raises(FileAccessError, match="not a plain file name"):
        latest_snapshot(lsdir, name)
    from lockstep.cluster.gateway import Gateway, priority_path
    with pytest.raises(FileAccessError, match="not a plain file name"):
        Gateway(name, lsdir)
    with pytest.raises(FileAccessError, match="not a plain file name"):
        priority_path(lsdir, name)
    assert sorted(p.name for p in lsdir.parent.iterdir()) == ["lockstep"], "something was made outside"


def test_a_replica_never_loads_another_replicas_snapshot_whose_name_starts_with_its_own(lsdir):
    """`r` must not take `r-x`'s snapshot (nor `*` everyone's): names match exactly."""
    write_snapshot(lsdir, "r-x", Snapshot(6400, 100, 0, OrderBook().snapshot()))
    write_snapshot(lsdir, "r", Snapshot(640, 10, 0, OrderBook().snapshot()))
    assert latest_snapshot(lsdir, "r").sequence == 10
    assert latest_snapshot(lsdir, "r-x").sequence == 100
    assert latest_snapshot(lsdir, "*") is None and latest_snapshot(lsdir, "r?x") is None
    replica = Replica(OrderBook(), lsdir, name="r", send_outputs=False)
    assert replica.restored_from.sequence == 10
    replica.close()


@pytest.mark.parametrize("stream_id", ["../x", "../../etc/passwd", "1/2", 1.5, None, 1 << 31, -(1 << 31) - 1])
def test_stream_ids_are_int32_so_no_path_can_be_made_of_them(lsdir, stream_id):
    for make in (lambda: Publication(stream_id, lsdir), lambda: Publication(stream_id, lsdir, exclusive=True),
                 lambda: Subscription(stream_id, lsdir), lambda: Recorder(lsdir, stream_id=stream_id),
                 lambda: Sequencer(lsdir, stream_id=stream_id)):
        with pytest.raises(InvalidArgumentError, match="stream_id: expected an int32"):
            make()
    assert sorted(p.name for p in lsdir.parent.iterdir()) == ["lockstep"], "something was made outside"
    assert not list(lsdir.glob("*.logbuffer"))


def test_recording_ids_are_looked_up_never_made_into_paths(lsdir):
    pub = _recording(lsdir)
    archive = Archive.for_dir(lsdir)
    for bad in ("../../etc/passwd", "0/../0", -1, 7):
        with pytest.raises(LockstepError, match="no recording"):
            archive.reader(bad)
    assert archive.segment_files(0) and not archive.segment_files("../*")
    pub.close()


def _lockstep(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lockstep")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_replay_of_a_path_instead_of_a_recording_id_is_refused_at_the_command_line(lsdir):
    _recording(lsdir).close()
    machine = "lockstep.examples.orderbook:OrderBook"
    proc = _lockstep("replay", "../../etc/passwd", "--machine", machine, "--dir", str(lsdir))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "RECORDING" in proc.stderr and "is not a valid integer" in proc.stderr
    proc = _lockstep("replay", "--dir", str(lsdir), "--machine", machine, "--", "-1")
    assert proc.returncode == 1 and proc.stderr.startswith("lockstep: error: ") and "no recording -1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # A file that is not a snapshot, named as one: refused in one line, nothing written.
    proc = _lockstep("replay", "0", "--machine", machine, "--dir", str(lsdir), "--snapshot", "/etc/passwd")
    assert proc.returncode == 1 and proc.stderr.startswith("lockstep: error: /etc/passwd: magic"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _lockstep("recordings", "--json", "--dir", str(lsdir))
    assert proc.returncode == 0 and [json.loads(line)["recording_id"] for line in proc.stdout.splitlines()] == [0]
