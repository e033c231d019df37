"""The demo's processes: one function per role, each run in its own spawned interpreter.

Every process: ignores SIGINT (the driver stops it: Ctrl-C reaches the whole process
group, and an orderly stop beats a traceback per process), stops on SIGTERM or the shared
stop flag, exits on its own when its parent dies, sleeps when idle on the futex doorbells of
what it reads (`default_idle`: the demo runs on 2 cores, and a writer's commit wakes the
reader at once), publishes progress in a shared array and leaves its final report as
`<name>.report` (pickle, written atomically) in the demo directory.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from lockstep.transport.idle import IdleStrategy, agent_idle

__all__ = ["run_sequencer", "run_replica", "run_gateway", "run_risk", "run_recorder", "STOP", "SLOT_WIDTH",
           "POSITION", "BUSY", "STATE", "EXTRA"]

# The shared int64 array: [STOP] flag, then SLOT_WIDTH values per process.
STOP = 0
SLOT_WIDTH = 4
POSITION, BUSY, STATE, EXTRA = range(SLOT_WIDTH)
# STATE: 0 starting, 1 running, 2 stopped; for gateways + 10 * halts (see gateway_state)
RUNNING, STOPPED = 1, 2
PARENT_CHECK_NS = 100_000_000


class _Control:
    def __init__(self, shared: Any, slot: int) -> None:
        self.shared = shared
        self.base = 1 + slot * SLOT_WIDTH
        self.ppid = os.getppid()
        self.terminated = False
        self._next_check = 0
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.terminated = True

    def should_stop(self) -> bool:
        if self.shared[STOP] or self.terminated:
            return True
        now = time.monotonic_ns()
        if now >= self._next_check:
            self._next_check = now + PARENT_CHECK_NS
            if os.getppid() != self.ppid:  # the driver died: do not outlive it
                self.terminated = True
                return True
        return False

    def set(self, index: int, value: int) -> None:
        self.shared[self.base + index] = value


def _write_report(dir: str, name: str, report: dict) -> None:
    path = Path(dir) / f"{name}.report"
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(report, f)
    os.replace(tmp, path)


def _guarded(fn):
    def wrapper(dir, name, shared, slot, *args, **kwargs):
        control = _Control(shared, slot)
        try:
            report = fn(control, dir, name, *args, **kwargs)
        except BaseException as e:
            try:
                (Path(dir) / f"{name}.error").write_text(traceback.format_exc())
            except OSError:
                pass
            if isinstance(e, Exception):  # also in the directory's error log, as run_agent does
                from lockstep.transport.idle import _record

                _record(dir, e)
            raise
        finally:
            control.set(STATE, STOPPED)
        if report is not None and not control.terminated:
            _write_report(dir, name, report)
    wrapper.__name__ = wrapper.__qualname__ = fn.__name__.lstrip("_")
    wrapper.__module__ = __name__
    return wrapper


def _remote_idle() -> IdleStrategy:
    """For a loop that also reads a media driver's streams (no doorbell): park at most
    REMOTE_POLL_NS between looks."""
    from lockstep.transport.idle import REMOTE_POLL_NS, BackoffIdleStrategy

    return BackoffIdleStrategy(max_park_ns=REMOTE_POLL_NS)


def _loop(control: _Control, do_work: Callable[[], int], progress: Callable[[], Any],
          idle: IdleStrategy | None = None) -> None:
    idle = idle or agent_idle(do_work)
    while not control.should_stop():
        work = do_work()
        progress()
        idle.idle(work)


# -- sequencer ---------------------------------------------------------------------------

def _run_sequencer(control, dir, name, remote=None):
    from lockstep.cluster.sequencer import Sequencer

    seq = Sequencer(dir, **(remote or {}))  # remote: log_channel, ingress_channel, aeron_dir (--hosts 2)

    def progress():
        control.set(POSITION, seq.position)
        control.set(BUSY, seq.ingress.size())

    progress()
    control.set(STATE, RUNNING)
    try:
        _loop(control, seq.do_work, progress)
        report = {"last_sequence": seq.last_sequence, "sequenced": seq.sequenced, "duplicates": seq.duplicates,
                  "rejected": seq.rejected, "position": seq.position}
        if seq.log_publisher is not None:
            report["log_publisher"] = {"position": seq.log_publisher.position, "restarts": seq.log_publisher.restarts}
        if seq.ingress_receiver is not None:
            report["remote_ingress"] = {"received": seq.ingress_receiver.received,
                                        "rejected": seq.ingress_receiver.rejected}
        return report
    finally:
        seq.close()


run_sequencer = _guarded(_run_sequencer)


# -- replicas ----------------------------------------------------------------------------

def _machine(kind: str) -> Any:
    if kind == "algo":
        from .algo import AlgoEngine
        return AlgoEngine()
    from .sor import SmartOrderRouter
    return SmartOrderRouter()


def _run_replica(control, dir, name, kind, remote=None):
    from lockstep.cluster.replica import Replica

    machine = _machine(kind)
    # remote (--hosts 2): channel, ingress_channel, replay_channel, aeron_dir
    replica = Replica(machine, dir, name=name, hash_every=10_000, **(remote or {}))

    def progress():
        control.set(POSITION, replica.last_position)
        control.set(BUSY, replica.pending_outputs)

    control.set(STATE, RUNNING)
    try:
        _loop(control, lambda: replica.do_work(512), progress, agent_idle(replica.do_work))
        if control.terminated:
            return None
        deadline = time.monotonic() + 5
        while replica.pending_outputs and time.monotonic() < deadline:
            replica.flush() or time.sleep(0.001)
        replica.record_hash()
        return {"kind": kind, "hash": machine.state_hash().hex(), "last_sequence": replica.last_sequence,
                "last_position": replica.last_position, "applied": replica.applied,
                "pending_outputs": replica.pending_outputs, "summary": machine.summary(),
                "follower": _follower_report(replica.subscription)}
    finally:
        replica.close()


run_replica = _guarded(_run_replica)


def _follower_report(reader: Any) -> dict | None:
    """How a reader on another host got the log (live, gaps from the archive)."""
    if not hasattr(reader, "catch_ups"):
        return None
    return {"catch_ups": reader.catch_ups, "replayed": reader.replayed, "state": reader.state}


# -- gateways ----------------------------------------------------------------------------

def _run_gateway(control, dir, name, venue, seed, venue_options, remote=None):
    from .execution import ExecutionGateway

    gw = ExecutionGateway(venue, dir, seed=seed, venue_options=venue_options, **(remote or {}))
    assert gw.name == name

    def progress():
        control.set(POSITION, gw.position)
        control.set(BUSY, gw.busy)
        halts = gw.halts
        reached = bool(halts) and halts[-1].reached_ns > 0 or (bool(halts) and halts[-1].log_position < 0)
        control.set(EXTRA, len(halts) * 4 + (2 if gw.halted else 0) + (1 if reached else 0))

    control.set(STATE, RUNNING)
    try:
        idle = agent_idle(gw.do_work)
        _loop(control, gw.do_work, progress, idle)  # (asleep until a halt, the log or the venue's timer)
        deadline = time.monotonic() + 2
        while gw.pending_responses and time.monotonic() < deadline:
            gw.flush() or time.sleep(0.001)
        report = gw.report()
        report["follower"] = _follower_report(gw.subscription)
        report["idle"] = {k: getattr(idle, k, 0) for k in ("sleeps", "parks")}
        return report
    finally:
        gw.close()


run_gateway = _guarded(_run_gateway)


def gateway_state(extra: int) -> tuple[int, bool, bool]:
    """(halts so far, halted now, the last halt's log position reached) from EXTRA."""
    return extra // 4, bool(extra & 2), bool(extra & 1)


# -- risk monitor -----------------------------------------------------------------------

def _run_risk(control, dir, name, limit_per_s, window_ms, auto_halt):
    from .risk import RiskMonitor

    risk = RiskMonitor(dir, limit_per_s=limit_per_s, window_ms=window_ms, auto_halt=auto_halt)

    def progress():
        control.set(POSITION, risk.position)
        control.set(BUSY, 1 if risk.stop_pending else 0)
        control.set(EXTRA, 1 if risk.halt else 0)

    control.set(STATE, RUNNING)
    try:
        _loop(control, risk.do_work, progress)
        return risk.report()
    finally:
        risk.close()


run_risk = _guarded(_run_risk)


# -- recorder ----------------------------------------------------------------------------

def _run_recorder(control, dir, name, archive_dir, replay=None):
    from lockstep.archive import Recorder

    recorder = Recorder(dir, stream_id=100, archive_dir=archive_dir)
    server = connection = None
    if replay is not None:  # --hosts 2: the archive's replay service, for readers on the other host
        from lockstep.aeron.reconnect import DriverConnection
        from lockstep.archive.replay_server import ReplayServer

        connection = DriverConnection(replay["aeron_dir"])
        server = ReplayServer(archive_dir, aeron=connection.aeron, control_channel=replay["channel"])

    def progress():
        control.set(POSITION, _recorder_position(recorder))
        if connection is not None:
            connection.reattach((server,))  # (after a driver restart)

    def do_work():
        return recorder.do_work() + (server.do_work() if server is not None else 0)

    control.set(STATE, RUNNING)
    try:
        _loop(control, do_work, progress, None if server is None else _remote_idle())
        return {"recording_id": recorder.recording_id, "position": _recorder_position(recorder)}
    finally:
        recorder.close()
        if server is not None:
            server.close()
            connection.close()


def _recorder_position(recorder: Any) -> int:
    return int(getattr(recorder, "position", 0) or 0)


run_recorder = _guarded(_run_recorder)
