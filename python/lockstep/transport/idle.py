"""Idle strategies (Agrona's): what an agent loop does when a duty cycle found no work.
Call `idle(work_count)` once per cycle; work > 0 resets backoff to spinning.

`run_agent` is every agent's duty-cycle loop (it records an agent's error in the directory's
error log and re-raises it); `stop_on_signals` turns SIGINT/SIGTERM into its stop Event."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Protocol

__all__ = [
    "IdleStrategy", "BusySpinIdleStrategy", "NoOpIdleStrategy", "YieldingIdleStrategy",
    "SleepingIdleStrategy", "BackoffIdleStrategy", "idle_strategy", "run_agent",
    "stop_on_signals",
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
              idle: IdleStrategy | None = None, *, error_dir: "str | os.PathLike[str] | None" = None) -> None:
    """An agent's duty cycle: call `do_work()` until `stop` (an Event, or a callable that
    returns True) is set, idling by the work each cycle did (backoff by default).

    An exception from `do_work` ends the loop: when `error_dir` is given it is first recorded
    in that directory's distinct error log (type, message and last traceback frame; see
    `lockstep errors`), then re-raised: an agent never carries on after an unknown error.
    KeyboardInterrupt and SystemExit are not errors and are not recorded."""
    idle = idle or BackoffIdleStrategy()
    should_stop = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))
    try:
        while not should_stop():
            idle.idle(do_work())
    except Exception as e:
        if error_dir is not None:
            _record(error_dir, e)
        raise


def _record(error_dir: "str | os.PathLike[str]", error: BaseException) -> None:
    """Record an agent's error; a failure to record is told on stderr, never raised over it."""
    from .errorlog import record_error  # transport layer: imported only when an agent fails

    try:
        record_error(error_dir, error)
    except Exception as failure:  # e.g. log full or corrupt: the original error matters more
        try:
            sys.stderr.write(f"lockstep: could not record an error in {error_dir}: {failure}\n")
        except Exception:
            pass


@contextlib.contextmanager
def stop_on_signals(signals: "tuple[int, ...]" = (signal.SIGINT, signal.SIGTERM),
                    stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """`with stop_on_signals() as stop: agent.run(stop)`: an Event set by SIGINT or SIGTERM,
    so the duty cycle ends after the current cycle and the agent's `close()` (in a finally)
    leaves its files consistent, instead of a KeyboardInterrupt or a kill in mid-cycle. The
    previous handlers come back on leaving the block. Off the main thread (where Python
    cannot install handlers) the Event is returned without handlers."""
    stop = stop if stop is not None else threading.Event()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
