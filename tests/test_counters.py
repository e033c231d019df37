"""Counters in the directory's cnc.dat: allocation, records, values, freeing and reuse,
and sharing across real processes."""

from __future__ import annotations

import os
import struct
import time

import pytest

import workers
from lockstep import BackoffIdleStrategy, ClosedError, Counter, Counters, InvalidArgumentError, LockstepError


@pytest.fixture
def counters(lsdir):
    c = Counters(lsdir, max_counters=64)
    yield c
    c.close()


def test_allocate_record(counters):
    before = int(time.time() * 1000)
    c = counters.allocate(1001, "sub pos stream=7", key=b"\x07\x00\x00\x00", registration_id=42,
                          reference_id=9)
    assert isinstance(c, Counter)
    info = counters.info(c.id)
    assert info.state == "allocated"
    assert info.type_id == 1001
    assert info.label == "sub pos stream=7"
    assert info.key[:4] == b"\x07\x00\x00\x00"
    assert info.key[4:] == bytes(108)
    assert len(info.key) == 112
    assert info.value == 0
    assert info.registration_id == 42
    assert info.owner_id == os.getpid()
    assert info.reference_id == 9
    assert counters.pid == os.getpid()  # this process created cnc.dat
    assert before - 60_000 <= counters.start_timestamp_ms <= int(time.time() * 1000)


def test_ids_are_distinct_and_max_counters(counters):
    ids = [counters.allocate(1001, f"c{i}").id for i in range(64)]
    assert sorted(ids) == list(range(64))
    assert counters.max_counters == 64
    with pytest.raises(LockstepError, match="in use"):
        counters.allocate(1001, "one too many")


def test_explicit_owner(counters):
    c = counters.allocate(1002, "limit", owner_id=12345)
    assert counters.info(c.id).owner_id == 12345


def test_value_operations(counters):
    c = counters.allocate(1001, "v")
    c.set(10)
    assert c.get() == 10
    assert c.add(5) == 10  # returns the value before
    assert c.add() == 15
    assert c.get() == 16
    c.propose_max(12)
    assert c.get() == 16
    c.propose_max(100)
    assert c.get() == 100
    c.set(-(2**63))
    assert counters.get(c.id) == -(2**63)
    counters.set(c.id, 2**63 - 1)
    assert c.get() == 2**63 - 1
    assert counters.info(c.id).value == 2**63 - 1


def test_values_are_separate(counters):
    a, b = counters.allocate(1001, "a"), counters.allocate(1001, "b")
    a.set(1)
    b.set(2)
    assert (a.get(), b.get()) == (1, 2)


def test_label_and_key_limits(counters):
    counters.allocate(1001, "x" * 380, key=bytes(112))
    with pytest.raises(InvalidArgumentError, match="label"):
        counters.allocate(1001, "x" * 381)
    with pytest.raises(InvalidArgumentError, match="key"):
        counters.allocate(1001, "x", key=bytes(113))
    assert [i.label for i in counters] == ["x" * 380]


def test_non_ascii_label_is_replaced(counters):
    c = counters.allocate(1001, "pos é")
    assert counters.info(c.id).label == "pos ?"


def test_bad_ids(counters):
    for bad in (-1, 64, 10**6):
        with pytest.raises(InvalidArgumentError, match="counter id"):
            counters.get(bad)
        with pytest.raises(InvalidArgumentError):
            counters.set(bad, 1)
        with pytest.raises(InvalidArgumentError):
            counters.info(bad)
        with pytest.raises(InvalidArgumentError):
            counters.free(bad)


def test_iteration_lists_allocated(counters):
    assert list(counters) == []
    a = counters.allocate(1001, "a")
    b = counters.allocate(1002, "b")
    c = counters.allocate(1003, "c")
    b.free()
    listed = list(counters)
    assert [(i.id, i.label, i.type_id) for i in listed] == [(a.id, "a", 1001), (c.id, "c", 1003)]
    assert counters.info(b.id).state == "reclaimed"


def test_free_twice_is_an_error(counters):
    c = counters.allocate(1001, "a")
    c.free()
    with pytest.raises(LockstepError, match="not allocated"):
        c.free()
    with pytest.raises(LockstepError, match="not allocated"):
        counters.free(c.id + 1)  # never allocated


def test_freed_counter_not_reused_before_deadline(counters):
    a = counters.allocate(1001, "a")
    a.free(reuse_delay_ms=60_000)
    b = counters.allocate(1001, "b")
    assert b.id != a.id
    assert counters.info(a.id).state == "reclaimed"


def test_freed_counter_reused_after_deadline(counters):
    a = counters.allocate(1001, "a", key=b"old key")
    a.set(77)
    counters.allocate(1001, "keep")
    a.free(reuse_delay_ms=0)
    b = counters.allocate(1002, "b", key=b"new")
    assert b.id == a.id  # the lowest free record is reused
    info = counters.info(b.id)
    assert (info.state, info.type_id, info.label, info.value) == ("allocated", 1002, "b", 0)
    assert info.key[:8] == b"new\x00\x00\x00\x00\x00"  # no trace of the old key


def test_reopen_sees_counters(lsdir, counters):
    c = counters.allocate(1001, "persist")
    c.set(99)
    with Counters(lsdir, create=False) as again:
        assert again.max_counters == 64  # from the file, not the default
        assert [(i.label, i.value) for i in again] == [("persist", 99)]
    with Counters(lsdir, max_counters=8) as again:  # existing file wins over max_counters
        assert again.max_counters == 64


def test_open_without_create_when_missing(lsdir):
    with pytest.raises(LockstepError):
        Counters(lsdir, create=False)
    assert not (lsdir / "cnc.dat").exists()


def test_close_and_use_after_close(lsdir):
    counters = Counters(lsdir, max_counters=8)
    c = counters.allocate(1001, "a")
    c.set(5)
    counters.close()
    with pytest.raises(ClosedError):
        counters.allocate(1001, "b")
    with pytest.raises(ClosedError):
        counters.get(c.id)
    # A Counter keeps its mapping alive: it still reads and writes the shared value.
    assert c.get() == 5
    c.set(6)
    with Counters(lsdir) as again:
        assert again.get(c.id) == 6
    counters.close()  # idempotent


# -- multiple processes --------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_allocation_never_hands_out_an_id_twice(tmp_path, monkeypatch, procs, mp):
    # A fresh directory without cnc.dat: the processes also race to create it.
    d = tmp_path / "race"
    monkeypatch.setenv("LOCKSTEP_DIR", str(d))
    nprocs, each = 4, 250  # 1000 of the default 1024 records
    barrier, results = mp.Barrier(nprocs + 1), mp.Queue()
    for _ in range(nprocs):
        procs.start(workers.counters_allocate, str(d), each, barrier, results)
    barrier.wait(60)  # all open cnc.dat at once
    barrier.wait(60)  # all allocate at once
    reported = [results.get(timeout=60) for _ in range(nprocs)]
    procs.join_all()

    all_ids = [i for _, ids in reported for i in ids]
    assert len(all_ids) == nprocs * each
    assert len(set(all_ids)) == len(all_ids), "a counter id was handed out twice"
    with Counters(d) as counters:
        listed = {info.id: info for info in counters}
        assert set(listed) == set(all_ids)
        for pid, ids in reported:
            for i, cid in enumerate(ids):
                info = listed[cid]
                assert info.owner_id == pid
                assert info.label == f"pid {pid} #{i}"
                assert info.key[:12] == struct.pack("<qi", pid, i)
                assert info.value == pid * 1000 + i  # written in that process, read here


@pytest.mark.slow
def test_values_cross_processes(lsdir, procs, mp):
    with Counters(lsdir) as counters:
        c = counters.allocate(1001, "shared")
        seen, done = mp.Queue(), mp.Event()
        procs.start(workers.counters_set_then_read, str(lsdir), c.id, 41, seen, done)
        deadline, idle = time.monotonic() + 60, BackoffIdleStrategy()
        while c.get() != 41:  # the child's write becomes visible here
            assert time.monotonic() < deadline, "value written by the child never seen"
            idle.idle(0)
        c.set(42)  # and ours there
        assert seen.get(timeout=60) == 42
        done.set()
        procs.join_all()


def test_counters_of_dead_processes_are_reclaimed_when_full(lsdir):
    """A directory whose counters are all held by processes that died (killed, or exited
    without closing) still takes new counters: the dead owners' records are reclaimed."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    with Counters(lsdir) as counters:
        mine = counters.allocate(1001, "mine")
        held = [counters.allocate(1001, f"orphan {i}", owner_id=dead_pid)
                for i in range(counters.max_counters - len(list(counters)))]
        assert len(list(counters)) == counters.max_counters
        fresh = counters.allocate(1001, "fresh")  # would fail without reclaiming
        ids = {info.id for info in counters}
        assert fresh.id in ids and mine.id in ids
        assert not any(info.owner_id == dead_pid for info in counters)
        assert held  # the directory really was full of orphans
