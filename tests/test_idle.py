"""Idle strategies: the backoff state machine (spin -> yield -> park doubling to a maximum,
reset on work) and lookup by name. Yields and sleeps are recorded, not timed."""

from __future__ import annotations

import os
import time

import pytest

import doorbell_workers

from lockstep import (
    BackoffIdleStrategy,
    BusySpinIdleStrategy,
    NoOpIdleStrategy,
    SleepingIdleStrategy,
    YieldingIdleStrategy,
    idle_strategy,
)


@pytest.fixture
def calls(monkeypatch):
    """Record what each idle() call did: "yield", ("sleep", seconds), or nothing."""
    log: list = []
    monkeypatch.setattr(os, "sched_yield", lambda: log.append("yield"))
    monkeypatch.setattr(time, "sleep", lambda s: log.append(("sleep", s)))
    return log


def step(strategy, calls, work=0):
    before = len(calls)
    strategy.idle(work)
    done = calls[before:]
    assert len(done) <= 1
    return done[0] if done else "spin"


def test_backoff_sequence(calls):
    b = BackoffIdleStrategy(max_spins=10, max_yields=20, min_park_ns=1_000, max_park_ns=1_000_000)
    seq = [step(b, calls) for _ in range(10 + 20 + 14)]
    assert seq[:10] == ["spin"] * 10
    assert seq[10:30] == ["yield"] * 20
    parks = [s for _, s in seq[30:]]
    expected_ns = [min(1_000 * 2**i, 1_000_000) for i in range(14)]  # 1 us doubling to 1 ms
    assert parks == pytest.approx([ns / 1e9 for ns in expected_ns])
    assert parks[-4:] == pytest.approx([1e-3] * 4)  # stays at the maximum


def test_backoff_defaults_follow_agrona():
    b = BackoffIdleStrategy()
    assert (b.max_spins, b.max_yields, b.min_park_ns, b.max_park_ns) == (10, 20, 1_000, 1_000_000)


def test_backoff_resets_on_work(calls):
    b = BackoffIdleStrategy(max_spins=2, max_yields=2, min_park_ns=100, max_park_ns=800)
    assert [step(b, calls) for _ in range(7)] == [
        "spin", "spin", "yield", "yield", ("sleep", 100e-9), ("sleep", 200e-9), ("sleep", 400e-9)]
    assert step(b, calls, work=1) == "spin"  # work done: no idling at all, and back to spinning
    assert [step(b, calls) for _ in range(5)] == ["spin", "spin", "yield", "yield", ("sleep", 100e-9)]


def test_backoff_explicit_reset(calls):
    b = BackoffIdleStrategy(max_spins=1, max_yields=1, min_park_ns=10, max_park_ns=10)
    assert [step(b, calls) for _ in range(3)] == ["spin", "yield", ("sleep", 10e-9)]
    b.reset()
    assert [step(b, calls) for _ in range(3)] == ["spin", "yield", ("sleep", 10e-9)]


def test_backoff_no_spins_or_yields(calls):
    b = BackoffIdleStrategy(max_spins=0, max_yields=0, min_park_ns=5, max_park_ns=20)
    assert [step(b, calls) for _ in range(4)] == [("sleep", 5e-9), ("sleep", 10e-9), ("sleep", 20e-9), ("sleep", 20e-9)]


@pytest.mark.parametrize("kwargs", [dict(min_park_ns=0), dict(min_park_ns=-1),
                                    dict(min_park_ns=2_000, max_park_ns=1_000)])
def test_backoff_rejects_bad_park_times(kwargs):
    with pytest.raises(ValueError):
        BackoffIdleStrategy(**kwargs)


def test_simple_strategies(calls):
    assert step(NoOpIdleStrategy(), calls) == "spin"
    assert step(BusySpinIdleStrategy(), calls) == "spin"
    y = YieldingIdleStrategy()
    assert step(y, calls) == "yield"
    assert step(y, calls, work=3) == "spin"
    s = SleepingIdleStrategy(sleep_ns=2_000_000)
    assert step(s, calls) == ("sleep", pytest.approx(0.002))
    assert step(s, calls, work=1) == "spin"
    assert step(SleepingIdleStrategy(), calls) == ("sleep", pytest.approx(0.001))
    for strategy in (NoOpIdleStrategy(), y, s):
        strategy.reset()  # part of the protocol; no effect to observe


@pytest.mark.parametrize("name,cls", [
    ("spin", BusySpinIdleStrategy), ("noop", NoOpIdleStrategy), ("yield", YieldingIdleStrategy),
    ("sleep", SleepingIdleStrategy), ("backoff", BackoffIdleStrategy)])
def test_idle_strategy_by_name(name, cls):
    strategy = idle_strategy(name)
    assert type(strategy) is cls
    assert idle_strategy(name) is not strategy  # a new one each time (they hold state)


@pytest.mark.parametrize("name", ["unknown", "", "Backoff", "busy"])
def test_unknown_idle_strategy_name(name):
    with pytest.raises(ValueError, match="backoff"):
        idle_strategy(name)


def test_a_stalled_blocking_idle_sleeps_on_its_other_doorbells_not_a_timer(lsdir, procs, mp, monkeypatch):
    """An agent woken with a record there that it cannot take (back-pressured downstream)
    parks asleep on its other doorbells (a gateway's side channel): a commit there wakes it,
    whatever its park time; it never calls time.sleep, and the record it cannot take does
    not keep it spinning."""
    from lockstep import BlockingIdleStrategy, ManyToOneRing

    def no_timer(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s on a timer")

    with ManyToOneRing(lsdir / "stuck.ring", 1 << 12) as stuck, ManyToOneRing(lsdir / "side.ring", 1 << 16) as side:
        assert stuck.write(3, b"cannot take it")
        idle = BlockingIdleStrategy(stuck, side, max_spins=0, max_yields=0, timeout_ns=10**12,
                                    min_park_ns=10**12, max_park_ns=10**12)  # a 1000 s park: only a wake ends it
        idle.idle(0)  # the record is there: the wait returns at once, nothing taken
        assert (idle.sleeps, idle.parks) == (1, 0)
        done = mp.Event()
        procs.start(doorbell_workers.ring_writer_until, str(lsdir / "side.ring"), done)
        monkeypatch.setattr(time, "sleep", no_timer)
        try:
            idle.idle(0)  # stalled: asleep on the side ring until its writer commits
        finally:
            monkeypatch.undo()
            done.set()
        assert idle.parks == 1 and side.size() > 0  # (woken by the side ring, not by the stuck record)
        procs.join_all()


def _slice_ns(tid: int) -> int | None:
    """The scheduler's time slice of thread `tid` (Linux: /proc/self/task/TID/sched), or None."""
    try:
        with open(f"/proc/self/task/{tid}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1])
    except OSError:
        pass
    return None


def test_a_thread_sleeping_on_doorbells_asks_for_a_short_slice(lsdir):
    """The thread that sleeps on doorbells (the one a writer's wake-up must get running soon
    on a busy machine) has asked the scheduler for a short time slice. Where the kernel has no per-thread slice (before Linux 6.12) there is nothing to see."""
    import threading

    from lockstep import BlockingIdleStrategy, ManyToOneRing
    from lockstep.transport.idle import WAKE_SLICE_NS, short_slice

    if _slice_ns(threading.get_native_id()) is None:
        pytest.skip("no per-thread time slice in /proc on this kernel")
    seen: dict[str, int | None] = {}
    with ManyToOneRing(lsdir / "sliced.ring", 1 << 12) as ring:
        def agent() -> None:
            short_slice(0)  # the default slice (a thread inherits its creator's: this one may have waited)
            seen["before"] = _slice_ns(threading.get_native_id())
            BlockingIdleStrategy(ring, max_spins=0, max_yields=0).wait(1_000)
            seen["after"] = _slice_ns(threading.get_native_id())

        thread = threading.Thread(target=agent)
        thread.start()
        thread.join()
    assert seen["before"] != WAKE_SLICE_NS and seen["after"] == WAKE_SLICE_NS
