"""Replica apply-loop benchmarks: a log of N sequenced messages (the sequencer's 32-byte header + an
8-byte command) applied by a Replica hosting a trivial machine, next to a bare
`LogReader.poll(handler)` over the same log, in the same run (both: poll with a handler, 256 a call;
the handler and `on_message` are both an empty Python method). Issue 15's target: the replica's rate
>= 0.5x the bare poll's, i.e. its time per message <= 2x. Each round starts a fresh reader / replica
at the start of the log; times are per message.

Rows: the bare poll; the same poll copying the command to bytes in the handler (what handing the
machine `bytes` costs, from Python); the Replica (the C apply loop); and the Python apply it falls
back to, called from a Python handler (slower than the Python loop it replaced: the replica's
counters now live in the C object, behind properties).

Run: pytest bench/test_bench_replica.py --benchmark-only   (see bench/README.md)
"""

from __future__ import annotations

import time

import pytest

from lockstep import Publication, Replica, StateMachine, Subscription
from lockstep.cluster.sequenced import DEFAULT_LOG_STREAM, SEQUENCED_HEADER, SEQUENCED_HEADER_LENGTH
from lockstep.transport.idle import BackoffIdleStrategy
from lockstep.transport.reader import LogReader
from lockstep.transport.stream_files import stream_logs

N = 50_000
TERM_LENGTH = 16 << 20  # the whole log in the first term: every round reads the same frames
ROUNDS = 5
COMMAND = bytes(8)


class Trivial(StateMachine):
    """A machine that does nothing with a command: what is left is the framework's share."""

    def on_message(self, ctx, command) -> None:
        pass

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def _noop(data, header) -> None:
    pass


def _copy_command(data, header) -> None:
    bytes(data[SEQUENCED_HEADER_LENGTH:])


@pytest.fixture
def log(lsdir):
    """`lsdir` with a sequenced log of N messages (sequences 1..N) on the log stream; its path."""
    pub = Publication(DEFAULT_LOG_STREAM, lsdir, exclusive=True, term_length=TERM_LENGTH)
    holder = Subscription(DEFAULT_LOG_STREAM, lsdir)  # connects the publication, keeps its window moving
    idle = BackoffIdleStrategy()
    deadline = time.monotonic() + 30
    while not (holder.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "no connection"
        idle.idle(0)
    for sequence in range(1, N + 1):
        payload = SEQUENCED_HEADER.pack(sequence, 1_700_000_000_000_000_000 + sequence, sequence, 7, 0) + COMMAND
        while pub.offer(payload) < 0:
            idle.idle(holder.poll(_noop, 4096))
    while holder.poll(_noop, 4096):
        pass
    holder.close()
    [path] = stream_logs(lsdir, DEFAULT_LOG_STREAM)
    yield path
    pub.close()


def _rounds(benchmark, make, run):
    """Time `run(obj)` over the whole log, a fresh `make(i)` each round (closed afterwards)."""
    made = []

    def setup():
        made.append(make(len(made)))
        return (made[-1],), {}

    benchmark.extra_info["messages_per_call"] = N
    try:
        return benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        for obj in made:
            obj.close()


def _read_all(poll, handler) -> int:
    total = 0
    while total < N:
        n = poll(handler, 256)
        assert n, f"the log ended after {total} of {N} messages"
        total += n
    return total


@pytest.mark.benchmark(group="replica apply")
def test_replica_reference_log_reader_poll(benchmark, log):
    """Reference: a bare LogReader.poll(handler, 256) over the log, an empty handler."""
    assert _rounds(benchmark, lambda i: LogReader(log), lambda reader: _read_all(reader.poll, _noop)) == N


@pytest.mark.benchmark(group="replica apply")
def test_replica_reference_poll_copying_command(benchmark, log):
    """The same poll, the handler copying the command to bytes (the cost of `bytes` for on_message)."""
    assert _rounds(benchmark, lambda i: LogReader(log), lambda reader: _read_all(reader.poll, _copy_command)) == N


def _replica(i: int) -> Replica:
    return Replica(Trivial(), name=f"bench{i}", hash_every=0, send_outputs=False, restore=False)


def _apply_all(replica: Replica) -> int:
    while replica.applied < N:
        assert replica.do_work(256), f"the log ended after {replica.applied} of {N} messages"
    return replica.last_sequence


@pytest.mark.benchmark(group="replica apply")
def test_replica_apply(benchmark, log):
    """A Replica of a trivial machine: do_work() polls the log into the C apply loop."""
    assert _rounds(benchmark, _replica, _apply_all) == N


@pytest.mark.benchmark(group="replica apply")
def test_replica_apply_python_loop(benchmark, log):
    """For contrast: the Python apply (the C loop's fallback) from a Python handler."""
    def run(replica: Replica) -> int:
        apply = Replica.apply.__get__(replica)  # the Python implementation, bound

        def handler(data, header) -> None:
            apply(data, header.position)

        _read_all(replica.subscription.poll, handler)
        return replica.last_sequence

    assert _rounds(benchmark, _replica, run) == N


@pytest.mark.benchmark(group="replica apply ratio")
def test_replica_apply_rate_vs_poll(benchmark, log, capsys):
    """Issue 15's figure, robust to a shared machine: rounds of the bare poll and of the Replica
    alternate (same log, same run); the rate ratio is best poll time / best replica time."""
    times: dict[str, list[float]] = {"poll": [], "replica": []}
    made: list = []

    def both() -> None:
        reader = LogReader(log)
        start = time.perf_counter()
        _read_all(reader.poll, _noop)
        times["poll"].append(time.perf_counter() - start)
        reader.close()
        replica = _replica(len(made))
        made.append(replica)
        start = time.perf_counter()
        _apply_all(replica)
        times["replica"].append(time.perf_counter() - start)
        replica.close()

    benchmark.extra_info["messages_per_call"] = 2 * N
    benchmark.pedantic(both, rounds=2 * ROUNDS, iterations=1)
    poll_ns, replica_ns = (min(times[k]) / N * 1e9 for k in ("poll", "replica"))
    ratio = poll_ns / replica_ns
    benchmark.extra_info.update(poll_ns_per_msg=poll_ns, replica_ns_per_msg=replica_ns, rate_vs_poll=ratio)
    with capsys.disabled():
        print(f"\nreplica apply vs bare poll(handler), same log, alternating rounds: poll {poll_ns:.0f} ns/msg, "
              f"replica {replica_ns:.0f} ns/msg: replica rate = {ratio:.2f}x the poll's (target >= 0.5x)")
