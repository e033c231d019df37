"""`lockstep demo`: the trading scenario, as separate processes in a private directory.

The driver (this process) plays the desk: it sends parent orders and the clock's ticks to
the sequencer, injects the Algo's malfunction, and watches. The rest run as spawned
processes: the sequencer, 2 Algo replicas, 2 SOR replicas, 3 execution gateways with
their simulated venues, a recorder and the risk monitor. When the flood trips the risk
monitor, it halts the gateways through their side channels and stops the Algo through
the sequencer; the driver waits until everything has drained (every process has read the
whole log and has nothing left to send), stops every process, replays the recording
offline and builds the summary from what the processes measured.
"""

from __future__ import annotations

import array
import multiprocessing
import os
import pickle
import resource
import shlex
import shutil
import signal
import struct
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, cast

from lockstep.cluster.replica import replay
from lockstep.transport.counters import pid_alive
from lockstep.errors import CodecError, LockstepError
from lockstep.transport.mapped import default_dir
from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH, SequencerClient

from . import processes as P
from .algo import AlgoEngine
from .messages import (BUY, SCHEMA, SELL, VENUES, Decline, InjectMalfunction, ParentOrder, StopAlgo, Tick,
                       VenueOrder)
from .sor import SmartOrderRouter

__all__ = ["DemoConfig", "run_demo", "DESK_ORIGIN", "format_summary"]

DESK_ORIGIN = 1000
STALL_S = 60.0  # no progress for this long: something is stuck (never a speed limit)


@dataclass
class DemoConfig:
    seed: int = 7
    trade_s: float = 1.0             # normal trading before the malfunction
    tick_ms: float = 10.0            # the desk's clock
    parents: int = 3
    parent_qty: int = 1_000_000
    slice_qty: int = 100
    flood_per_tick: int = 150        # the malfunction: extra children per tick
    venue_latency_us: float = 300.0
    venue_throttle_per_s: float = 1500.0  # each venue session's order entry throttle
    risk_limit_per_s: float = 3000.0
    risk_window_ms: int = 1000
    auto_halt: bool = True           # the risk monitor halts (False: someone else must)
    keep_running: bool = False
    kill_replicas: bool = False      # SIGKILL algo-2 and sor-2 half way through trading
    halt_timeout_s: float = 30.0
    keep_dir: bool = False           # leave the private directory (debugging); later demos leave it too
    archive_dir: str | None = None   # where the recording is kept (default: the archive, on disk)
    hosts: int = 1                   # 2: split over two hosts, each with its own Aeron media driver
    loss: float = 0.0                # --hosts 2: the receiving drivers drop this fraction of data frames
    netns: bool | None = None        # --hosts 2: network namespaces (None: when they can be made)


@dataclass
class _Proc:
    name: str
    slot: int
    target: Callable
    args: tuple
    process: Any = None
    killed: bool = False
    consumer: bool = True  # reads the whole sequenced log (checked when draining)
    dir: Path | None = None  # its host's directory (the run's, on one host)


@dataclass
class _Run:
    config: DemoConfig
    dir: Path
    shared: Any
    procs: dict[str, _Proc] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)  # CLOCK_MONOTONIC s of the driver's events
    interrupted: int = 0
    cpu_start: tuple[float, float] = (0.0, 0.0)  # (_cpu_seconds() when the processes started)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    hosts: Any = None  # demo.hosts.Hosts with --hosts 2

    def dir_of(self, p: _Proc) -> Path:
        return p.dir or self.dir


def _cpu_seconds() -> tuple[float, float]:
    """(user + system CPU s of this process's reaped children, of this process)."""
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


DRIVER_PID_FILE = "demo.pid"
KEPT_FILE = "demo.kept"  # a directory kept on purpose (keep_dir): no later demo sweeps it


def _demo_dir(keep: bool = False) -> Path:
    """A fresh private directory beside the default one; first, the directories of demos
    whose driver was killed (SIGKILL leaves no chance to clean up) are removed, except
    those kept on purpose."""
    parent = default_dir().parent
    parent = parent if os.access(parent, os.W_OK) else Path(tempfile.gettempdir())
    for stale in parent.glob("lockstep-demo-*"):
        try:
            if (stale / KEPT_FILE).exists():
                continue
            pid = int((stale / DRIVER_PID_FILE).read_text())
            if stale.is_dir() and not stale.is_symlink() and stale.stat().st_uid == os.geteuid() \
                    and not pid_alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not a demo's, or being made right now
    path = Path(tempfile.mkdtemp(prefix="lockstep-demo-", dir=parent))
    if keep:
        (path / KEPT_FILE).write_text("kept by DemoConfig(keep_dir=True): remove the directory when done\n")
    (path / DRIVER_PID_FILE).write_text(str(os.getpid()))
    return path


def _archive_dir(config: DemoConfig) -> Path:
    """Where the demo keeps its recording: `config.archive_dir`, else the archive (on disk)."""
    from lockstep.archive import default_archive_dir

    return Path(config.archive_dir) if config.archive_dir is not None else default_archive_dir()


def _archive_available() -> bool:
    try:
        from lockstep.archive import Archive, Recorder  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], None] | None = None) -> dict:
    """Run the whole scenario and return the summary (see `format_summary`). Raises
    LockstepError when a process fails or nothing moves for a minute. Ctrl-C (SIGINT) or
    SIGTERM stop every process and remove the directory; with `keep_running`, the first
    Ctrl-C ends the run normally (drain, summary) and a second one aborts."""
    config = config or DemoConfig()
    say = log or (lambda text: None)
    ctx = multiprocessing.get_context("spawn")
    dir = _demo_dir(config.keep_dir)
    record = _archive_available()
    archive_dir = _archive_dir(config) if record else None
    names = ["sequencer", "algo-1", "algo-2", "sor-1", "sor-2", *VENUES, "risk"] + (["recorder"] if record else [])
    run = _Run(config, dir, ctx.RawArray("q", 1 + P.SLOT_WIDTH * len(names)))
    main_thread = _in_main_thread()
    previous = {}
    if main_thread:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, _raise_interrupt)
        if config.keep_running:
            signal.signal(signal.SIGINT, lambda s, f: _soft_interrupt(run))
    try:
        remote: dict[str, dict] = {}
        if config.hosts == 2:
            remote = _start_hosts(run, archive_dir, say)
        for slot, name in enumerate(names):
            args: tuple[Any, ...]
            link = remote.get(name)
            extra = () if link is None else (link,)
            if name == "sequencer":
                target, args, consumer = P.run_sequencer, extra, False
            elif name.startswith(("algo", "sor")):
                target, args, consumer = P.run_replica, (name.split("-")[0], *extra), True
            elif name in VENUES:
                options = {"latency_us": config.venue_latency_us, "throttle_per_s": config.venue_throttle_per_s}
                target, args, consumer = P.run_gateway, (VENUES.index(name), config.seed, options, *extra), True
            elif name == "risk":
                target, args, consumer = P.run_risk, (config.risk_limit_per_s, config.risk_window_ms,
                                                      config.auto_halt and not config.keep_running), True
            else:
                target, args, consumer = P.run_recorder, (str(archive_dir), *extra), True
            run.procs[name] = _Proc(name, slot, target, args, consumer=consumer,
                                    dir=Path(link["dir"]) if link and "dir" in link else None)
            if link is not None:
                link.pop("dir", None)
        say(f"starting {len(names)} processes in {dir}")
        run.cpu_start = _cpu_seconds()
        _start(run, ctx, ["sequencer"])
        _start(run, ctx, names[1:])
        summary = _drive(run, say)
        return summary
    except KeyboardInterrupt:
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        try:
            _stop_all(run)
        finally:
            if run.hosts is not None:
                run.hosts.close()
            if not config.keep_dir:
                shutil.rmtree(dir, ignore_errors=True)
            if main_thread:
                for s, handler in previous.items():
                    signal.signal(s, handler)


def _start_hosts(run: _Run, archive_dir: Path | None, say: Callable[[str], None]) -> dict[str, dict]:
    """--hosts 2: the drivers, host 2's directory, the deployment file that lets `lockstep halt`
    on host 1 reach host 2's gateways, and each process's channels (by process name)."""
    from lockstep.cluster.priority_stream import Deployment, RemoteHost, write_deployment

    from .hosts import Hosts

    if archive_dir is None:
        raise LockstepError("--hosts 2 needs lockstep.archive: a late or cut-off reader catches up from its replay")
    hosts = run.hosts = Hosts.start(run.dir, loss=run.config.loss, netns=run.config.netns)
    say(f"two hosts: {hosts.network}; an Aeron media driver on each"
        + (f", dropping {run.config.loss:.0%} of data frames received" if run.config.loss else ""))
    host1, host2 = hosts.hosts["host1"], hosts.hosts["host2"]
    dir2 = run.dir / "host2"
    dir2.mkdir(mode=0o700)
    write_deployment(run.dir, Deployment(str(host1.aeron_dir), (RemoteHost("host2", hosts.priority_channel,
                                                                           tuple(VENUES)),)))
    on_host2 = {"channel": hosts.log_channel, "ingress_channel": hosts.ingress_channel,
                "replay_channel": hosts.replay_channel, "aeron_dir": str(host2.aeron_dir), "dir": str(dir2)}
    remote: dict[str, dict] = {
        "sequencer": {"log_channel": hosts.log_channel, "ingress_channel": hosts.ingress_channel,
                      "aeron_dir": str(host1.aeron_dir)},
        "recorder": {"channel": hosts.replay_channel, "aeron_dir": str(host1.aeron_dir)},
    }
    for name in host2.processes:
        remote[name] = dict(on_host2)
        if name in VENUES:
            remote[name]["priority_channel"] = hosts.priority_channel
    return remote


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _soft_interrupt(run: _Run) -> None:
    run.interrupted += 1
    if run.interrupted > 1:
        raise KeyboardInterrupt


# -- processes --------------------------------------------------------------------------

def _value(run: _Run, name: str, index: int) -> int:
    return run.shared[1 + run.procs[name].slot * P.SLOT_WIDTH + index]


# What the demo's processes get in their environment: one OpenBLAS thread (numpy's, loaded
# with lockstep's codec: no process uses BLAS, and each of its idle threads would spin ~0.1
# CPU s at start, a second in all, on a 2-core box), unless the user set it.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1"}


def _start(run: _Run, ctx: Any, names: list[str]) -> None:
    added = {k: v for k, v in CHILD_ENV.items() if k not in os.environ}
    os.environ.update(added)  # (spawned children inherit the environment at start)
    try:
        for name in names:
            p = run.procs[name]
            p.process = ctx.Process(target=p.target, args=(str(run.dir_of(p)), name, run.shared, p.slot, *p.args),
                                    name=f"lockstep-demo {name}", daemon=True)
            p.process.start()
    finally:
        for k in added:
            del os.environ[k]
    _wait(run, lambda: all(_value(run, n, P.STATE) == P.RUNNING for n in names),
          f"{', '.join(names)} to start")


def _check_alive(run: _Run) -> None:
    for p in run.procs.values():
        proc = p.process
        if proc is None or p.killed or proc.exitcode is None:
            continue
        if _value(run, p.name, P.STATE) == P.STOPPED and proc.exitcode == 0 and run.shared[P.STOP]:
            continue
        error = run.dir_of(p) / f"{p.name}.error"
        detail = error.read_text().strip().splitlines()[-1] if error.exists() else f"exit code {proc.exitcode}"
        raise LockstepError(f"demo process {p.name} (pid {proc.pid}) failed: {detail}")


def _wait(run: _Run, condition: Callable[[], bool], what: str, *, tick: Callable[[], Any] | None = None,
          deadline_s: float | None = None) -> None:
    """Until `condition()`; fails when no process made progress for STALL_S (or after
    `deadline_s`), or a process dies."""
    last, moved = tuple(run.shared), time.monotonic()
    deadline = None if deadline_s is None else moved + deadline_s
    while not condition():
        _check_alive(run)
        if tick is not None:
            tick()
        now = time.monotonic()
        progress = tuple(run.shared)
        if progress != last:
            last, moved = progress, now
        elif now - moved > STALL_S:
            raise LockstepError(f"{run.dir}: waiting for {what}: no process made progress for {STALL_S:.0f} s")
        if deadline is not None and now > deadline:
            raise LockstepError(f"{run.dir}: waiting for {what}: not done after {deadline_s:.0f} s")
        time.sleep(0.002)


def _stop_all(run: _Run) -> None:
    """Ask every process to stop, then SIGTERM, then SIGKILL the ones that do not."""
    run.shared[P.STOP] = 1
    live = [p.process for p in run.procs.values() if p.process is not None]
    deadline = time.monotonic() + 10
    for proc in live:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in live:
        if proc.is_alive():
            proc.terminate()
    for proc in live:
        proc.join(2)
        if proc.is_alive():
            proc.kill()
            proc.join(2)


# -- the scenario -----------------------------------------------------------------------

class _Desk:
    """The driver's sender: parent orders, ticks, admin messages (queued when the ingress
    is full, never dropped)."""

    def __init__(self, dir: Path) -> None:
        self.client = SequencerClient(dir, origin_id=DESK_ORIGIN)
        self.pending: list[bytes] = []
        self.ticks = 0

    def send(self, command: bytes) -> None:
        self.pending.append(command)
        self.flush()

    def flush(self) -> None:
        while self.pending and self.client.send(self.pending[0]):
            self.pending.pop(0)

    def tick(self) -> None:
        self.ticks += 1
        self.send(Tick.encode(tick=self.ticks))

    def close(self) -> None:
        self.client.close()


def _drive(run: _Run, say: Callable[[str], None]) -> dict:
    config = run.config
    desk = _Desk(run.dir)
    gateways = list(VENUES)
    try:
        for i in range(config.parents):
            desk.send(ParentOrder.encode(parent_id=i + 1, side=BUY if i % 2 == 0 else SELL, qty=config.parent_qty,
                                         price=100 + i, slice_qty=config.slice_qty))
        interval = config.tick_ms / 1000
        next_tick = time.monotonic()

        def ticker() -> None:
            nonlocal next_tick
            now = time.monotonic()
            if now >= next_tick:
                desk.tick()
                next_tick = max(next_tick + interval, now - interval)
            else:
                desk.flush()

        start = time.monotonic()
        run.events["start"] = start
        say(f"trading: {config.parents} parent orders sliced by the Algo, routed by the SOR to "
            f"{len(gateways)} venues ({config.trade_s:.1f} s)")
        if config.kill_replicas:
            _wait(run, lambda: time.monotonic() >= start + config.trade_s / 2, "trading", tick=ticker)
            for name in ("algo-2", "sor-2"):
                p = run.procs[name]
                os.kill(p.process.pid, signal.SIGKILL)
                p.process.join(10)
                p.killed = True
            run.events["killed"] = time.monotonic()
            say("killed algo-2 and sor-2 (SIGKILL): algo-1 and sor-1 carry on")
        _wait(run, lambda: time.monotonic() >= start + config.trade_s, "trading", tick=ticker)
        desk.send(InjectMalfunction.encode(flood_per_tick=config.flood_per_tick))
        run.events["malfunction"] = time.monotonic()
        say(f"malfunction injected: the Algo floods {config.flood_per_tick} extra child orders per tick")

        def all_halted() -> bool:
            return all(P.gateway_state(_value(run, g, P.EXTRA))[1] for g in gateways)

        if config.keep_running:
            say(f"keep-running: halt it from another terminal: lockstep halt --all --dir {run.dir}"
                f"  (watch: lockstep stat --dir {run.dir}); Ctrl-C ends the demo")
            _keep_running(run, ticker, say)
        else:
            _wait(run, all_halted, "the risk monitor to halt the gateways", tick=ticker,
                  deadline_s=config.halt_timeout_s)
            run.events["halted"] = time.monotonic()
            say("halted: every gateway is disconnected from its venue and declines; StopAlgo is sequenced")
        # Drain: no more ticks; wait until every live process has read the whole log and
        # has nothing left to send, and the log has stopped growing.
        say("draining: every process reads the log to its end")
        _drain(run, desk)
        run.events["drained"] = time.monotonic()
    finally:
        desk.close()
    run.shared[P.STOP] = 1
    _stop_all(run)
    children, own = (now - then for now, then in zip(_cpu_seconds(), run.cpu_start))
    run.cpu_seconds = {"processes": round(children, 3), "driver": round(own, 3)}
    _check_alive(run)
    reports = _reports(run)
    say("replaying the recording offline")
    return _summary(run, reports)


def _keep_running(run: _Run, ticker: Callable[[], None], say: Callable[[str], None]) -> None:
    last_print = 0.0
    while not run.interrupted:
        _check_alive(run)
        ticker()
        now = time.monotonic()
        if now - last_print >= 1.0:
            last_print = now
            tail = _value(run, "sequencer", P.POSITION)
            behind = tail - min(_value(run, g, P.POSITION) for g in VENUES)
            halted = [g for g in VENUES if P.gateway_state(_value(run, g, P.EXTRA))[1]]
            say(f"  log position {tail:,}, slowest gateway {behind:,} B behind; "
                f"gateways halted: {', '.join(halted) or 'none'}")
        time.sleep(0.002)
    say("interrupted: ending the demo (Ctrl-C again to abort)")


def _drain(run: _Run, desk: _Desk) -> None:
    stable_since = [time.monotonic(), -1]

    def drained() -> bool:
        desk.flush()
        tail = _value(run, "sequencer", P.POSITION)
        settled = not desk.pending and _value(run, "sequencer", P.BUSY) == 0 and all(
            _value(run, p.name, P.POSITION) >= tail and _value(run, p.name, P.BUSY) == 0
            for p in run.procs.values() if p.consumer and not p.killed)
        if not settled or tail != stable_since[1]:
            stable_since[:] = [time.monotonic(), tail]
            return False
        return time.monotonic() - stable_since[0] >= 0.3

    _wait(run, drained, "the log to drain")


def _reports(run: _Run) -> dict[str, dict]:
    reports = {}
    for p in run.procs.values():
        if p.killed:
            continue
        path = run.dir_of(p) / f"{p.name}.report"
        if not path.exists():
            raise LockstepError(f"demo process {p.name} left no report ({path})")
        with open(path, "rb") as f:
            reports[p.name] = pickle.load(f)
    return reports


# -- the summary ------------------------------------------------------------------------

def _recording(run: _Run, reports: dict) -> tuple[Callable[[], Iterator[tuple[bytes, int]]], str]:
    """What to replay: a function giving the sequenced log as recorded by the archive (or,
    without one, as read from the log file) as (payload, position) pairs, streamed."""
    if "recorder" in reports:
        from lockstep.archive import Archive

        recording_id = reports["recorder"]["recording_id"]
        if recording_id is None:
            raise LockstepError(f"{run.dir}: the recorder recorded nothing")
        archive = Archive(_archive_dir(run.config))

        def recorded() -> Iterator[tuple[bytes, int]]:
            with archive.reader(recording_id) as reader:
                for payload, header in reader.messages():
                    yield payload, header["position"]

        return recorded, f"archive recording {recording_id}"
    from lockstep.transport.reader import LogReader
    from lockstep.transport.stream_files import stream_logs

    [path] = stream_logs(run.dir, DEFAULT_LOG_STREAM)

    def copied() -> Iterator[tuple[bytes, int]]:
        with LogReader(path) as reader:
            for payload, header in reader.messages():
                yield payload, header["position"]

    return copied, "a copy of the sequenced log (lockstep.archive not available)"


def _summary(run: _Run, reports: dict) -> dict:
    config = run.config
    recorded, source = _recording(run, reports)
    # The log as recorded: what was sequenced, declines, every (origin, origin sequence) once.
    counts: dict[str, int] = {}
    origins: set[tuple[int, int]] = set()
    duplicates = 0
    venue_orders: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(VENUES))}  # (order id, position)
    declined_in_log: set[int] = set()
    header = struct.Struct("<qqqii")
    stop_algo_position = None
    replayed = 0

    def counted() -> Iterator[tuple[bytes, int]]:
        nonlocal duplicates, stop_algo_position, replayed
        for payload, position in recorded():
            replayed += 1
            _, _, origin_sequence, origin_id, _ = header.unpack_from(payload)
            key = (origin_id, origin_sequence)
            if key in origins:
                duplicates += 1
            origins.add(key)
            try:
                msg = SCHEMA.decode(payload, SEQUENCED_HEADER_LENGTH)
            except CodecError:
                msg = None
            if msg is not None:
                counts[msg.type.name] = counts.get(msg.type.name, 0) + 1
                if msg.type is VenueOrder:
                    venue_orders[msg.venue].append((msg.order_id, position))
                elif msg.type is Decline:
                    declined_in_log.add(msg.order_id)
                elif msg.type is StopAlgo and stop_algo_position is None:
                    stop_algo_position = position
            yield payload, position

    # Offline, from the recording, into fresh machines: the same code as the replicas.
    algo = replay(AlgoEngine(), counted())
    messages = replayed
    sor = replay(SmartOrderRouter(), recorded())
    replay_hashes = {"algo": algo.machine.state_hash().hex(), "sor": sor.machine.state_hash().hex()}
    replica_hashes = {n: r["hash"] for n, r in reports.items() if r.get("kind") in ("algo", "sor")}
    replicas_equal = all(h == replay_hashes[reports[n]["kind"]] for n, h in replica_hashes.items())

    gateways = {}
    before = after = 0
    latencies, delays, backlogs = [], [], []
    for i, name in enumerate(VENUES):
        g = reports[name]
        halts = g["halts"]
        first = halts[0] if halts else None
        arrivals = array.array("q")
        arrivals.frombytes(g["arrivals"])
        if first is not None:
            before += sum(1 for t in arrivals if t < first["acted_ns"])
        else:
            before += len(arrivals)
        after += g["orders_after_halt"] + g["received_while_disconnected"]
        # Requests it received after acting on the halt: each must be declined, in the log.
        received_after = [oid for oid, pos in venue_orders[i] for h in halts if pos > h["position_at_act"]
                          and (h["position_at_resume"] < 0 or pos <= h["position_at_resume"])]
        declined = set(g["declined_ids"])
        undeclined = [oid for oid in declined if oid not in declined_in_log]
        if first is not None:
            latencies.append(first["latency_ns"])
            if first["sequenced_delay_ns"] is not None:
                delays.append(first["sequenced_delay_ns"])
            backlogs.append(first["backlog_messages"])
        gateways[name] = {
            "requests": g["requests"], "to_venue": g["to_venue"], "declined": g["declined"],
            "halt_latency_us": first["latency_ns"] / 1000 if first else None,
            "sequenced_halt_delay_us": first["sequenced_delay_ns"] / 1000
            if first and first["sequenced_delay_ns"] is not None else None,
            "backlog_messages_at_halt": first["backlog_messages"] if first else None,
            # since its look at the side channel before the one that found the halt (asleep or busy)
            "halt_check_gap_us": first.get("check_gap_ns", 0) / 1000 if first else None,
            "idle": g.get("idle"),  # its idle strategy's sleeps (on doorbells) and parks (stalled)
            "halt_log_position": first["log_position"] if first else None,
            "position_at_halt": first["position_at_act"] if first else None,
            "orders_between_halt_sent_and_acted": g["orders_between_halt_sent_and_acted"],
            "requests_after_halt": len(received_after),
            "requests_after_halt_not_declined": len([o for o in received_after if o not in declined]),
            "declines_missing_from_log": len(undeclined),
            "sent_and_declined": len(set(g["sent_ids"]) & declined),
        }
    seq = reports["sequencer"]
    risk = reports["risk"]
    algo_summary = cast(AlgoEngine, algo.machine).summary()
    sor_summary = cast(SmartOrderRouter, sor.machine).summary()
    start = run.events["start"]
    summary = {
        "orders_to_venues_before_halt": before,
        "orders_to_venues_after_halt": after,
        "halt_latency_us": max(latencies) / 1000 if latencies else None,
        "sequenced_halt_delay_us": max(delays) / 1000 if delays else None,
        "declines_sequenced": counts.get("Decline", 0),
        "replica_hashes": replica_hashes,
        "replay_hashes": replay_hashes,
        "messages_sequenced": seq["last_sequence"],
        # more detail
        "replicas_equal_replay": replicas_equal,
        "replay_source": source,
        "messages_replayed": messages,
        "backlog_messages_at_halt": min(backlogs) if backlogs else None,
        "duplicate_outputs_in_log": duplicates,
        "duplicates_dropped_by_sequencer": seq["duplicates"],
        "halted_by": "risk monitor" if risk.get("halt") else "an operator (lockstep halt)",
        "risk_rate_at_halt_per_s": round(risk["rate_at_halt_per_s"]) if risk.get("halt") else None,
        "risk_limit_per_s": risk["limit_per_s"],
        "stop_algo_sequenced": stop_algo_position is not None,
        "messages_by_type": dict(sorted(counts.items())),
        "algo": algo_summary,
        "sor": {k: v for k, v in sor_summary.items() if k != "venues"},
        "venues": sor_summary["venues"],
        "gateways": gateways,
        "killed": [p.name for p in run.procs.values() if p.killed],
        "timeline_s": {k: round(v - start, 3) for k, v in run.events.items()},
        "cpu_seconds": run.cpu_seconds,  # user + system, start to stop (the offline replay not included)
        "config": asdict(config),
    }
    if "recorder" in reports:
        summary["recording"] = _recording_summary(config, reports["recorder"]["recording_id"])
    if run.hosts is not None:
        summary["hosts"] = run.hosts.as_dict()
        summary["across_hosts"] = {
            "log_publisher": seq.get("log_publisher"), "remote_ingress": seq.get("remote_ingress"),
            "followers": {n: r["follower"] for n, r in reports.items() if r.get("follower")}}
    if config.keep_dir:
        summary["dir"] = str(run.dir)
    # For --plot: orders reaching each venue over time, and the halt.
    series = {}
    for name in VENUES:
        arrivals = array.array("q")
        arrivals.frombytes(reports[name]["arrivals"])
        series[name] = [(t / 1e9) - start for t in arrivals]
    halt_sent = [reports[n]["halts"][0]["sent_ns"] for n in VENUES if reports[n]["halts"]]
    summary["_plot"] = {"arrivals_s": series, "halt_s": (min(halt_sent) / 1e9 - start) if halt_sent else None,
                        "malfunction_s": run.events.get("malfunction", start) - start}
    return summary


def _recording_summary(config: DemoConfig, recording_id: int) -> dict:
    """Where the recording is kept and the commands that list, replay and step through it."""
    from lockstep.archive import default_archive_dir

    archive_dir = _archive_dir(config)
    where = "" if archive_dir == default_archive_dir() else f" --archive-dir {shlex.quote(str(archive_dir))}"
    machines = {"algo": "lockstep.demo.algo:AlgoEngine", "sor": "lockstep.demo.sor:SmartOrderRouter"}
    commands = {"list": f"lockstep recordings{where}"}
    for name, machine in machines.items():
        commands[f"replay_{name}"] = f"lockstep replay {recording_id} --machine {machine}{where}"
        commands[f"step_{name}"] = f"lockstep replay {recording_id} --machine {machine} --step{where}"
    return {"archive_dir": str(archive_dir), "recording_id": recording_id, "commands": commands}


def format_summary(s: dict) -> str:
    """The summary as a reader wants it."""
    def us(v):
        return "n/a" if v is None else f"{v:,.0f} us" if v >= 100 else f"{v:,.1f} us"

    lines = ["", "lockstep demo: halting a runaway Algo", ""]
    lines.append(f"  messages sequenced             {s['messages_sequenced']:,}")
    lines.append(f"  orders to venues before halt   {s['orders_to_venues_before_halt']:,}")
    lines.append(f"  orders to venues after halt    {s['orders_to_venues_after_halt']:,}"
                 f"{'   (none: the halt held)' if s['orders_to_venues_after_halt'] == 0 else '   (!)'}")
    who = s["halted_by"]
    if s["risk_rate_at_halt_per_s"] is not None:
        who += f", at {s['risk_rate_at_halt_per_s']:,} child orders/s (limit {s['risk_limit_per_s']:,.0f}/s)"
    lines.append(f"  halted by                      {who}")
    lines.append(f"  halt latency, side channel     {us(s['halt_latency_us'])}  (slowest gateway: sent -> disconnected)")
    lines.append(f"  same halt queued in the log    {us(s['sequenced_halt_delay_us'])}  (measured: until the slowest "
                 f"gateway read the log up to where it was at the halt)")
    if s["backlog_messages_at_halt"] is not None:
        lines.append(f"  backlog behind it              {s['backlog_messages_at_halt']:,} messages (fewest of any gateway)")
    if s["halt_latency_us"] and s["sequenced_halt_delay_us"]:
        lines.append(f"  side channel was               {s['sequenced_halt_delay_us'] / s['halt_latency_us']:,.0f}x sooner")
    lines.append(f"  declines sequenced             {s['declines_sequenced']:,}")
    lines.append(f"  StopAlgo sequenced             {'yes' if s['stop_algo_sequenced'] else 'no'}; the Algo sent "
                 f"{s['algo']['children_sent']:,} children ({s['algo']['flood_sent']:,} of them flood)")
    lines.append(f"  open orders after draining     {s['sor']['open_orders']}")
    cpu = s.get("cpu_seconds")
    media = "; the media drivers not counted" if s.get("hosts") else ""
    if cpu:
        lines.append(f"  CPU used                       {cpu['processes'] + cpu['driver']:.2f} s ({cpu['processes']:.2f} s "
                     f"by its processes, {cpu['driver']:.2f} s by the desk{media}) in {s['timeline_s'].get('drained', 0):.2f} s")
    lines.append("")
    lines.append("  per gateway            requests  to venue  declined  halt latency  queued delay  backlog")
    for name, g in s["gateways"].items():
        lines.append(f"    {name:<20} {g['requests']:>8,} {g['to_venue']:>9,} {g['declined']:>9,} "
                     f"{us(g['halt_latency_us']):>13} {us(g['sequenced_halt_delay_us']):>13} "
                     f"{g['backlog_messages_at_halt'] if g['backlog_messages_at_halt'] is not None else '-':>8}")
    lines.append("")
    if s["killed"]:
        lines.append(f"  killed during the run          {', '.join(s['killed'])} (SIGKILL)")
    lines.append("  replica state hashes")
    for name, h in s["replica_hashes"].items():
        lines.append(f"    {name:<8} {h}")
    lines.append(f"  replayed offline from {s['replay_source']} ({s['messages_replayed']:,} messages)")
    for name, h in s["replay_hashes"].items():
        lines.append(f"    {name:<8} {h}")
    lines.append(f"  replicas equal each other and the replay: {'yes' if s['replicas_equal_replay'] else 'NO'}")
    lines.append(f"  outputs sequenced once: {'yes' if s['duplicate_outputs_in_log'] == 0 else 'NO'} "
                 f"({s['duplicates_dropped_by_sequencer']:,} replica copies dropped by the sequencer)")
    hosts = s.get("hosts")
    if hosts is not None:
        lines.append("")
        lines.append(f"  two hosts over {hosts['network']}" + (f", {hosts['loss']:.0%} of data frames dropped by the "
                                                               f"receiving drivers" if hosts["loss"] else ""))
        for name in ("host1", "host2"):
            lines.append(f"    {name} ({hosts[name]['address']}): {', '.join(hosts[name]['processes'])}")
        across = s.get("across_hosts") or {}
        followers = across.get("followers") or {}
        caught = ", ".join(f"{n} {f['catch_ups']} ({f['replayed']:,} messages)" for n, f in followers.items())
        lines.append(f"    gaps filled from the archive's replay: {caught or 'none'}")
    rec = s.get("recording")
    if rec is not None:
        c = rec["commands"]
        lines.append("")
        lines.append(f"  the recording is kept: recording {rec['recording_id']} in {rec['archive_dir']}")
        lines.append(f"    list it            {c['list']}")
        lines.append(f"    replay the Algo    {c['replay_algo']}")
        lines.append(f"    step the Algo      {c['step_algo']}")
        lines.append(f"    replay the SOR     {c['replay_sor']}")
        lines.append(f"    step the SOR       {c['step_sor']}")
    return "\n".join(lines)
