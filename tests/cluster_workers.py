"""Functions run in real worker processes (spawned interpreters) by the sequencer and
cluster tests, and the command streams they share with the test.

Client `i` sends `commands(i, n)`: a reproducible stream of order-book commands (its
order ids carry the client's index, so clients never collide). Workers report through a
multiprocessing queue as `(kind, name, payload)` tuples and bump a shared progress slot
so the test can tell a slow run from a stuck one. Every loop backs off with
`BackoffIdleStrategy` when it has nothing to do (the test machine has 2 cores) and gives up
with an error after `STALL_S` seconds without progress.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal
import sys
import time
import traceback

import lockstep
from lockstep.cluster.replica import Replica
from lockstep.examples.orderbook import BUY, SELL, OrderBook, cancel, new_order

STALL_S = 60.0
CLIENT_ORIGIN_BASE = 1000  # client i sends with origin id CLIENT_ORIGIN_BASE + i


def sender(client, commands: list[bytes]):
    """A duty-cycle step: send the next of `commands` while the ingress takes them; returns
    how many went this time (0 when all are sent or the ingress is full)."""
    sent = [0]

    def send() -> int:
        k = start = sent[0]
        while k < len(commands) and client.send(commands[k]):
            k += 1
        sent[0] = k
        return k - start

    return send


def commands(client: int, count: int, *, seed: int = 0):
    """`count` commands of client `client`: mostly NewOrders around price 100 (so they
    cross and fill), some Cancels of the client's own earlier orders."""
    rng = random.Random(seed * 1_000_003 + client)
    base = (client + 1) << 32
    for n in range(count):
        if n > 10 and rng.random() < 0.15:
            yield cancel(base + rng.randrange(n))
        else:
            yield new_order(base + n, BUY if rng.random() < 0.5 else SELL, 100 + rng.randint(-4, 4),
                            rng.randint(1, 10))


def _guarded(fn, public_name):
    """Run `fn(queue, name, ...)`, reporting an exception to the test before exiting."""
    def wrapper(queue, name, *args, **kwargs):
        # A stalled test sends SIGUSR1 to its workers: each prints every thread's stack.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            fn(queue, name, *args, **kwargs)
        except BaseException:
            queue.put(("error", name, traceback.format_exc()))
            raise
    wrapper.__name__ = wrapper.__qualname__ = public_name  # spawn pickles it by this name
    return wrapper


class StopFlag:
    """Tells worker processes to stop, and survives one of them being SIGKILLed: one shared int
    read and written without a lock. (multiprocessing.Event takes a lock in is_set(); a worker
    killed while holding it leaves every other process that asks blocked for good.)"""

    def __init__(self, mp) -> None:
        self._value = mp.RawValue("i", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return self._value.value != 0

    __call__ = is_set  # as run_agent's stop


class _Stall:
    """Raises when `moved()` has not been called for STALL_S seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.last = time.monotonic()

    def moved(self) -> None:
        self.last = time.monotonic()

    def check(self, detail: str = "") -> None:
        if time.monotonic() - self.last > STALL_S:
            raise AssertionError(f"{self.what}: no progress for {STALL_S} s {detail}")


# -- sequencer ------------------------------------------------------------------------------

def _sequencer(queue, name, dir, stop, progress=None, slot=0, **kwargs):
    seq = lockstep.Sequencer(dir, **kwargs)
    queue.put(("started", name, {"pid": os.getpid(), "last_sequence": seq.last_sequence}))
    idle = lockstep.BackoffIdleStrategy()
    while not stop.is_set():
        n = seq.do_work()
        if n and progress is not None:
            progress[slot] = seq.last_sequence
        idle.idle(n)
    result = {"last_sequence": seq.last_sequence, "sequenced": seq.sequenced, "duplicates": seq.duplicates,
              "rejected": seq.rejected}
    seq.close()
    queue.put(("done", name, result))


run_sequencer = _guarded(_sequencer, "run_sequencer")


# -- clients --------------------------------------------------------------------------------

def _client(queue, name, dir, client, count, progress=None, slot=0, seed=0, **client_kwargs):
    """Send `commands(client, count)` with origin id CLIENT_ORIGIN_BASE + client; report the
    first origin sequence (command k went as first + k) and how often the ring was full.
    `client_kwargs` (channel=, aeron_dir=): a client on another host."""
    sender = lockstep.SequencerClient(dir, origin_id=CLIENT_ORIGIN_BASE + client, **client_kwargs)
    first = sender.next_origin_sequence
    idle = lockstep.BackoffIdleStrategy()
    full = 0
    stall = _Stall(f"client {client}")
    for k, command in enumerate(commands(client, count, seed=seed)):
        while not sender.send(command):
            full += 1
            stall.check(f"(ingress full after {k} of {count} commands)")
            idle.idle(0)
        idle.reset()
        stall.moved()
        if progress is not None and k % 256 == 0:
            progress[slot] = k
    if progress is not None:
        progress[slot] = count
    sender.close()
    queue.put(("done", name, {"client": client, "origin_id": CLIENT_ORIGIN_BASE + client, "first": first,
                              "count": count, "full": full}))


run_client = _guarded(_client, "run_client")


# -- replicas -------------------------------------------------------------------------------

def book_done(book: OrderBook, total_commands: int) -> bool:
    """All client commands applied and every fill they caused is back in the log: nothing
    more will be sequenced (the same log point on every replica)."""
    return book.commands >= total_commands and book.fills_sequenced == book.fills_sent


def _replica(queue, name, dir, total_commands, progress=None, slot=0, **kwargs):
    """Host an OrderBook until `book_done`; then flush its own outputs, record a final hash
    and report the state."""
    book = OrderBook()
    replica = Replica(book, dir, name=name, **kwargs)
    restored = replica.restored_from
    queue.put(("started", name, {"restored_sequence": restored.sequence if restored else 0}))
    idle = lockstep.BackoffIdleStrategy()
    stall = _Stall(f"replica {name}")
    while not book_done(book, total_commands):
        n = replica.do_work()
        if n:
            stall.moved()
            if progress is not None:
                progress[slot] = replica.last_sequence
        else:
            stall.check(f"(at sequence {replica.last_sequence}, {book.commands} of {total_commands} commands, "
                        f"fills {book.fills_sequenced}/{book.fills_sent}, {replica.pending_outputs} outputs pending)")
        idle.idle(n)
    finish_replica(queue, name, replica, book, stall, idle)


def finish_replica(queue, name, replica, book, stall, idle) -> None:
    """A replica worker's end: flush its queued outputs (copies of ones already sequenced are
    duplicates, but sent), record a final hash, close, report the state as "done"."""
    while replica.pending_outputs:
        sent = replica.flush()
        if sent:
            stall.moved()
        stall.check(f"({replica.pending_outputs} outputs still pending)")
        idle.idle(sent)
    replica.record_hash()
    restored = replica.restored_from
    result = {"hash": book.state_hash().hex(), "last_sequence": replica.last_sequence,
              "last_position": replica.last_position, "applied": replica.applied,
              "restored_sequence": restored.sequence if restored else 0, "fills": book.fills_sent,
              "commands": book.commands, "hashes_file": str(replica.hashes_path)}
    replica.close()
    queue.put(("done", name, result))


run_replica = _guarded(_replica, "run_replica")


# -- a subscriber that never reads ----------------------------------------------------------

def _idle_subscriber(queue, name, dir, stream_id):
    """Attach to the log (start: earliest) and never poll: it holds the publisher back."""
    sub = lockstep.Subscription(stream_id, dir, start="earliest", join="earliest")
    while not sub.image_count:
        sub.discover()
        time.sleep(0.01)
    queue.put(("started", name, {"images": sub.image_count}))
    while True:
        time.sleep(1)


run_idle_subscriber = _guarded(_idle_subscriber, "run_idle_subscriber")


# == the test's side ========================================================================

class LogCollector:
    """Reads the sequenced log live, from its start, in the test process: a subscriber like
    any other (it holds the sequencer back if it falls a window behind)."""

    def __init__(self, dir, stream_id: int = 100) -> None:
        from lockstep.cluster.sequencer import SEQUENCED_HEADER
        self._unpack = SEQUENCED_HEADER.unpack_from
        self.sub = lockstep.Subscription(stream_id, dir, start="earliest", join="earliest")
        self.sequences: list[int] = []
        self.timestamps: list[int] = []
        self.origins: list[int] = []
        self.origin_sequences: list[int] = []
        self.commands: list[bytes] = []
        self.positions: list[int] = []

    def _handler(self, data, header) -> None:
        sequence, timestamp, origin_sequence, origin_id, _ = self._unpack(data)
        self.sequences.append(sequence)
        self.timestamps.append(timestamp)
        self.origins.append(origin_id)
        self.origin_sequences.append(origin_sequence)
        self.commands.append(bytes(data[32:]))
        self.positions.append(header.position)

    def poll(self) -> int:
        return self.sub.poll(self._handler, 4096)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def last_sequence(self) -> int:
        return self.sequences[-1] if self.sequences else 0

    def by_origin(self, origin_id: int) -> tuple[list[int], list[bytes], list[int]]:
        """(origin sequences, commands, log sequences) of one origin, in log order."""
        idx = [i for i, o in enumerate(self.origins) if o == origin_id]
        return ([self.origin_sequences[i] for i in idx], [self.commands[i] for i in idx],
                [self.sequences[i] for i in idx])

    def close(self) -> None:
        self.sub.close()


class Harness:
    """Starts workers, collects their reports, and waits with a no-progress guard: the wait
    fails when neither the shared progress slots nor `poll()` moved for STALL_S seconds,
    or at once when a worker reports an error or dies unexpectedly."""

    def __init__(self, mp, procs, slots: int = 16) -> None:
        self.mp = mp
        self.procs = procs
        self.queue = mp.Queue()
        self.progress = mp.Array("q", slots, lock=False)
        self.reports: dict[str, dict[str, dict]] = {}
        self.workers: dict[str, object] = {}
        self.expect_dead: set[str] = set()

    def stop_flag(self) -> StopFlag:
        return StopFlag(self.mp)

    def start(self, target, name: str, *args, **kwargs):
        self.reports.pop(name, None)
        p = self.procs.start(target, self.queue, name, *args, **kwargs)
        self.workers[name] = p
        self.expect_dead.discard(name)
        return p

    def kill(self, name: str) -> None:
        self.expect_dead.add(name)
        self.procs.kill(self.workers[name])

    def dump_stacks(self) -> None:
        """Have every live worker print its threads' stacks to stderr (for a stall's diagnosis)."""
        for name, p in self.workers.items():
            if p.exitcode is None and p.pid:
                print(f"\n--- stacks of worker {name} (pid {p.pid}) ---", file=sys.stderr, flush=True)
                try:
                    os.kill(p.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
                time.sleep(0.2)

    def report(self, name: str, kind: str = "done") -> dict | None:
        return self.reports.get(name, {}).get(kind)

    def _drain_queue(self) -> bool:
        import queue as queue_module
        got = False
        while True:
            try:
                kind, name, payload = self.queue.get_nowait()
            except queue_module.Empty:
                return got
            got = True
            if kind == "error":
                raise AssertionError(f"worker {name} failed:\n{payload}")
            self.reports.setdefault(name, {})[kind] = payload

    def wait(self, condition, what: str, *, poll=None, detail=None) -> None:
        """Until `condition()`; `poll()` (e.g. a LogCollector's) is called meanwhile."""
        idle = lockstep.BackoffIdleStrategy(max_park_ns=2_000_000)
        last = tuple(self.progress)
        last_move = time.monotonic()
        while True:
            moved = self._drain_queue()
            if condition():
                return
            work = poll() if poll is not None else 0
            now = tuple(self.progress)
            if work or moved or now != last:
                last, last_move = now, time.monotonic()
            elif time.monotonic() - last_move > STALL_S:
                self.dump_stacks()
                raise AssertionError(f"waiting for {what}: no progress for {STALL_S} s; progress {list(now)}; "
                                     f"{detail() if detail else ''}")
            for name, p in self.workers.items():
                if name not in self.expect_dead and p.exitcode not in (None, 0):
                    self._drain_queue()
                    raise AssertionError(f"worker {name} died with exit code {p.exitcode} while waiting for {what}")
            idle.idle(work)

    def wait_reports(self, names, kind: str = "done", *, poll=None) -> list[dict]:
        names = list(names)
        self.wait(lambda: all(self.report(n, kind) is not None for n in names),
                  f"{kind} from {', '.join(names)}", poll=poll,
                  detail=lambda: f"have {sorted((n, list(k)) for n, k in self.reports.items())}")
        return [self.report(n, kind) for n in names]
