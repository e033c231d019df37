"""Across hosts: `python bench/hosts_bench.py [--messages N] [--network netns|loopback]`
prints one JSON object.

Like for like, the same API on both sides: a `SequencerClient` sends a command, a `Replica`
applies it (a trivial machine that counts); the sequencer runs in a process of its own.
* one host: client and replica in this process, on the sequencer's directory (driverless IPC);
* two hosts: client and replica in this process on "host 2" — `SequencerClient(channel=...)`
  and `Replica(channel=...)` through host 2's media driver — the sequencer on "host 1" with
  its own driver (`Sequencer(log_channel=..., ingress_channel=...)`), the drivers in network
  namespaces joined by a veth pair (root) or both on loopback.
Reported for each: send -> apply latency of one command at a time (p50/p90/p99/max, us), and
sequenced commands/s with the client sending as fast as the ingress takes (until the replica
applied them all). Idle: the default agents' idle strategies (the sequencer sleeps on its
ingress doorbell, looking at driver streams every REMOTE_POLL_NS); `--spin` spins the
sequencer instead. Figures depend on the machine and its load: compare the ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import lockstep
from lockstep.aeron.driver import SMALL_MACHINE_DEFAULTS, MediaDriver
from lockstep.aeron.netns import NetnsPair, netns_unavailable
from lockstep.cluster.replica import Replica, StateMachine
from lockstep.transport.idle import BusySpinIdleStrategy

_STAMP = struct.Struct("<q")


class Counting(StateMachine):
    """Counts commands; remembers the last one's 8 bytes (the send stamp)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0

    def on_message(self, ctx, command: bytes) -> None:
        self.count += 1
        self.last = _STAMP.unpack_from(command)[0]

    def snapshot(self) -> bytes:
        return _STAMP.pack(self.count)

    def restore(self, data: bytes) -> None:
        self.count = _STAMP.unpack(data)[0]


def _sequencer(dir: str, kwargs: dict, spin: bool, ready, stop) -> None:
    seq = lockstep.Sequencer(dir, **kwargs)
    ready.set()
    seq.run(stop.is_set, BusySpinIdleStrategy() if spin else None)
    seq.close()


def _percentiles(samples: list[int]) -> dict:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000  # noqa: E731
    return {"p50_us": pick(0.5), "p90_us": pick(0.9), "p99_us": pick(0.99), "max_us": samples[-1] / 1000}


def _measure(client, replica: Replica, machine: Counting, messages: int) -> dict:
    # Warm up and wait for the path to connect (a first message that gets through).
    deadline = time.monotonic() + 30
    while machine.count == 0:
        client.send(_STAMP.pack(0))
        for _ in range(100):
            replica.do_work()
        if time.monotonic() > deadline:
            raise SystemExit(f"no command got through in 30 s ({client!r}, {replica.subscription!r})")
    base = machine.count
    while replica.do_work():
        pass
    latencies = []
    for i in range(messages):
        t0 = time.monotonic_ns()
        while not client.send(_STAMP.pack(t0)):
            replica.do_work()
        target = machine.count + 1
        while machine.count < target:
            replica.do_work()
        latencies.append(time.monotonic_ns() - t0)
    # Throughput: as fast as the ingress takes them, until all are applied.
    count = messages * 4
    want = machine.count + count
    payload = _STAMP.pack(0)
    t0 = time.monotonic_ns()
    sent = 0
    while machine.count < want:
        while sent < count and client.send(payload):
            sent += 1
        replica.do_work(1024)
    elapsed = time.monotonic_ns() - t0
    del base
    return {**_percentiles(latencies), "commands_per_s": round(count / (elapsed / 1e9))}


def _one_host(root: Path, messages: int, spin: bool, ctx) -> dict:
    dir = lockstep.transport.mapped.resolve_dir(root / "one-host")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_sequencer, args=(str(dir), {}, spin, ready, stop))
    proc.start()
    if not ready.wait(30):
        raise SystemExit("the sequencer did not start")
    machine = Counting()
    client = lockstep.SequencerClient(dir)
    replica = Replica(machine, dir, name="bench", hash_every=0, send_outputs=False)
    try:
        return _measure(client, replica, machine, messages)
    finally:
        replica.close()
        client.close()
        stop.set()
        proc.join(10)


def _two_hosts(root: Path, messages: int, spin: bool, network: str, ctx, driver_idle: str) -> dict:
    pair = None
    if network == "netns":
        why = netns_unavailable()
        if why:
            raise SystemExit(f"--network netns: {why}")
        pair = NetnsPair()
    drivers = []
    try:
        a = pair.address_a if pair else "127.0.0.1"
        b = pair.address_b if pair else "127.0.0.1"
        env = {"AERON_SHARED_IDLE_STRATEGY": driver_idle, "AERON_RCV_INITIAL_WINDOW_LENGTH": "2m", "AERON_SOCKET_SO_RCVBUF": "2m", "AERON_SOCKET_SO_SNDBUF": "2m"}
        for tag, ns in (("host1", pair.a if pair else None), ("host2", pair.b if pair else None)):
            drivers.append(MediaDriver(root / f"aeron-{tag}", env=env, defaults=SMALL_MACHINE_DEFAULTS,
                                       command_prefix=pair.exec_prefix(ns) if pair and ns else ()))
        log_channel, ingress_channel = f"aeron:udp?endpoint={b}:40300", f"aeron:udp?endpoint={a}:40301"
        dir1 = lockstep.transport.mapped.resolve_dir(root / "host1")
        dir2 = lockstep.transport.mapped.resolve_dir(root / "host2")
        ready, stop = ctx.Event(), ctx.Event()
        kwargs = {"log_channel": log_channel, "ingress_channel": ingress_channel, "aeron_dir": str(drivers[0].dir)}
        proc = ctx.Process(target=_sequencer, args=(str(dir1), kwargs, spin, ready, stop))
        proc.start()
        if not ready.wait(30):
            raise SystemExit("the sequencer did not start")
        machine = Counting()
        replica = Replica(machine, dir2, name="bench", hash_every=0, send_outputs=False, channel=log_channel,
                          aeron_dir=drivers[1].dir)
        client = lockstep.SequencerClient(channel=ingress_channel, aeron_dir=drivers[1].dir)
        try:
            result = _measure(client, replica, machine, messages)
        finally:
            client.close()
            replica.close()
            stop.set()
            proc.join(10)
        return {**result, "network": "netns + veth" if pair else "loopback"}
    finally:
        for d in drivers:
            d.close()
        if pair:
            pair.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="latency samples (throughput: 4x as many)")
    parser.add_argument("--network", choices=("netns", "loopback"), default=None,
                        help="two hosts over namespaces + veth (default as root) or loopback")
    parser.add_argument("--spin", action="store_true", help="the sequencer busy-spins (default: its idle strategy)")
    parser.add_argument("--driver-idle", default="backoff",
                        help="the drivers' AERON_SHARED_IDLE_STRATEGY (backoff: parks up to 1 ms; noop: spins)")
    args = parser.parse_args()
    network = args.network or ("netns" if netns_unavailable() is None else "loopback")
    ctx = multiprocessing.get_context("spawn")
    root = Path(tempfile.mkdtemp(prefix="lockstep-hosts-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        one = _one_host(root, args.messages, args.spin, ctx)
        two = _two_hosts(root, args.messages, args.spin, network, ctx, args.driver_idle)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = {"latency_p50": round(two["p50_us"] / one["p50_us"], 2),
             "commands_per_s": round(two["commands_per_s"] / one["commands_per_s"], 3)}
    print(json.dumps({"one_host": one, "two_hosts": two, "two_over_one": ratio, "messages": args.messages,
                      "sequencer_idle": "spin" if args.spin else "default",
                      "driver_idle": args.driver_idle, "cpus": os.cpu_count(),
                      "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    sys.exit(main())
