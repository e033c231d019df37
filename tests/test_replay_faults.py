"""Off the happy path of replicas and replays (issue 13, items 6, 7, 9, 10, 13), each reproduced
with real processes and files: a snapshot temp file a killed replica left never crash-loops a
namesake; `--compare` with a file that is not a hashes file, or that checks nothing, fails;
`--snapshot`/`--compare` refuse devices and FIFOs at once; a command longer than the sequenced
log carries is refused by `send`, never dropped after it; a machine module that raises at
import is a one-line error."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import cluster_workers as cw
import pytest
from lockstep import InvalidArgumentError, Replica, Sequencer, SequencerClient
from lockstep.cluster.replica import FileFormatError, read_hashes
from lockstep.examples.orderbook import OrderBook
from test_archive import MACHINE, _drive, _record_orderbook, lockstep_cli


# -- 6: snapshot temp files ----------------------------------------------------------------

def test_a_leftover_snapshot_temp_file_of_the_same_pid_does_not_crash_loop_the_replica(lsdir):
    """A replica SIGKILLed while writing its snapshot leaves `.book-<pos>.snap.<pid>.tmp`; a
    restarted one with the same pid (containers) once failed there with FileExistsError on
    every restart. Now stale temp files are swept on start and temp names are unique."""
    seq = Sequencer(lsdir)
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    send = cw.sender(client, list(cw.commands(0, 100, seed=5)))
    collector = cw.LogCollector(lsdir)
    _drive(lambda: len(collector) == 100, send, seq.do_work, collector.poll, what="sequencing")
    positions = collector.positions
    name = "book"
    stale = lsdir / f".{name}-{positions[49]:020d}.snap.{os.getpid()}.tmp"  # what the old naming made
    stale.write_bytes(b"half a snapshot")
    other = lsdir / f".{name}x-{positions[49]:020d}.snap.{os.getpid()}.tmp"  # another replica's: left alone
    other.write_bytes(b"not ours")
    replica = Replica(OrderBook(), lsdir, name=name, snapshot_every=50, send_outputs=False)
    assert not stale.exists() and other.exists()
    # one planted after the start (a namesake writing right now) does not block ours either
    late = lsdir / f".{name}-{positions[99]:020d}.snap.{os.getpid()}.tmp"
    late.write_bytes(b"in the way")
    _drive(lambda: replica.last_sequence == 100, replica.do_work, what="applying")
    snaps = sorted(p.name for p in lsdir.glob(f"{name}-*.snap"))
    assert snaps == [f"{name}-{positions[49]:020d}.snap", f"{name}-{positions[99]:020d}.snap"]
    replica.close()
    restarted = Replica(OrderBook(), lsdir, name=name, send_outputs=False)
    assert restarted.restored_from.position == positions[99] and not late.exists()
    restarted.close()
    collector.close()
    client.close()
    seq.close()


# -- 7 and 9: what --compare and --snapshot read -----------------------------------------------

def test_compare_with_a_file_that_is_not_a_hashes_file_is_an_error(lsdir, tmp_path):
    _record_orderbook(lsdir, 300, hashes="live")
    random_bytes = tmp_path / "random.hashes"
    random_bytes.write_bytes(os.urandom(32 * 40))
    for path in ("/etc/passwd", str(random_bytes)):
        proc = lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", path)
        assert proc.returncode == 1, proc.stdout
        assert "not a replica's hashes file" in proc.stderr and path in proc.stderr
        assert "Traceback" not in proc.stderr and "all equal" not in proc.stdout
    with pytest.raises(FileFormatError, match="record 0"):
        read_hashes("/etc/passwd")
    assert len(read_hashes(lsdir / "live.hashes")) >= 3  # the real one still reads


def test_comparing_nothing_is_a_failure_not_a_pass(lsdir, tmp_path):
    arch = _record_orderbook(lsdir, 300, hashes="live")
    first = struct.unpack_from("<q", (lsdir / "live.hashes").read_bytes())[0]
    with arch.reader(0) as reader:
        before = [h["position"] for _, h in reader.messages() if h["position"] < first][-1]
    proc = lockstep_cli("replay", "0", "--machine", MACHINE, "--until", str(before), "--compare",
                        str(lsdir / "live.hashes"))
    assert proc.returncode == 1
    assert "compared 0 live hashes" in proc.stderr and "all equal" not in proc.stdout
    empty = tmp_path / "empty.hashes"
    empty.write_bytes(b"")
    assert lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", str(empty)).returncode == 1
    ok = lockstep_cli("replay", "0", "--machine", MACHINE, "--compare", str(lsdir / "live.hashes"))
    assert ok.returncode == 0 and "all equal" in ok.stdout


@pytest.mark.parametrize("option", ["--snapshot", "--compare"])
def test_snapshot_and_compare_refuse_devices_and_fifos_at_once(lsdir, tmp_path, option):
    """/dev/zero once took 2.6 GB then MemoryError; a FIFO hung for ever."""
    _record_orderbook(lsdir, 50)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        proc = lockstep_cli("replay", "0", "--machine", MACHINE, option, path, timeout=60)  # a hang guard only
        assert proc.returncode == 1
        assert f"{path}: not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_snapshot_whose_length_field_disagrees_with_its_size_is_refused_before_reading(lsdir, tmp_path):
    arch = _record_orderbook(lsdir, 100)
    with arch.reader(0) as reader:
        until = [h["position"] for _, h in reader.messages()][49]
    import json
    made = json.loads(lockstep_cli("replay", "0", "--machine", MACHINE, "--until", str(until), "--write-snapshot",
                                   "--json").stdout)["snapshot_written"]
    raw = bytearray(open(made, "rb").read())
    struct.pack_into("<q", raw, 32, 1 << 40)  # the data length field: a terabyte
    bad = tmp_path / "bad.snap"
    bad.write_bytes(bytes(raw))
    proc = lockstep_cli("replay", "0", "--machine", MACHINE, "--snapshot", str(bad))
    assert proc.returncode == 1 and f"{bad}: data length: expected {1 << 40}" in proc.stderr


# -- 10: commands too long for the log --------------------------------------------------------

def test_send_refuses_a_command_longer_than_the_sequenced_log_carries(lsdir, procs, mp):
    """Term 64 KiB: a 10,000-byte command was accepted by send() and then dropped by the
    sequencer as rejected. Now send refuses it, naming the log and the limit, and the
    longest command that fits goes through intact."""
    early = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE + 1)  # before the sequencer made its log
    h = cw.Harness(mp, procs)
    stop = h.stop_flag()
    h.start(cw.run_sequencer, "sequencer", lsdir, stop, h.progress, 0, term_length=1 << 16)
    h.wait_reports(["sequencer"], "started")
    log = cw.LogCollector(lsdir)
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    longest = (1 << 16) // 8 - 32  # the log's max message length less the sequenced header
    for sender in (client, early):
        with pytest.raises(InvalidArgumentError, match=r"100-.*\.logbuffer: command length: expected at most "
                                                       rf"{longest} bytes .* found 10000"):
            sender.send(b"x" * 10_000)
        with pytest.raises(InvalidArgumentError, match="found 10000"):
            sender.send_as(sender.origin_id, 1, bytearray(10_000))  # the replicas' path
        assert sender.max_command_length == longest
    fits = bytes(range(256)) * (longest // 256) + b"!" * (longest % 256)
    for sender in (client, early):
        h.wait(lambda s=sender: s.send(fits), "the ingress taking the command", poll=log.poll)
    h.wait(lambda: len(log) == 2, "both commands sequenced", poll=log.poll)
    assert log.commands == [fits, fits]
    stop.set()
    [result] = h.wait_reports(["sequencer"])
    assert result["rejected"] == 0
    log.close()
    client.close()
    early.close()


# -- 13: a machine module that raises at import ---------------------------------------------------

def test_a_machine_module_that_raises_at_import_is_a_one_line_error(lsdir, tmp_path):
    _record_orderbook(lsdir, 10)
    (tmp_path / "badimport.py").write_text("raise RuntimeError('configuration missing')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    for module, text in (("badimport", "RuntimeError: configuration missing"), ("exits", "SystemExit: 3")):
        proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", f"{module}:M"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"lockstep: error: machine '{module}:M': importing module '{module}' raised {text}"]
