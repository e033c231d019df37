"""Worker processes of the fault-injection campaign: clients that record what the
sequencer accepted, and order-book replicas that run until told to stop. Both report
through the `cluster_workers.Harness` protocol and keep their state in shared arrays
that survive a SIGKILL of the worker (a single aligned int64 store each)."""

from __future__ import annotations

import itertools
import os
import time

import lockstep
from cluster_workers import _guarded, _Stall, commands, finish_replica
from lockstep.cluster.replica import Replica
from lockstep.examples.orderbook import OrderBook

ENDLESS = 1 << 62


def client_commands(origin_id: int, seed: int):
    """The endless, reproducible command stream of the client incarnation `origin_id`
    (its order ids carry the origin id, so incarnations never collide)."""
    return commands(origin_id, ENDLESS, seed=seed)


def expected_commands(origin_id: int, seed: int, count: int) -> list[bytes]:
    return list(itertools.islice(client_commands(origin_id, seed), count))


def _client(queue, name, dir, origin_id, accepted, slot, stop, rate, seed):
    """Send `client_commands(origin_id)` at about `rate` commands/s until `stop`, with a
    fresh SequencerClient. accepted[2*slot] = first origin sequence, accepted[2*slot+1] =
    how many send() accepted so far (command k went as first + k)."""
    sender = lockstep.SequencerClient(dir, origin_id=origin_id)
    accepted[2 * slot] = sender.next_origin_sequence
    accepted[2 * slot + 1] = 0
    queue.put(("started", name, {"pid": os.getpid(), "origin_id": origin_id, "first": sender.next_origin_sequence}))
    idle = lockstep.BackoffIdleStrategy()
    stall = _Stall(f"client {name}")
    source = client_commands(origin_id, seed)
    command = next(source)
    sent = 0
    t0 = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate) + 1
        work = 0
        while sent < due:
            if not sender.send(command):
                stall.check(f"(ingress full after {sent} commands)")
                break
            sent += 1
            accepted[2 * slot + 1] = sent
            command = next(source)
            work += 1
            stall.moved()
        if sent >= due:
            stall.moved()
        idle.idle(work)
    sender.close()
    queue.put(("done", name, {"origin_id": origin_id, "sent": sent}))


run_client = _guarded(_client, "run_client")
run_client.__module__ = __name__


def _replica(queue, name, dir, stop, progress, slot, pending, pending_slot, replica_name, **kwargs):
    """An OrderBook replica until `stop`; progress[slot] = last sequence applied,
    pending[pending_slot] = outputs not yet in the ingress. On stop: flush, record a final hash,
    report the state."""
    book = OrderBook()
    replica = Replica(book, dir, name=replica_name, **kwargs)
    restored = replica.restored_from
    progress[slot] = replica.last_sequence
    queue.put(("started", name, {"pid": os.getpid(), "restored_sequence": restored.sequence if restored else 0}))
    idle = lockstep.BackoffIdleStrategy()
    stall = _Stall(f"replica {name}")
    while not stop.is_set():
        n = replica.do_work()
        progress[slot] = replica.last_sequence
        pending[pending_slot] = replica.pending_outputs
        if n:
            stall.moved()
        idle.idle(n)
    finish_replica(queue, name, replica, book, stall, idle)


run_replica = _guarded(_replica, "run_replica")
run_replica.__module__ = __name__
