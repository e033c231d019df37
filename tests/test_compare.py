"""bench/compare.py in a short mode: every key of its JSON is there and every figure is
positive. No timing is asserted (performance is reported as ratios, never tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[1] / "bench" / "compare.py"
PING_KEYS = {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns", "messages"}
TPUT_KEYS = {"msgs_per_sec", "mb_per_sec", "ns_per_msg", "messages", "seconds"}
ROW_KEYS = {"key", "label", "mode", "family", "api", "status", "reason", "version", "ping", "throughput",
            "vs_lockstep"}


def test_compare_short_json():
    proc = subprocess.run([sys.executable, str(COMPARE), "--messages", "2000", "--json",
                           "--only", "lockstep,baseline,pipe"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"date", "machine", "config", "noop_call_ns", "results"} <= report.keys()
    assert {"nproc", "cpu_model", "python", "system"} <= report["machine"].keys()
    assert report["machine"]["nproc"] > 0
    assert report["config"]["size"] == 32 and report["config"]["messages"] == 2000
    assert report["noop_call_ns"] > 0

    rows = {r["key"]: r for r in report["results"]}
    assert {"lockstep-spin", "lockstep-backoff", "baseline-ring", "pipe",
            "lockstep-native", "lockstep-batch", "c-floor", "lockstep-poll"} <= rows.keys()
    assert not {"queue", "pyzmq-ipc", "faster-fifo", "pyaeron"} & rows.keys()  # --only
    for key, row in rows.items():
        assert ROW_KEYS <= row.keys(), key
        assert row["status"] == "ok", (key, row["reason"])
        assert row["throughput"] is not None, key
        assert TPUT_KEYS <= row["throughput"].keys() or key == "c-floor", key
        assert all(row["throughput"][k] > 0 for k in ("msgs_per_sec", "mb_per_sec", "ns_per_msg")), key
        if key in ("lockstep-batch",):
            assert row["ping"] is None
        elif key == "c-floor":
            assert row["ping"]["p50_ns"] > 0 and row["ping"]["p99_ns"] > 0
        else:
            assert PING_KEYS <= row["ping"].keys(), key
            assert all(row["ping"][k] > 0 for k in PING_KEYS), key
            assert row["ping"]["messages"] == 2000
            assert row["vs_lockstep"]["p50"] > 0 and row["vs_lockstep"]["p99"] > 0, key
        assert row["vs_lockstep"]["throughput"] > 0, key
    assert rows["lockstep-spin"]["vs_lockstep"] == {"p50": 1.0, "p99": 1.0, "throughput": 1.0}
    # Every row says which API it measured; poll(handler) rows are compared with lockstep's poll(handler) row.
    assert rows["lockstep-spin"]["api"] == "send/recv" and rows["lockstep-poll"]["api"] == "poll(handler)"
    assert rows["lockstep-poll"]["vs_lockstep"] == {"p50": 1.0, "p99": 1.0, "throughput": 1.0}


def test_compare_skips_pyaeron_without_interpreter():
    proc = subprocess.run([sys.executable, str(COMPARE), "--messages", "100", "--json", "--only", "pyaeron"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["results"]
    assert row["key"] == "pyaeron" and row["status"] == "skipped"
    assert "--pyaeron-python" in row["reason"]


POLL_AB = COMPARE.parent / "poll_ab.py"


@pytest.mark.parametrize("mode", [[], ["--throughput"]], ids=["ping", "throughput"])
def test_poll_ab_short_run_compares_sides_block_by_block(mode):
    """bench/poll_ab.py in a short mode: two lockstep sides, every block measured, one line per
    side with its median and its per-block ratio to the first (no timing asserted)."""
    sides = [f"a={sys.executable}:lockstep", f"b={sys.executable}:lockstep"]
    proc = subprocess.run([sys.executable, str(POLL_AB), "--blocks", "2", "--block", "2000", *mode, *sides],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("2 blocks of 2000")
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]
    assert "ratio to a: median 1.000" in lines[1] and "/2" in lines[2]
