"""Replicated state machines on the sequenced log, with real processes and mapped files:
outputs sequenced once however many replicas send them, replicas that crash or join late
and still agree, snapshot files that are atomic and verified, the determinism check, offline
replay, and gap detection. Guards are no-progress timeouts, never speed limits."""

from __future__ import annotations

import os
import shutil
import struct
import time

import pytest
from hypothesis import given, settings, strategies as st

import cluster_workers as cw
from lockstep import (BackoffIdleStrategy, FileFormatError, LockstepError, Replica, Sequencer, SequencerClient,
                      Subscription, check_determinism, first_divergence)
from lockstep.cluster.replica import (Context, Snapshot, _default_origin, latest_snapshot, log_messages, read_hashes,
                              read_snapshot, replay, write_snapshot)
from lockstep.examples.orderbook import (BUY, SELL, Cancel, Fill, NewOrder, OrderBook, SCHEMA, cancel,
                                         new_order)
from lockstep.transport.reader import LogReader
from lockstep.cluster.sequencer import SEQUENCED_HEADER
from lockstep.transport.stream_files import stream_logs

STREAM = 100
BOOK_ORIGIN = _default_origin(OrderBook())


def _sequenced(sequence: int, command: bytes, *, timestamp_ns: int | None = None, origin_id: int = 1,
               origin_sequence: int | None = None) -> bytes:
    """A sequenced-log payload as the sequencer writes it."""
    return SEQUENCED_HEADER.pack(sequence, 1_700_000_000_000_000_000 + sequence * 1000 if timestamp_ns is None
                           else timestamp_ns, sequence if origin_sequence is None else origin_sequence,
                           origin_id, 0) + command


def _log_messages(dir) -> list[tuple[bytes, int]]:
    """The whole retained sequenced log of `dir` as (payload, position) pairs."""
    [path] = stream_logs(dir, STREAM)
    with LogReader(path) as reader:
        return list(log_messages(reader))


# -- outputs -----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_replicas_send_the_same_outputs_each_is_sequenced_once(lsdir, procs, mp):
    """Two OrderBook replica processes send every fill; the sequencer (here) keeps exactly
    one copy of each and counts the other as a duplicate. Each fill's origin sequence names
    the log sequence of the order that caused it."""
    count = 5_000
    h = cw.Harness(mp, procs)
    seq = Sequencer(lsdir)
    log = cw.LogCollector(lsdir)
    for i, name in enumerate(("a", "b")):
        h.start(cw.run_replica, name, lsdir, count, h.progress, i)
    h.wait_reports(["a", "b"], "started")
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    send = cw.sender(client, list(cw.commands(0, count, seed=1)))

    def step() -> int:
        return send() + seq.do_work() + log.poll()

    results = h.wait_reports(["a", "b"], poll=step)
    h.wait(lambda: seq.ingress.size() == 0 and log.last_sequence == seq.last_sequence, "the ingress drained",
           poll=step)
    fills = results[0]["fills"]
    assert fills > 100 and results[1]["fills"] == fills
    assert results[0]["hash"] == results[1]["hash"]
    assert seq.duplicates == fills, "each fill: one copy sequenced, the other replica's dropped"
    origin_sequences, commands, sequences = log.by_origin(BOOK_ORIGIN)
    assert len(commands) == fills and len(set(origin_sequences)) == fills
    assert origin_sequences == sorted(origin_sequences)
    by_sequence = dict(zip(log.sequences, log.commands))
    for origin_sequence, command in zip(origin_sequences, commands):
        fill = Fill.decode(command)
        cause = SCHEMA.decode(by_sequence[origin_sequence >> 16])  # the order that traded
        assert cause.type is NewOrder and int(cause.order_id) == int(fill.taker_id)
    assert [int(Fill.decode(c).match_id) for c in commands] == list(range(1, fills + 1))
    assert log.sequences == list(range(1, len(log) + 1))
    assert len(log) == count + fills == results[0]["last_sequence"]
    log.close()
    client.close()
    seq.close()


# -- crashes and late joiners ------------------------------------------------------------

def _cluster(h, lsdir, replicas, *, clients=2, per_client=12_000, **replica_kwargs):
    """A sequencer process, replica processes (slots 1..) and client processes (slots 10..)."""
    stop = h.stop_flag()
    h.start(cw.run_sequencer, "sequencer", lsdir, stop, h.progress, 0)
    h.wait_reports(["sequencer"], "started")
    total = clients * per_client
    for i, name in enumerate(replicas):
        h.start(cw.run_replica, name, lsdir, total, h.progress, 1 + i, **replica_kwargs.get(name, {}))
    h.wait_reports(replicas, "started")
    for i in range(clients):
        h.start(cw.run_client, f"c{i}", lsdir, i, per_client, h.progress, 10 + i)
    return stop, total


def _snapshots(dir, name) -> list:
    return sorted(p for p in dir.glob(f"{name}-*.snap"))


def _check_agreement(results: list[dict], lsdir) -> None:
    assert len({r["hash"] for r in results}) == 1, f"replica hashes differ: {results}"
    assert len({(r["last_sequence"], r["last_position"]) for r in results}) == 1
    assert first_divergence(*[r["hashes_file"] for r in results]) is None
    # The log replayed offline reaches the same state.
    messages = _log_messages(lsdir)
    runner = replay(OrderBook(), messages)
    assert runner.last_sequence == results[0]["last_sequence"]
    assert runner.machine.state_hash().hex() == results[0]["hash"]


@pytest.mark.slow
def test_replica_sigkilled_mid_run_restarts_from_its_last_snapshot_and_agrees(lsdir, procs, mp):
    h = cw.Harness(mp, procs)
    replicas = ["r0", "r1", "r2"]
    every = {"hash_every": 500, "snapshot_every": 2000}
    stop, total = _cluster(h, lsdir, replicas, **{n: every for n in replicas})
    h.wait(lambda: h.progress[3] >= 6000 and _snapshots(lsdir, "r2"), "r2 past its first snapshots")
    h.kill("r2")
    newest = latest_snapshot(lsdir, "r2")
    assert newest is not None and newest.sequence > 0
    h.start(cw.run_replica, "r2", lsdir, total, h.progress, 3, **every)
    started = h.wait_reports(["r2"], "started")[0]
    assert started["restored_sequence"] == newest.sequence
    results = h.wait_reports(replicas)
    assert results[2]["restored_sequence"] == started["restored_sequence"]
    assert results[2]["applied"] == results[2]["last_sequence"] - started["restored_sequence"]
    stop.set()
    h.wait_reports(["sequencer"])
    _check_agreement(results, lsdir)
    # The hashes the restarted replica recorded before and after its crash match the others'.
    r0 = {p: hh for p, _, hh in read_hashes(results[0]["hashes_file"])}
    r2 = read_hashes(results[2]["hashes_file"])
    assert len(r2) > 10 and all(r0[p] == hh for p, _, hh in r2)
    # Replay offline up to a recorded position gives the hash recorded there.
    position, sequence, recorded = r2[len(r2) // 2]
    runner = replay(OrderBook(), _log_messages(lsdir), until=position)
    assert runner.last_sequence == sequence and runner.machine.state_hash() == recorded


@pytest.mark.slow
def test_replica_joining_late_from_another_replicas_snapshot_agrees(lsdir, procs, mp, tmp_path):
    h = cw.Harness(mp, procs)
    stop, total = _cluster(h, lsdir, ["r0", "r1"], r0={"snapshot_every": 2000})
    h.wait(lambda: (s := latest_snapshot(lsdir, "r0")) is not None and s.sequence >= 6000,
           "a snapshot of r0 past sequence 6000")
    donor = latest_snapshot(lsdir, "r0")
    snapdir = tmp_path / "late-snapshots"
    snapdir.mkdir(mode=0o700)
    shutil.copyfile(donor.path, snapdir / donor.path.name.replace("r0-", "late-"))
    h.start(cw.run_replica, "late", lsdir, total, h.progress, 3, snapshot_dir=snapdir)
    started = h.wait_reports(["late"], "started")[0]
    assert started["restored_sequence"] == donor.sequence
    results = h.wait_reports(["r0", "r1", "late"])
    assert results[2]["applied"] == results[2]["last_sequence"] - donor.sequence
    stop.set()
    h.wait_reports(["sequencer"])
    _check_agreement(results, lsdir)


def test_a_snapshot_waits_for_its_outputs_so_a_crash_loses_none(lsdir):
    """A replica that snapshots while outputs are still queued and then crashes would never
    send them again (the restored state is past them); once it sends later outputs, a
    lagging replica's copies of the lost ones look like duplicates and are dropped. So a
    snapshot waits until the outputs it covers are in the ingress."""
    seq = Sequencer(lsdir)
    client = SequencerClient(lsdir, origin_id=cw.CLIENT_ORIGIN_BASE)
    log = cw.LogCollector(lsdir)
    for command in (new_order(1, SELL, 100, 5), new_order(2, BUY, 100, 1),    # 2: fill
                    new_order(3, SELL, 100, 1), new_order(4, BUY, 100, 1)):   # 4: fill
        assert client.send(command)

    def drive(until) -> None:
        idle = BackoffIdleStrategy()
        last_move = time.monotonic()
        while not until():
            work = seq.do_work() + log.poll()
            if work:
                last_move = time.monotonic()
            assert time.monotonic() - last_move < cw.STALL_S, "no progress"
            idle.idle(work)

    drive(lambda: log.last_sequence == 4)
    fast = Replica(OrderBook(), lsdir, name="fast", snapshot_every=2)
    assert fast.subscription.poll(fast._on_fragment, 2) == 2  # applies 1, 2; its fill is still queued
    assert fast.pending_outputs == 1
    fast.close()  # crashes: the queued fill is gone with it
    fast = Replica(OrderBook(), lsdir, name="fast", snapshot_every=2)
    drive(lambda: fast.do_work() == 0 and fast.last_sequence >= 4 and not fast.pending_outputs)
    slow = Replica(OrderBook(), lsdir, name="slow")
    drive(lambda: slow.do_work() == 0 and slow.last_sequence >= 4 and not slow.pending_outputs
          and seq.ingress.size() == 0 and log.last_sequence == seq.last_sequence)
    origin_sequences, commands, _ = log.by_origin(BOOK_ORIGIN)
    assert origin_sequences == [2 << 16, 4 << 16], "each fill sequenced exactly once"
    assert slow.machine.fills_sequenced == slow.machine.fills_sent == 2
    for r in (fast, slow):
        r.close()
    log.close()
    client.close()
    seq.close()


def test_a_torn_hash_record_is_dropped_on_restart(lsdir):
    good = struct.pack("<qq16s", 64, 1, b"h" * 16)
    (lsdir / "torn.hashes").write_bytes(good + b"\x01" * 9)
    with Replica(OrderBook(), lsdir, name="torn", send_outputs=False) as replica:
        replica.record_hash()
    records = read_hashes(lsdir / "torn.hashes")
    assert records[0] == (64, 1, b"h" * 16) and records[1] == (0, 0, OrderBook().state_hash())
    assert len(records) == 2


# -- snapshot files ----------------------------------------------------------------------

def test_snapshot_write_is_atomic_and_checksummed(tmp_path):
    snap = Snapshot(position=4096, sequence=17, timestamp_ns=123, data=b"state" * 100)
    path = write_snapshot(tmp_path, "book", snap)
    assert path.name == f"book-{4096:020d}.snap"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temp file left behind"
    back = read_snapshot(path)
    assert (back.position, back.sequence, back.timestamp_ns, back.data) == (4096, 17, 123, snap.data)
    # A writer that died before its rename leaves only a hidden temp file: never read as a snapshot.
    (tmp_path / f".book-{8192:020d}.snap.999.tmp").write_bytes(path.read_bytes()[:40])
    assert latest_snapshot(tmp_path, "book").position == 4096


@pytest.mark.parametrize("damage", ["truncated_data", "truncated_header", "flipped_byte", "bad_magic", "empty"])
def test_damaged_snapshot_is_rejected_and_the_previous_good_one_used(tmp_path, damage):
    good = write_snapshot(tmp_path, "book", Snapshot(1024, 5, 1, b"old state"))
    bad = write_snapshot(tmp_path, "book", Snapshot(2048, 9, 2, b"new state, damaged below"))
    raw = bytearray(bad.read_bytes())
    if damage == "truncated_data":
        raw = raw[:-3]
    elif damage == "truncated_header":
        raw = raw[:20]
    elif damage == "flipped_byte":
        raw[-5] ^= 0x40
    elif damage == "bad_magic":
        raw[0:8] = b"NOTSNAP!"
    else:
        raw = bytearray()
    bad.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError) as e:
        read_snapshot(bad)
    assert str(bad) in str(e.value)
    newest = latest_snapshot(tmp_path, "book")
    assert newest.path == good and newest.data == b"old state"


def test_replica_restores_from_the_newest_good_snapshot(lsdir):
    book = OrderBook()
    ctx = Context(0)
    book.add(ctx, 1, BUY, 99, 5)
    write_snapshot(lsdir, "rb", Snapshot(0, 0, 0, book.snapshot()))
    corrupt = write_snapshot(lsdir, "rb", Snapshot(64, 1, 0, b"x"))
    corrupt.write_bytes(corrupt.read_bytes()[:-1])
    with Replica(OrderBook(), lsdir, name="rb", send_outputs=False) as replica:
        assert replica.restored_from.position == 0
        assert replica.machine.state_hash() == book.state_hash()


# -- determinism -------------------------------------------------------------------------

class WallClockBook(OrderBook):
    """A broken machine: on a Cancel it notes the wall clock into its state."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled_at = 0

    def on_message(self, ctx, command) -> None:
        if SCHEMA.decode(command).type is Cancel:
            self.cancelled_at = time.time_ns()  # wrong: time must come from ctx.timestamp_ns
        super().on_message(ctx, command)

    def snapshot(self) -> bytes:
        return super().snapshot() + struct.pack("<q", self.cancelled_at)


def _small_log(lsdir, count: int = 300) -> list[tuple[bytes, int]]:
    """`count` client commands through a real sequencer into the log; its messages."""
    seq = Sequencer(lsdir)
    client = SequencerClient(lsdir, origin_id=1)
    with Subscription(STREAM, lsdir, start="earliest") as sub:
        got = 0

        def handler(data, header):
            nonlocal got
            got += 1
        idle = BackoffIdleStrategy()
        for command in cw.commands(0, count, seed=2):
            while not client.send(command):
                idle.idle(seq.do_work())
        while got < count:
            idle.idle(seq.do_work() + sub.poll(handler, 1024))
    client.close()
    seq.close()
    return _log_messages(lsdir)


def test_check_determinism_catches_a_wall_clock_reader_at_its_first_clock_read(lsdir):
    messages = _small_log(lsdir)
    assert check_determinism(OrderBook, messages) is None
    first_cancel = next((seq, pos) for payload, pos in messages
                        for seq in [SEQUENCED_HEADER.unpack_from(payload)[0]]
                        if SCHEMA.decode(payload[32:]).type is Cancel)
    found = check_determinism(WallClockBook, messages)
    assert found is not None, "a machine that reads the wall clock must be caught"
    assert (found.sequence, found.position) == first_cancel
    assert found.hashes[0] != found.hashes[1]


def test_replay_and_live_agree_and_a_gap_is_an_error(lsdir):
    messages = _small_log(lsdir, 200)
    live = OrderBook()
    with Replica(live, lsdir, name="live", send_outputs=False) as replica:
        idle = BackoffIdleStrategy()
        while replica.last_sequence < 200:
            idle.idle(replica.do_work())
    assert replay(OrderBook(), messages).machine.state_hash() == live.state_hash()

    gappy = messages[:50] + messages[51:]
    with pytest.raises(LockstepError, match="sequence gap: expected 51, found 52"):
        replay(OrderBook(), gappy)
    with Replica(OrderBook(), lsdir, name="gap", send_outputs=False, restore=False) as replica:
        replica.subscription.close()  # fed by hand below
        for payload, position in messages[:3]:
            replica.apply(payload, position)
        replica.apply(*messages[2])  # a repeat is skipped
        assert replica.last_sequence == 3
        with pytest.raises(LockstepError, match="gap"):
            replica.apply(*messages[4])


# -- the order book itself ---------------------------------------------------------------

def test_order_book_matches_by_price_then_time():
    book = OrderBook()
    ctx = Context(BOOK_ORIGIN)
    sent = ctx._outputs

    def apply(sequence, command):
        ctx.sequence, ctx.timestamp_ns = sequence, 1000 + sequence
        book.on_message(ctx, command)

    apply(1, new_order(1, SELL, 101, 5))
    apply(2, new_order(2, SELL, 100, 5))
    apply(3, new_order(3, SELL, 100, 5))   # behind order 2 at the same price
    apply(4, new_order(4, BUY, 99, 1))
    assert (book.best_bid(), book.best_ask()) == (99, 100)
    apply(5, new_order(5, BUY, 101, 12))   # takes 2, then 3, then 2 of 1
    fills = [Fill.decode(c).to_dict() for _, c in sent]
    assert [(f["maker_id"], f["price"], f["qty"]) for f in fills] == [(2, 100, 5), (3, 100, 5), (1, 101, 2)]
    assert [f["match_id"] for f in fills] == [1, 2, 3] and {f["timestamp_ns"] for f in fills} == {1005}
    assert [o for o, _ in sent] == [(5 << 16) | k for k in range(3)]  # origin sequences from the log
    apply(6, cancel(1))
    apply(7, cancel(1))                    # already gone: ignored
    apply(8, b"not a command")
    assert (book.best_bid(), book.best_ask(), book.ignored, book.commands) == (99, None, 2, 7)
    apply(9, sent[0][1])                   # a fill coming back through the log
    assert (book.fills_sent, book.fills_sequenced, book.volume) == (3, 1, 12)


_command = st.one_of(
    st.builds(new_order, st.integers(1, 40), st.sampled_from([BUY, SELL]), st.integers(95, 105), st.integers(1, 8)),
    st.builds(cancel, st.integers(1, 40)),
)


def _run(book: OrderBook, commands, start: int) -> list[tuple[bytes, list]]:
    """Apply commands as sequences start, start+1, ...; (hash, outputs) after each."""
    ctx = Context(BOOK_ORIGIN)
    out = []
    for i, command in enumerate(commands):
        ctx.sequence, ctx.timestamp_ns = start + i, 10_000 + 7 * (start + i)
        book.on_message(ctx, command)
        out.append((book.state_hash(), list(ctx._outputs)))
        ctx._outputs.clear()
    return out


@settings(max_examples=60, deadline=None)
@given(commands=st.lists(_command, min_size=1, max_size=60), data=st.data())
def test_order_book_snapshot_restore_round_trip_at_any_point(commands, data):
    cut = data.draw(st.integers(0, len(commands)), label="cut")
    straight = OrderBook()
    expected = _run(straight, commands, 1)
    first = OrderBook()
    _run(first, commands[:cut], 1)
    image = first.snapshot()
    resumed = OrderBook()
    resumed.restore(image)
    assert resumed.snapshot() == image
    assert _run(resumed, commands[cut:], cut + 1) == expected[cut:]
    assert resumed.snapshot() == straight.snapshot()
