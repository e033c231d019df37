"""Fixtures for the micro benchmarks, and a summary that puts every result next to the
floor: the cost of one empty Python -> C call through cffi, measured in the same run."""

from __future__ import annotations

import pytest

from lockstep.transport.mapped import resolve_dir

NOOP = "test_noop_cffi_call"
OFFER_RECEIVE = "test_offer_receive"  # the reference of issue 15's targets: every path <= 3x it


@pytest.fixture
def lsdir(tmp_path, monkeypatch):
    """A fresh lockstep directory per benchmark (in tmp, not /dev/shm: same page cache)."""
    monkeypatch.setenv("LOCKSTEP_DIR", str(tmp_path / "lockstep"))
    return resolve_dir()


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    results = [b for b in getattr(session, "benchmarks", []) if b]
    if not results:
        return
    floor = next((b.stats.median for b in results if b.name == NOOP), None)
    reference = next((b.stats.median for b in results if b.name == OFFER_RECEIVE), None)
    tr = terminalreporter
    tr.section("lockstep: per message, median, vs the empty cffi call and vs offer+receive")
    tr.write_line(f"{'benchmark':<48} {'ns/msg':>9} {'x noop':>8} {'x o+r':>7}")
    for b in sorted(results, key=lambda b: b.name):
        per_call = b.extra_info.get("messages_per_call", 1)
        ns = b.stats.median / per_call * 1e9
        ratio = f"{b.stats.median / per_call / floor:8.1f}" if floor else "       -"
        to_reference = f"{b.stats.median / per_call / reference:7.2f}" if reference else "      -"
        tr.write_line(f"{b.name:<48} {ns:9.1f} {ratio} {to_reference}")
