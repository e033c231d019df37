"""Idle strategies (Agrona's): what an agent loop does when a duty cycle found no work.
Call `idle(work_count)` once per cycle; work > 0 resets backoff to spinning.

`BlockingIdleStrategy` (the agents' default, `default_idle`) ends its backoff asleep on the
futex doorbells of what the agent reads: a writer's commit wakes it, so latency under load is
a wake-up, not a sleep timer.

`run_agent` is every agent's duty-cycle loop (it records an agent's error in the directory's
error log and re-raises it); `stop_on_signals` turns SIGINT/SIGTERM into its stop Event."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Iterator, Protocol

from .._native import c_error, ffi, lib

__all__ = [
    "IdleStrategy", "BusySpinIdleStrategy", "NoOpIdleStrategy", "YieldingIdleStrategy",
    "SleepingIdleStrategy", "BackoffIdleStrategy", "BlockingIdleStrategy", "Waitable", "default_idle",
    "idle_strategy", "run_agent", "stop_on_signals", "short_slice",
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


class Waitable(Protocol):
    """What a `BlockingIdleStrategy` sleeps on: rings, subscriptions, images, or an agent that
    adds the C state of what it reads now (`doorbells(rings, images)` appends
    `ls_ring_buffer_t *` / `ls_image_t *`)."""

    def doorbells(self, rings: list, images: list) -> None: ...


DEFAULT_WAIT_TIMEOUT_NS = 10_000_000  # the longest sleep: housekeeping (heartbeats, liveness) runs
# An agent whose output waits for room in a ring it does not read (no doorbell tells it of
# free space) looks again after this long (its `next_timer_ns`).
BACK_PRESSURE_RETRY_NS = 100_000
# An agent reading streams of an Aeron media driver (which ring no doorbell) looks at them
# again after this long at the latest while idle.
REMOTE_POLL_NS = 200_000


# The time slice a thread asks for when it first sleeps on doorbells (Linux 6.12+ EEVDF, see
# `short_slice`): woken, it preempts a CPU-bound neighbour within about this long instead of
# queueing behind that one's whole default slice (~3 ms on 2 cores).
WAKE_SLICE_NS = 100_000


def short_slice(slice_ns: int = WAKE_SLICE_NS) -> bool:
    """Ask the scheduler for a short time slice for the calling thread, so its wake-ups are
    served soon on a busy machine; its share of the CPU does not change. True when applied
    (False: not Linux, not SCHED_OTHER, or a kernel that refuses it)."""
    return lib.ls_doorbell_short_slice(slice_ns) == 1


class BlockingIdleStrategy:
    """Spin, then yield, then sleep on the doorbells of `sources` until a writer commits to
    one of them (a futex wake-up) or `timeout_ns` passes (the agent's housekeeping goes on).

    `wake_at()` may give the agent's next timer (CLOCK_MONOTONIC ns, or None): the sleep ends
    then at the latest. Woken with data there and still no work (the agent is back-pressured
    by something it does not read, e.g. a full log), it parks: asleep on its other doorbells
    (`ls_wait_any_idle`: a halt on a gateway's side channel still wakes it at once), at most a
    time doubling from `min_park_ns` to `max_park_ns` (no doorbell tells of room), instead of
    spinning on the data it cannot take. It never calls time.sleep. `sleeps`, `parks`: counts.
    A thread's first wait asks for a short time slice (`short_slice`): woken on a busy machine,
    it runs soon instead of after a CPU-bound neighbour's whole slice."""

    def __init__(self, *sources: Waitable, max_spins: int = 10, max_yields: int = 20,
                 timeout_ns: int = DEFAULT_WAIT_TIMEOUT_NS, min_park_ns: int = 1_000,
                 max_park_ns: int = 1_000_000, wake_at: "Callable[[], int | None] | None" = None) -> None:
        if timeout_ns <= 0 or not 0 < min_park_ns <= max_park_ns:
            raise ValueError("expected timeout_ns > 0 and 0 < min_park_ns <= max_park_ns")
        self.sources = list(sources)
        self.max_spins = max_spins
        self.max_yields = max_yields
        self.timeout_ns = timeout_ns
        self.min_park_ns = min_park_ns
        self.max_park_ns = max_park_ns
        self.wake_at = wake_at
        self.sleeps = 0  # waits that reached the futex (for tests and stats)
        self._sliced: int | None = None  # the thread that asked for a short slice (short_slice)
        self.parks = 0   # stalled waits (data there, no work)
        self.reset()

    def reset(self) -> None:
        self.spins = 0
        self.yields = 0
        self.park_ns = self.min_park_ns
        self._stalled = False

    def idle(self, work_count: int = 0) -> None:
        if work_count > 0:
            self.reset()
        elif self.spins < self.max_spins:
            self.spins += 1
        elif self.yields < self.max_yields:
            self.yields += 1
            os.sched_yield()
        elif self._stalled:  # what is there, it cannot take: asleep on the other doorbells
            self.parks += 1
            self.wait(min(self.park_ns, self._timeout_ns()), stalled=True)
            self.park_ns = min(self.park_ns * 2, self.max_park_ns)
            self._stalled = False  # look at the doorbells again next time
        else:
            self._stalled = self.wait(self._timeout_ns())

    def _timeout_ns(self) -> int:
        timeout = self.timeout_ns
        if self.wake_at is not None:
            at = self.wake_at()
            if at is not None:
                timeout = max(0, min(timeout, at - time.monotonic_ns()))
        return timeout

    def wait(self, timeout_ns: int, stalled: bool = False) -> bool:
        """Sleep until one of the sources' writers commits, at most `timeout_ns`. True when
        woken or something was there. `stalled`: leave out what shows a record already (the
        agent cannot take it: `ls_wait_any_idle`)."""
        rings: list = []
        images: list = []
        for source in self.sources:
            source.doorbells(rings, images)
        del images[lib.LS_DOORBELL_MAX - len(rings):]  # (more: seen within the timeout)
        if self._sliced != threading.get_ident():  # the thread that sleeps is the one woken
            self._sliced = threading.get_ident()
            short_slice()
        self.sleeps += 1
        rc = (lib.ls_wait_any_idle if stalled else lib.ls_wait_any)(ffi.new("ls_ring_buffer_t *[]", rings) if rings else ffi.NULL, len(rings),
                             ffi.new("ls_image_t *[]", images) if images else ffi.NULL, len(images), timeout_ns)
        if rc < 0:
            raise c_error()
        return rc == 1


def _few_cores() -> bool:
    return (os.cpu_count() or 1) <= 4


def default_idle(*sources: Waitable, wake_at: "Callable[[], int | None] | None" = None) -> IdleStrategy:
    """Every agent's idle strategy unless told otherwise: block on the doorbells of `sources`
    after a short spin (few cores: the spinning would take a core from the writer) or a
    longer one (many cores)."""
    if _few_cores():  # no yields: on a busy box a yield returns only after others' whole time slices
        return BlockingIdleStrategy(*sources, max_yields=0, wake_at=wake_at)
    return BlockingIdleStrategy(*sources, max_spins=100, max_yields=100, wake_at=wake_at)


def agent_idle(do_work: Callable[[], int]) -> IdleStrategy:
    """The default idle strategy of the agent whose duty cycle is `do_work` (see run_agent)."""
    agent = getattr(do_work, "__self__", None)
    if agent is None or not hasattr(agent, "doorbells"):
        return BackoffIdleStrategy()
    return default_idle(agent, wake_at=getattr(agent, "next_timer_ns", None))


_BY_NAME: dict[str, Callable[[], IdleStrategy]] = {
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
    returns True) is set, idling by the work each cycle did. By default: when `do_work` is
    a method of an agent that tells what it reads (`doorbells`, and its next timer in
    `next_timer_ns`), `default_idle` on it (woken by its writers); else a backoff.

    An exception from `do_work` ends the loop: when `error_dir` is given it is first recorded
    in that directory's distinct error log (type, message and last traceback frame; see
    `lockstep errors`), then re-raised: an agent never carries on after an unknown error.
    KeyboardInterrupt and SystemExit are not errors and are not recorded."""
    idle = idle or agent_idle(do_work)
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
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
