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
import time
from pathlib import Path

import pytest

import cluster_workers as cw
from aeron.harness import drivers, free_udp_port, netns_pair  # noqa: F401
from lockstep import BackoffIdleStrategy, Sequencer, SequencerClient
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


def _wait(condition, what: str, *, step=None, timeout: float = 60.0) -> None:
    """Until `condition()` (a hang guard, not a speed limit)."""
    deadline = time.monotonic() + timeout
    idle = BackoffIdleStrategy()
    while not condition():
        assert time.monotonic() < deadline, f"waiting for {what}"
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
