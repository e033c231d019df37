"""The command line as a user meets it: --help everywhere, benchmarks that run and report
every key in --json, and one-line errors (no traceback) on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def lockstep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _commands(group: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    from lockstep.cli import main

    node = main
    for name in group:
        node = node.commands[name]
    found = []
    for name, command in node.commands.items():
        found.append((*group, name))
        if hasattr(command, "commands"):
            found.extend(_commands((*group, name)))
    return found


@pytest.mark.parametrize("command", [()] + _commands(), ids=lambda c: " ".join(c) or "lockstep")
def test_every_command_has_help(command):
    proc = lockstep(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) > 2


def test_bench_throughput_json_has_every_key(lsdir):
    proc = lockstep("bench", "throughput", "--messages", "20000", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("msgs_per_sec", "mb_per_sec", "ns_per_msg", "noop_call_ns", "c_floor_msgs_per_sec"):
        assert result[key] > 0, key
    assert result["messages"] == 20000


def test_bench_throughput_batch(lsdir):
    proc = lockstep("bench", "throughput", "--messages", "50000", "--batch", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["batch"] is True


def test_bench_ping_json_has_every_key(lsdir):
    proc = lockstep("bench", "ping", "--messages", "2000", "--warmup", "200", "--idle", "backoff", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "c_floor_p50_ns"):
        assert result[key] > 0, key
    assert result["p50_ns"] <= result["p90_ns"] <= result["p99_ns"] <= result["p999_ns"] <= result["max_ns"]


def test_bench_ping_plot_writes_a_picture(lsdir, tmp_path):
    pytest.importorskip("matplotlib")
    picture = tmp_path / "ping.png"
    proc = lockstep("bench", "ping", "--messages", "1000", "--warmup", "100", "--idle", "block",
                    "--plot", str(picture))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {picture}" in proc.stdout and "(block)" in proc.stdout
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


def test_bench_throughput_for_seconds(lsdir):
    proc = lockstep("bench", "throughput", "--seconds", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["seconds"] >= 0.2 and result["messages"] > 0 and result["msgs_per_sec"] > 0


@pytest.mark.parametrize("batch", ["1", "64"])
def test_bench_sequencer_json_has_every_key(lsdir, batch):
    """Also through send_batch (--batch): every command counted once (the run ends only then)."""
    proc = lockstep("bench", "sequencer", "--commands", "20001", "--batch", batch, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("commands_per_sec", "apply_per_sec", "c_floor_commands_per_sec", "ratio_to_c_floor"):
        assert result[key] > 0, key
    assert result["batch"] == int(batch) and result["commands"] == 20001


def test_bench_sequencer_batch_goes_without_rate():
    proc = lockstep("bench", "sequencer", "--batch", "8", "--rate", "1000", timeout=60)
    assert proc.returncode == 2 and "--batch goes without --rate" in proc.stderr and "Traceback" not in proc.stderr


def test_dump_of_garbage_is_one_line_error(tmp_path):
    bad = tmp_path / "x.logbuffer"
    bad.write_bytes(b"\x07" * 100_000)
    proc = lockstep("dump", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("lockstep: error: ") and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_dump_of_missing_file_is_one_line_error(tmp_path):
    proc = lockstep("dump", str(tmp_path / "nope.logbuffer"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_stat_once_json_shows_streams_sequencer_and_replicas(lsdir):
    import struct

    import lockstep

    class Count(lockstep.StateMachine):
        def __init__(self) -> None:
            self.n = 0

        def on_message(self, ctx, command: bytes) -> None:
            self.n += 1

        def snapshot(self) -> bytes:
            return struct.pack("<q", self.n)

        def restore(self, data: bytes) -> None:
            (self.n,) = struct.unpack("<q", data)

    with lockstep.Sequencer(term_length=1 << 20) as seq, \
            lockstep.Replica(Count(), name="r1", hash_every=10) as replica, lockstep.SequencerClient() as client:
        for _ in range(50):
            assert client.send(b"command")
        while replica.last_sequence < 50:
            seq.do_work()
            replica.do_work()
        seq._housekeeping(0)  # publish the sequencer's counters now rather than within 100 ms
        proc = lockstep_cli_stat()
    assert proc.returncode == 0, proc.stderr
    reading = json.loads(proc.stdout)
    (stream,) = reading["streams"]
    assert stream["stream_id"] == 100 and stream["position"] > 0
    assert [s["lag"] for s in stream["subscribers"]] == [0]
    assert reading["sequencer"]["last sequence"] == 50
    assert reading["replicas"]["r1"]["sequence"] == 50


def lockstep_cli_stat() -> subprocess.CompletedProcess:
    return lockstep("stat", "--once", "--json")


def test_stat_of_an_empty_directory_is_a_clear_error(lsdir):
    proc = lockstep("stat", "--once")
    assert proc.returncode == 1 and "no lockstep counters here" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["bench", "ping", "--messages", "-5"], ["bench", "ping", "--warmup", "-1"], ["bench", "ping", "--rate", "0"],
    ["bench", "throughput", "--messages", "0"], ["bench", "throughput", "--size", "0"],
    ["bench", "sequencer", "--size", "4"], ["bench", "sequencer", "--clients", "0"],
    ["bench", "sequencer", "--batch", "0"],
    ["bench", "halt", "--rate", "-1"], ["bench", "halt", "--halts", "0"], ["dump", "x", "--payload-bytes", "-1"],
])
def test_out_of_range_arguments_are_usage_errors_not_tracebacks(argv):
    proc = lockstep(*argv, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value" in proc.stderr and "Traceback" not in proc.stderr
