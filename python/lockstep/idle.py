"""Idle strategies (Agrona's): what an agent loop does when a duty cycle found no work.
Call `idle(work_count)` once per cycle; work > 0 resets backoff to spinning."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Protocol

__all__ = [
    "IdleStrategy", "BusySpinIdleStrategy", "NoOpIdleStrategy", "YieldingIdleStrategy",
    "SleepingIdleStrategy", "BackoffIdleStrategy", "idle_strategy", "run_agent",
]


class IdleStrategy(Protocol):
    def idle(self, work_count: int = 0) -> None: ...
    def reset(self) -> None: ...


class NoOpIdleStrategy:
    """Return at once: the caller owns the loop's pacing."""

    def idle(self, work_count: int = 0) -> None:
        pass

    def reset(self) -> None:
        pass


class BusySpinIdleStrategy(NoOpIdleStrategy):
    """Spin (lowest latency; burns a core). Python has no pause instruction, so it is a no-op."""


class YieldingIdleStrategy:
    """Give the core to another runnable thread or process when idle."""

    def idle(self, work_count: int = 0) -> None:
        if work_count <= 0:
            os.sched_yield()

    def reset(self) -> None:
        pass


class SleepingIdleStrategy:
    """Sleep a fixed time when idle (default 1 ms)."""

    def __init__(self, sleep_ns: int = 1_000_000) -> None:
        self.sleep_s = sleep_ns / 1e9

    def idle(self, work_count: int = 0) -> None:
        if work_count <= 0:
            time.sleep(self.sleep_s)

    def reset(self) -> None:
        pass


class BackoffIdleStrategy:
    """Spin, then yield, then park with a sleep doubling from min_park_ns to max_park_ns."""

    def __init__(self, max_spins: int = 10, max_yields: int = 20,
                 min_park_ns: int = 1_000, max_park_ns: int = 1_000_000) -> None:
        if not 0 < min_park_ns <= max_park_ns:
            raise ValueError("expected 0 < min_park_ns <= max_park_ns")
        self.max_spins = max_spins
        self.max_yields = max_yields
        self.min_park_ns = min_park_ns
        self.max_park_ns = max_park_ns
        self.reset()

    def reset(self) -> None:
        self.spins = 0
        self.yields = 0
        self.park_ns = self.min_park_ns

    def idle(self, work_count: int = 0) -> None:
        if work_count > 0:
            self.reset()
        elif self.spins < self.max_spins:
            self.spins += 1
        elif self.yields < self.max_yields:
            self.yields += 1
            os.sched_yield()
        else:
            time.sleep(self.park_ns / 1e9)
            self.park_ns = min(self.park_ns * 2, self.max_park_ns)


_BY_NAME = {
    "spin": BusySpinIdleStrategy,
    "noop": NoOpIdleStrategy,
    "yield": YieldingIdleStrategy,
    "sleep": SleepingIdleStrategy,
    "backoff": BackoffIdleStrategy,
}


def idle_strategy(name: str) -> IdleStrategy:
    """An idle strategy by name: spin, noop, yield, sleep or backoff (CLI `--idle`)."""
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise ValueError(f"idle strategy: expected one of {', '.join(_BY_NAME)}, found {name!r}") from None


def run_agent(do_work: Callable[[], int], stop: "threading.Event | Callable[[], bool] | None" = None,
              idle: IdleStrategy | None = None) -> None:
    """An agent's duty cycle: call `do_work()` until `stop` (an Event, or a callable that
    returns True) is set, idling by the work each cycle did (backoff by default)."""
    idle = idle or BackoffIdleStrategy()
    should_stop = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))
    while not should_stop():
        idle.idle(do_work())
