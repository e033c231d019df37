"""The system across hosts: each "host" its own real Aeron media driver (on loopback, or in a
network namespace joined to the other by a veth pair), the sequenced log leaving host 1 as an
Aeron publication position for position, commands from host 2 over an Aeron stream merged
into the total order, the priority side channel as a stream of host 2's own, and a reader on
host 2 that starts late (or loses the link) catching up from the archive's replay service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cluster_workers as cw
from aeron.harness import drivers, free_udp_port, netns_pair  # noqa: F401
from lockstep import BackoffIdleStrategy, InvalidArgumentError, Sequencer, SequencerClient
from lockstep.cluster.gateway import Gateway, resume
from lockstep.cluster.priority_stream import Deployment, RemoteHost, write_deployment
from lockstep.cluster.replica import replay
from lockstep.cluster.sequencer import decode_sequenced
from lockstep.examples.orderbook import OrderBook
from lockstep.transport.mapped import resolve_dir

from test_cluster import _log_messages

pytestmark = pytest.mark.slow


def _channel(port: int, address: str = "127.0.0.1") -> str:
    return f"aeron:udp?endpoint={address}:{port}"


def _wait(condition, what, *, step=None, timeout: float = 60.0) -> None:
    """Until `condition()` (a hang guard, not a speed limit); `what` may be a callable, for the
    state at the time of a failure."""
    deadline = time.monotonic() + timeout
    idle = BackoffIdleStrategy()
    while not condition():
        assert time.monotonic() < deadline, f"waiting for {what() if callable(what) else what}"
        idle.idle(step() if step is not None else 0)


def test_a_remote_client_and_a_remote_replica_join_the_total_order(lsdir, tmp_path, procs, mp, drivers):
    """Host 1: the sequencer (log published over UDP, ingress taken over UDP) and a replica;
    host 2: a replica reading the published log and a client sending over the ingress stream,
    processes of their own on a driver of their own. Both replicas apply every command of
    both clients once, in the one order, and reach equal hashes at equal positions; each fill
    both replicas send is sequenced once."""
    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel = _channel(free_udp_port()), _channel(free_udp_port())
    dir2 = resolve_dir(tmp_path / "host2")
    seq = Sequencer(lsdir, log_channel=log_channel, ingress_channel=ingress_channel, aeron_dir=host1.dir)
    h = cw.Harness(mp, procs)
    per_client = 3000
    total = 2 * per_client
    h.start(cw.run_replica, "local", lsdir, total, h.progress, 0)
    h.start(cw.run_replica, "remote", dir2, total, h.progress, 1, channel=log_channel, ingress_channel=ingress_channel,
            aeron_dir=str(host2.dir))
    h.wait_reports(["local", "remote"], "started", poll=seq.do_work)
    _wait(lambda: seq.log_publisher.is_connected, "host 2's replica to connect", step=seq.do_work)
    h.start(cw.run_client, "c0", lsdir, 0, per_client, h.progress, 10)
    h.start(cw.run_client, "c1", None, 1, per_client, h.progress, 11, channel=ingress_channel, aeron_dir=str(host2.dir))
    clients = h.wait_reports(["c0", "c1"], poll=seq.do_work)
    results = h.wait_reports(["local", "remote"], poll=seq.do_work)
    assert results[0]["hash"] == results[1]["hash"], results
    assert (results[0]["last_sequence"], results[0]["last_position"]) == (results[1]["last_sequence"],
                                                                           results[1]["last_position"])
    assert results[0]["commands"] == results[1]["commands"] == total
    assert seq.ingress_receiver.received >= per_client  # the remote client's commands came over the stream
    assert clients[1]["count"] == per_client
    # The log: every client command once, and every fill once (the other replica's copy dropped).
    messages = _log_messages(lsdir)
    by_origin: dict[int, list[int]] = {}
    for payload, _ in messages:
        d = decode_sequenced(payload)
        by_origin.setdefault(d.origin_id, []).append(d.origin_sequence)
    for client in clients:
        sent = by_origin[client["origin_id"]]
        assert sent == list(range(client["first"], client["first"] + per_client)), "each command once, in order"
    assert seq.duplicates == results[0]["fills"]
    runner = replay(OrderBook(), messages)
    assert runner.machine.state_hash().hex() == results[0]["hash"]
    seq.close()


def test_halt_all_on_host_1_reaches_the_gateways_of_host_2_through_its_priority_stream(lsdir, tmp_path, drivers):
    """`lockstep halt --all --dir <host 1's>` finds the gateways host 1's deployment lists on
    host 2 and halts each through host 2's priority stream, ahead of the sequenced log."""
    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel = _channel(free_udp_port()), _channel(free_udp_port())
    priority_channel = _channel(free_udp_port())
    seq = Sequencer(lsdir, log_channel=log_channel, ingress_channel=ingress_channel, aeron_dir=host1.dir)
    dir2 = resolve_dir(tmp_path / "host2")
    gateways = [Gateway(name, dir2, channel=log_channel, ingress_channel=ingress_channel,
                        priority_channel=priority_channel, aeron_dir=host2.dir) for name in ("east", "west")]
    write_deployment(lsdir, Deployment(str(host1.dir), (RemoteHost("host2", priority_channel, ("east", "west")),)))

    def step() -> int:
        return seq.do_work() + sum(g.do_work() for g in gateways)

    cli = subprocess.Popen([sys.executable, "-m", "lockstep", "halt", "--all", "--dir", str(lsdir), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: cli.poll() is not None, "lockstep halt", step=step)
    out, err = cli.communicate()
    assert cli.returncode == 0, err
    result = json.loads(out)
    assert [g["host"] for g in result["gateways"]] == ["host2"] and result["gateways"][0]["delivered"], result
    _wait(lambda: all(g.halted for g in gateways), "both gateways to halt", step=step)
    for g in gateways:
        assert g.halts[0].latency_ns > 0 and g.halts[0].log_position == result["log_position"]
    # One named gateway: only that one.
    result = resume(lsdir, "east", reason="east only")
    assert [(g["host"], g["gateway"], g["delivered"]) for g in result["gateways"]] == [("host2", "east", True)]
    _wait(lambda: not gateways[0].halted, "east to resume", step=step)
    for _ in range(200):
        step()
    assert gateways[1].halted, "west was not addressed"
    for g in gateways:
        g.close()
    seq.close()


# -- late join and a cut link: the gap comes from the archive's replay service -------------

class _Host1:
    """Host 1 in this process, in a thread of its own: the sequencer (log and ingress over
    UDP), the recorder of the local log, the archive's replay service (a duty cycle of each,
    backing off when idle); `send(n)` offers the next commands from the test's thread."""

    def __init__(self, lsdir: Path, archive_dir: Path, aeron_dir: Path, *, log_channel: str, ingress_channel: str,
                 replay_channel: str, term_length: int = 1 << 16) -> None:
        from lockstep.aeron.reconnect import DriverConnection
        from lockstep.archive import Recorder
        from lockstep.archive.replay_server import ReplayServer

        self.seq = Sequencer(lsdir, term_length=term_length, log_channel=log_channel, ingress_channel=ingress_channel,
                             aeron_dir=aeron_dir)
        self.channels = {"channel": log_channel, "ingress_channel": ingress_channel, "replay_channel": replay_channel}
        self.recorder = Recorder(lsdir, stream_id=100, archive_dir=archive_dir)
        self.connection = DriverConnection(aeron_dir)  # (the replay server's client: comes back after a restart)
        self.server = ReplayServer(archive_dir, aeron=self.connection.aeron, control_channel=replay_channel)
        self.client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
        self._commands = cw.commands(0, 1 << 40, seed=3)  # (as many as a test sends)
        self._next: bytes | None = None
        self.sent = 0
        self.limit: int | None = None  # send() stops there (a phase that must converge)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="host1", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle = BackoffIdleStrategy(max_park_ns=100_000)
        try:
            next_check = 0.0
            while not self._stop.is_set():
                idle.idle(self.seq.do_work() + self.recorder.do_work() + self.server.do_work())
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.1
                    self.connection.reattach((self.server,))
        except BaseException as e:  # told to the test's thread by check()
            self._errors.append(e)

    def check(self) -> int:
        """Raise what host 1's thread died of."""
        if self._errors:
            raise self._errors[0]
        return 0

    def send(self, count: int) -> int:
        """Offer up to `count` more commands (as the ingress takes them)."""
        k = 0
        while k < count and (self.limit is None or self.sent < self.limit):
            if self._next is None:
                self._next = next(self._commands)
            if not self.client.send(self._next):
                break
            self._next = None
            self.sent += 1
            k += 1
        return k

    def replica_on_host2(self, dir: Path, name: str, aeron_dir: Path, **kwargs):
        """An OrderBook replica reading this host's log through host 2's driver."""
        from lockstep.cluster.replica import Replica

        return Replica(OrderBook(), resolve_dir(dir), name=name, aeron_dir=aeron_dir, hash_every=0,
                       **self.channels, **kwargs)

    def stepper(self, *replicas, send: int = 8):
        """A test-thread step: offer `send` more commands, run each replica's duty cycle."""
        def step() -> int:
            self.send(send)
            return self.check() + sum(r.do_work(256) for r in replicas)
        return step

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for part in (self.client, self.server, self.recorder, self.seq, self.connection):
            part.close()


def _replica_caught_up(replica, host: _Host1) -> bool:
    return replica.last_sequence == host.seq.last_sequence and host.seq.ingress.size() == 0


def test_a_replica_started_late_on_host_2_catches_up_from_the_archive_then_follows_live(lsdir, tmp_path, drivers):
    """The log has moved on by several terms (the local log itself no longer holds its start)
    when a replica starts on host 2: it gets the history from host 1's archive, replayed to it
    over the network with the log's own positions, then follows the live stream — no gap, no
    repeat, the same state as an offline replay of the whole recording. Then a second late
    replica starts from a snapshot and replays only what follows it."""
    from lockstep.cluster.replica import Snapshot, write_snapshot

    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel, replay_channel = (_channel(free_udp_port()) for _ in range(3))
    archive_dir = tmp_path / "archive"
    h1 = _Host1(lsdir, archive_dir, host1.dir, log_channel=log_channel, ingress_channel=ingress_channel,
                replay_channel=replay_channel)
    try:
        while h1.sent < 6000:
            h1.send(64)
            h1.check()
        _wait(lambda: h1.seq.ingress.size() == 0 and h1.recorder.position >= h1.seq.position, "the recording",
              step=h1.check)
        assert h1.seq.position > 4 * (1 << 16), "the local log has wrapped: its start is only in the archive"
        late = h1.replica_on_host2(tmp_path / "host2", "late", host2.dir)
        step = h1.stepper(late, send=16)
        h1.limit = 9000

        _wait(lambda: h1.sent >= 9000 and _replica_caught_up(late, h1),
              lambda: f"the late replica to catch up: {late.subscription!r} at {late.last_sequence}, sequencer at "
                      f"{h1.seq.last_sequence}, {h1.seq.log_publisher!r}, error {late.subscription.last_error}, "
                      f"server {h1.server!r} {dict(h1.server.stats)} ended {list(h1.server.ended)[-3:]}", step=step)
        assert late.subscription.catch_ups >= 1 and late.subscription.replayed > 6000
        assert late.subscription.state == "live"
        assert late.applied == late.last_sequence, "every message once (and it reached the sequencer, above)"
        _wait(lambda: _recorded_to(archive_dir, h1.recorder.recording_id) >= late.last_position, "the recording",
              step=h1.check)
        recorded = _log_messages_all(archive_dir, h1.recorder.recording_id)
        offline = replay(OrderBook(), recorded, until=late.last_position)
        assert offline.last_position == late.last_position
        assert offline.machine.state_hash() == late.machine.state_hash()

        # From a snapshot: only what follows it comes from the archive.
        half = recorded[len(recorded) // 2]
        snap_state = replay(OrderBook(), recorded, until=half[1])
        dir3 = resolve_dir(tmp_path / "host2b")
        write_snapshot(dir3, "snap", Snapshot(snap_state.last_position, snap_state.last_sequence, 0,
                                              snap_state.machine.snapshot()))
        from_snapshot = h1.replica_on_host2(dir3, "snap", host2.dir)
        assert from_snapshot.restored_from is not None
        step2 = h1.stepper(late, from_snapshot, send=16)
        h1.limit = 12000

        _wait(lambda: _replica_caught_up(from_snapshot, h1) and _replica_caught_up(late, h1), "the snapshot replica",
              step=step2)
        assert from_snapshot.applied == from_snapshot.last_sequence - snap_state.last_sequence
        assert from_snapshot.machine.state_hash() == late.machine.state_hash()
        late.close()
        from_snapshot.close()
    finally:
        h1.close()


def test_link_cut_and_restored_the_remote_replica_catches_up_and_agrees(lsdir, tmp_path, drivers, netns_pair):
    """Host 2 in its own network namespace; the veth between the hosts goes down for longer
    than the drivers' image and connection timeouts while host 1 keeps sequencing, then comes
    back: host 1 never stalls, `lockstep stat` shows the log publisher disconnected meanwhile,
    and host 2's replica fills the gap (from the live stream's backlog or the archive) and
    ends equal to host 1's log, every message once."""
    from lockstep.cluster.log_publisher import TYPE_LOG_PUBLISHER
    from lockstep.transport.client import client_for

    host1 = drivers.start("host1", netns=netns_pair.a)
    host2 = drivers.start("host2", netns=netns_pair.b)
    log_channel = _channel(40100, netns_pair.address_b)
    ingress_channel = _channel(40101, netns_pair.address_a)
    replay_channel = _channel(40102, netns_pair.address_a)
    archive_dir = tmp_path / "archive"
    h1 = _Host1(lsdir, archive_dir, host1.dir, log_channel=log_channel, ingress_channel=ingress_channel,
                replay_channel=replay_channel, term_length=1 << 20)
    try:
        remote = h1.replica_on_host2(tmp_path / "host2", "remote", host2.dir)
        step = h1.stepper(remote)
        h1.limit = 2000
        _wait(lambda: h1.sent >= 2000 and _replica_caught_up(remote, h1), "the remote replica", step=step)
        h1.limit = None  # host 1 goes on while the link is down
        netns_pair.set_link(False)
        cut_at, sequenced_at_cut = time.monotonic(), h1.seq.last_sequence

        def publisher_connected() -> list[int]:  # what `lockstep stat` shows of the log publisher
            return [c.value for c in client_for(lsdir).counters
                    if c.type_id == TYPE_LOG_PUBLISHER and c.label.endswith(": connected")]

        def cut_noticed() -> bool:  # the drivers' timeouts passed (2 s in the test settings)
            return time.monotonic() - cut_at > 4.0 and publisher_connected() == [0]

        _wait(cut_noticed, lambda: f"host 1 to see the link down ({h1.seq.log_publisher!r}, {publisher_connected()})",
              step=lambda: step() + (time.sleep(0.0005) or 0))
        print(f"cut noticed after {time.monotonic() - cut_at:.1f} s")
        assert h1.seq.last_sequence > sequenced_at_cut + 500, "host 1 went on sequencing with the link down"
        behind_at_restore = h1.seq.last_sequence - remote.last_sequence
        assert behind_at_restore > 0
        netns_pair.set_link(True)
        h1.limit = h1.sent + 3000
        _wait(lambda: h1.sent >= h1.limit and _replica_caught_up(remote, h1), "the remote replica after the cut",
              step=step, timeout=120)
        assert remote.applied == remote.last_sequence, "no gap, no repeat (and it reached the sequencer, above)"
        _wait(lambda: _recorded_to(archive_dir, h1.recorder.recording_id) >= remote.last_position, "the recording",
              step=h1.check)
        offline = replay(OrderBook(), _log_messages_all(archive_dir, h1.recorder.recording_id),
                         until=remote.last_position)  # (its own outputs may have been sequenced since)
        assert offline.last_position == remote.last_position
        assert offline.machine.state_hash() == remote.machine.state_hash()
        print(f"catch-ups from the archive: {remote.subscription.catch_ups} ({remote.subscription.replayed} messages)")
        remote.close()
    finally:
        h1.close()


def _recorded_to(archive_dir: Path, recording_id: int) -> int:
    """How far the catalog says the recording goes (what its readers read up to)."""
    from lockstep.archive import Archive

    return Archive(archive_dir).recording(recording_id).stop_position


def _log_messages_all(archive_dir: Path, recording_id: int) -> list[tuple[bytes, int]]:
    from lockstep.archive import Archive

    with Archive(archive_dir).reader(recording_id) as reader:
        return [(p, hd["position"]) for p, hd in reader.messages()]


# -- the demo over two hosts --------------------------------------------------------------

def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout if os.geteuid() == 0 else ""


def _demo_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LOCKSTEP_ARCHIVE_DIR": str(tmp_path / "archive")}


def test_demo_over_two_hosts_with_loss(tmp_path):
    """`lockstep demo --hosts 2 --loss 0.05`: network namespaces where they can be made (else
    loopback, and the summary says so); the halt still holds, replicas on both hosts equal
    each other and the offline replay, every output sequenced once; drivers and namespaces
    gone afterwards."""
    from lockstep.aeron.netns import netns_unavailable

    args = [sys.executable, "-m", "lockstep", "demo", "--hosts", "2", "--loss", "0.05", "--json"]
    result = subprocess.run(args, capture_output=True, text=True, env=_demo_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    s = json.loads(result.stdout)
    hosts = s["hosts"]
    if netns_unavailable() is None:
        assert hosts["network"].startswith("network namespaces"), hosts["network"]
    else:
        assert hosts["network"].startswith("loopback"), hosts["network"]
    assert hosts["loss"] == 0.05
    assert set(hosts["host1"]["processes"]) == {"sequencer", "recorder", "risk", "algo-1", "sor-1"}
    assert set(hosts["host2"]["processes"]) == {"algo-2", "sor-2", "alpha", "beta", "gamma"}
    assert s["orders_to_venues_after_halt"] == 0
    assert s["orders_to_venues_before_halt"] > 0
    assert s["replicas_equal_replay"] is True
    assert len(s["replica_hashes"]) == 4
    assert s["replica_hashes"]["algo-1"] == s["replica_hashes"]["algo-2"] == s["replay_hashes"]["algo"]
    assert s["replica_hashes"]["sor-1"] == s["replica_hashes"]["sor-2"] == s["replay_hashes"]["sor"]
    assert s["duplicate_outputs_in_log"] == 0 and s["stop_algo_sequenced"] and s["declines_sequenced"] > 0
    assert all(g["halt_latency_us"] is not None for g in s["gateways"].values()), "each remote gateway got the halt"
    assert s["across_hosts"]["remote_ingress"]["received"] > 0
    assert s["sor"]["open_orders"] == 0, "every response from host 2's gateways reached the log"
    for host in ("host1", "host2"):
        assert not Path(hosts[host]["aeron_dir"]).exists()
        if hosts[host]["netns"]:
            assert hosts[host]["netns"] not in _namespaces()


def test_demo_over_two_hosts_interrupted_cleans_up(tmp_path):
    """Ctrl-C mid-run: every process and both drivers stop, the namespaces and the demo's
    directory go, and the exit says it was interrupted."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "lockstep", "demo", "--hosts", "2", "--trade-seconds", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_demo_env(tmp_path))
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("trading"):
            break
    assert lines and lines[-1].startswith("trading"), "".join(lines)
    network = next(line for line in lines if line.startswith("two hosts"))
    demo_dir = next(line.split(" in ", 1)[1].strip() for line in lines if line.startswith("starting"))
    assert _drivers_in(demo_dir), "the check below sees the demo's drivers while they run"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "interrupted" in err, err[-2000:]
    assert not Path(demo_dir).exists()
    if "namespaces" in network:
        assert f"lsdemo{proc.pid}" not in _namespaces()
    assert _drivers_in(demo_dir) == [], "no media driver of the demo is left"


def _drivers_in(demo_dir: str) -> list[int]:
    """Pids of processes whose AERON_DIR is inside `demo_dir` (the demo's media drivers)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"AERON_DIR={demo_dir}/".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("restarted_host", ["host2", "host1"])
def test_a_driver_restarted_the_processes_reconnect_catch_up_and_agree(lsdir, tmp_path, drivers, monkeypatch,
                                                                       restarted_host):
    """A media driver is SIGKILLed and a new one started in its directory — host 2's while host
    1 keeps sequencing, or host 1's (the sequencer's log publisher and ingress, the replay
    server): no process is brought down; each client sees the driver gone, attaches to the new
    one and re-creates its streams; host 2's replica fills the gap from the archive and goes
    on, every message once, equal to the recording."""
    from lockstep.aeron.driver import MediaDriver, TEST_DEFAULTS

    monkeypatch.setenv("AERON_DRIVER_TIMEOUT", "2000")  # clients give up on a dead driver after 2 s
    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel, replay_channel = (_channel(free_udp_port()) for _ in range(3))
    archive_dir = tmp_path / "archive"
    h1 = _Host1(lsdir, archive_dir, host1.dir, log_channel=log_channel, ingress_channel=ingress_channel,
                replay_channel=replay_channel, term_length=1 << 20)
    restarted = None
    try:
        remote = h1.replica_on_host2(tmp_path / "host2", "remote", host2.dir)
        step = h1.stepper(remote)
        h1.limit = 1000
        _wait(lambda: h1.sent >= 1000 and _replica_caught_up(remote, h1), "the remote replica", step=step)
        h1.limit = None
        victim = host2 if restarted_host == "host2" else host1
        victim.kill()
        restarted = MediaDriver(victim.dir, defaults=TEST_DEFAULTS, env={"AERON_DIR_DELETE_ON_START": "true"})
        reconnected = (lambda: remote._link.connection.reconnects == 1) if restarted_host == "host2" else (
            lambda: h1.seq._connection.reconnects == 1 and h1.connection.reconnects == 1)
        _wait(reconnected, f"{restarted_host}'s clients to attach to the new driver", step=step)
        h1.limit = h1.sent + 3000
        _wait(lambda: h1.sent >= h1.limit and _replica_caught_up(remote, h1), "the replica after the restart",
              step=step, timeout=120)
        assert remote.applied == remote.last_sequence, "no gap, no repeat (and it reached the sequencer, above)"
        assert remote.subscription.catch_ups >= 1
        _wait(lambda: _recorded_to(archive_dir, h1.recorder.recording_id) >= remote.last_position, "the recording",
              step=h1.check)
        offline = replay(OrderBook(), _log_messages_all(archive_dir, h1.recorder.recording_id),
                         until=remote.last_position)
        assert offline.machine.state_hash() == remote.machine.state_hash()
        remote.close()
    finally:
        h1.close()
        if restarted is not None:
            restarted.close()


def test_a_remote_replica_sigkilled_and_restarted_resumes_from_its_snapshot(lsdir, tmp_path, procs, mp, drivers):
    """A replica process on host 2 (snapshots every 500 messages) is SIGKILLed mid-run and
    started again: it restores its newest snapshot, replays only the rest from host 1's
    archive, follows live, and ends equal to host 1's replica."""
    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel, replay_channel = (_channel(free_udp_port()) for _ in range(3))
    archive_dir = tmp_path / "archive"
    h1 = _Host1(lsdir, archive_dir, host1.dir, log_channel=log_channel, ingress_channel=ingress_channel,
                replay_channel=replay_channel, term_length=1 << 20)
    try:
        h = cw.Harness(mp, procs)
        total = h1.limit = 6000
        remote = dict(channel=log_channel, ingress_channel=ingress_channel, replay_channel=replay_channel,
                      aeron_dir=str(host2.dir), hash_every=100, snapshot_every=500)
        dir2 = resolve_dir(tmp_path / "host2")
        h.start(cw.run_replica, "r2", dir2, total, h.progress, 1, **remote)
        h.wait_reports(["r2"], "started", poll=lambda: h1.send(8))
        _wait(lambda: h1.sent >= 2500 and h.progress[1] >= 2000, "host 2's replica", step=lambda: h1.send(8))
        h.kill("r2")
        snapshots = sorted(dir2.glob("r2-*.snap"))
        assert snapshots, "it wrote snapshots before it was killed"
        _wait(lambda: h1.sent >= 4000, "more commands", step=lambda: h1.send(8))
        h.start(cw.run_replica, "r2", dir2, total, h.progress, 1, **remote)
        started = h.wait_reports(["r2"], "started", poll=lambda: h1.send(8))
        assert started[0]["restored_sequence"] > 0
        _wait(lambda: h1.sent >= total, "the rest of the commands", step=lambda: h1.send(8) + h1.check())
        [result] = h.wait_reports(["r2"], poll=h1.check)
        assert result["restored_sequence"] > 0
        assert result["applied"] == result["last_sequence"] - result["restored_sequence"], "no repeat after restoring"
        _wait(lambda: _recorded_to(archive_dir, h1.recorder.recording_id) >= result["last_position"], "the recording",
              step=h1.check)
        offline = replay(OrderBook(), _log_messages_all(archive_dir, h1.recorder.recording_id),
                         until=result["last_position"])
        assert offline.machine.state_hash().hex() == result["hash"]
    finally:
        h1.close()


@pytest.mark.parametrize("content", ["garbage", '{"aeron_dir": "/x", "hosts": [{"nam": 1}]}', "[1, 2]", None])
def test_a_bad_deployment_file_is_a_clear_error_not_a_hang(lsdir, content):
    """`lockstep halt --all` with a deployment.json that is not one (or a FIFO) fails at once,
    naming the file."""
    path = lsdir / "deployment.json"
    if content is None:
        os.mkfifo(path)
    else:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "lockstep", "halt", "--all", "--dir", str(lsdir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert str(path) in result.stderr and ("expected a deployment" in result.stderr
                                           or "not a regular file" in result.stderr), result.stderr


def test_the_log_multi_destination_cast_to_two_hosts(lsdir, tmp_path, drivers):
    """Multi-destination cast (dynamic control): one publication of the log reaches replicas on
    two other hosts, each its own driver; both reach host 1's state at the same positions."""
    host1, host2, host3 = drivers.start("host1"), drivers.start("host2"), drivers.start("host3")
    control = f"127.0.0.1:{free_udp_port()}"
    log_pub = f"aeron:udp?control={control}|control-mode=dynamic"
    ingress_channel, replay_channel = _channel(free_udp_port()), _channel(free_udp_port())
    h1 = _Host1(lsdir, tmp_path / "archive", host1.dir, log_channel=log_pub, ingress_channel=ingress_channel,
                replay_channel=replay_channel, term_length=1 << 20)
    try:
        replicas = []
        for name, driver in (("r2", host2), ("r3", host3)):
            receive = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}|control={control}|control-mode=dynamic"
            h1.channels["channel"] = receive  # (each host subscribes at its own endpoint)
            replicas.append(h1.replica_on_host2(tmp_path / name, name, driver.dir,
                                                replay_response_channel=_channel(free_udp_port())))
        with pytest.raises(InvalidArgumentError, match="replay_response_channel"):  # (it cannot be the MDC one)
            h1.replica_on_host2(tmp_path / "r4", "r4", host3.dir)
        step = h1.stepper(*replicas)
        h1.limit = 3000
        _wait(lambda: h1.sent >= 3000 and all(_replica_caught_up(r, h1) for r in replicas), "both hosts' replicas",
              step=step)
        a, b = replicas
        assert a.applied == a.last_sequence and b.applied == b.last_sequence, "every message once on each"
        assert a.last_position == b.last_position
        assert a.machine.state_hash() == b.machine.state_hash()
        for r in replicas:
            r.close()
    finally:
        h1.close()


def test_with_only_remote_readers_the_sequencer_still_sequences(lsdir, tmp_path, drivers):
    """No reader of the log on host 1 (no replica, no recorder): the log publisher counts as
    its reader (untethered), so the sequencer sequences and host 2's replica gets everything.
    (Before: the local log had no subscriber, every append was NOT_CONNECTED, nothing moved.)"""
    host1, host2 = drivers.start("host1"), drivers.start("host2")
    log_channel, ingress_channel = _channel(free_udp_port()), _channel(free_udp_port())
    seq = Sequencer(lsdir, log_channel=log_channel, ingress_channel=ingress_channel, aeron_dir=host1.dir)
    from lockstep.cluster.replica import Replica

    remote = Replica(OrderBook(), resolve_dir(tmp_path / "host2"), name="remote", channel=log_channel,
                     ingress_channel=ingress_channel, aeron_dir=host2.dir, hash_every=0)
    _wait(lambda: seq.log_publisher.is_connected, "host 2 to connect", step=lambda: seq.do_work() + remote.do_work())
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    commands = list(cw.commands(0, 500, seed=5))
    sent = cw.sender(client, commands)
    _wait(lambda: remote.machine.commands == len(commands), "host 2's replica to apply every command",
          step=lambda: sent() + seq.do_work() + remote.do_work())
    assert remote.applied == remote.last_sequence
    client.close()
    remote.close()
    seq.close()
