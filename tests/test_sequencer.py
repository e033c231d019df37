"""The sequencer across real processes and mapped files: many clients, one gap-free total
order, replicas that agree, back-pressure instead of loss, and a sequencer killed and
restarted without a gap or a repeat. Guards are no-progress timeouts, never speed limits."""

from __future__ import annotations

import json
import time

import pytest

import cluster_workers as cw
import lockstep
from helpers import run_python
from lockstep import (BackoffIdleStrategy, LockstepError, ManyToOneRing, Sequencer, SequencerClient, Subscription,
                      decode_sequenced, first_divergence)
from lockstep.cluster.replica import _default_origin
from lockstep.examples.orderbook import Fill, OrderBook
from lockstep.cluster.sequencer import INGRESS_FILE
from lockstep.transport.stream_files import stream_logs

STREAM = 100
BOOK_ORIGIN = _default_origin(OrderBook())


def check_clients_in_log(log: cw.LogCollector, client_reports: list[dict], seed: int = 0) -> None:
    """Every client's commands are in the log exactly once, in the client's order, intact."""
    for report in client_reports:
        origin_sequences, commands, _ = log.by_origin(report["origin_id"])
        first, count = report["first"], report["count"]
        assert len(origin_sequences) == count, (
            f"client {report['client']}: {len(origin_sequences)} commands in the log, sent {count}")
        assert origin_sequences == list(range(first, first + count)), (
            f"client {report['client']}: origin sequences not exactly first..first+{count - 1} in order")
        assert commands == list(cw.commands(report["client"], count, seed=seed)), (
            f"client {report['client']}: command bytes differ from what it sent")


def check_gap_free(log: cw.LogCollector) -> None:
    n = len(log)
    assert log.sequences == list(range(1, n + 1)), "log sequences are not 1..n without gap or repeat"


@pytest.mark.slow
def test_300k_commands_from_3_clients_sequenced_and_3_replicas_agree(lsdir, procs, mp):
    """3 client processes x 100k order-book commands -> a sequencer process -> the log, read
    by this test and by 3 OrderBook replica processes (whose fills go back through the
    sequencer). The log: gap-free from 1, every command once in its client's order, every
    fill once; the replicas: equal state hashes, no divergence in their hash files."""
    clients, per_client = 3, 100_000
    total = clients * per_client
    h = cw.Harness(mp, procs)
    stop = h.stop_flag()
    h.start(cw.run_sequencer, "sequencer", lsdir, stop, h.progress, 0)
    h.wait_reports(["sequencer"], "started")
    log = cw.LogCollector(lsdir)
    replicas = [f"r{i}" for i in range(3)]
    for i, name in enumerate(replicas):
        h.start(cw.run_replica, name, lsdir, total, h.progress, 1 + i, hash_every=5000)
    h.wait_reports(replicas, "started")
    for i in range(clients):
        h.start(cw.run_client, f"c{i}", lsdir, i, per_client, h.progress, 4 + i)

    client_reports = h.wait_reports([f"c{i}" for i in range(clients)], poll=log.poll)
    results = h.wait_reports(replicas, poll=log.poll)
    last = results[0]["last_sequence"]
    h.wait(lambda: log.last_sequence >= last, "the log collector to read the whole log", poll=log.poll)
    stop.set()
    seq_report = h.wait_reports(["sequencer"])[0]
    while log.poll():
        pass

    # The log: gap-free, nothing but the clients' commands and the machine's fills, each once.
    check_gap_free(log)
    check_clients_in_log(log, client_reports)
    fills = results[0]["fills"]
    fill_origin_sequences, fill_commands, _ = log.by_origin(BOOK_ORIGIN)
    assert len(fill_origin_sequences) == fills > 0
    assert fill_origin_sequences == sorted(set(fill_origin_sequences)), "a fill sequenced twice or out of order"
    assert [int(Fill.decode(c).match_id) for c in fill_commands] == list(range(1, fills + 1))
    assert set(log.origins) == {r["origin_id"] for r in client_reports} | {BOOK_ORIGIN}
    assert len(log) == total + fills == seq_report["last_sequence"] == last

    # The replicas agree.
    assert {r["hash"] for r in results} == {results[0]["hash"]}
    assert {(r["last_sequence"], r["last_position"], r["commands"]) for r in results} == {
        (last, log.positions[-1], total)}
    hash_files = [r["hashes_file"] for r in results]
    assert first_divergence(*hash_files) is None
    assert len(lockstep.cluster.read_hashes(hash_files[0])) >= len(log) // 5000

    # Throughput, as the sequencer stamped it: client commands per second of sequencer time
    # between the first and the last client command (clients, replicas and this reader all
    # share the machine's 2 cores; reported, not asserted).
    client_ts = [t for t, o in zip(log.timestamps, log.origins) if o != BOOK_ORIGIN]
    span_s = (client_ts[-1] - client_ts[0]) / 1e9
    print(f"\nsequencer: {total} client commands + {fills} fills in {span_s:.2f} s of sequencer time: "
          f"{total / span_s:,.0f} client commands/s, {len(log) / span_s:,.0f} log messages/s; "
          f"duplicates dropped {seq_report['duplicates']}; ingress full seen by clients "
          f"{[r['full'] for r in client_reports]}")
    log.close()


def _sequence_all(seq: Sequencer, sub: Subscription | None = None, *, until) -> None:
    """Drive `seq` (and drain `sub`) until `until()`, failing if nothing moves for a while."""
    idle = BackoffIdleStrategy()
    last_move = time.monotonic()
    while not until():
        work = seq.do_work() + (sub.poll(lambda d, h: None, 4096) if sub is not None else 0)
        if work:
            last_move = time.monotonic()
        assert time.monotonic() - last_move < cw.STALL_S, "sequencer made no progress"
        idle.idle(work)


def test_no_subscriber_back_pressures_into_a_full_ingress_then_all_is_sequenced(lsdir):
    """No subscriber on the log: the sequencer sequences nothing and leaves every command in
    the ingress, which fills until send() returns False. A subscriber appears: every
    accepted command is sequenced, in order, none lost."""
    seq = Sequencer(lsdir, ingress_capacity=1 << 16)
    client = SequencerClient(lsdir, origin_id=7)
    first = client.next_origin_sequence
    accepted = 0
    while client.send(accepted.to_bytes(8, "little") * 4):
        accepted += 1
        assert seq.do_work() == 0
    assert accepted > 100
    for _ in range(50):  # still full: the sequencer takes nothing out
        assert seq.do_work() == 0
        assert not client.send(b"x" * 32)
    assert seq.sequenced == 0 and seq.last_sequence == 0
    assert seq._seq.last_status == lockstep.NOT_CONNECTED
    assert seq.ingress.size() > 0

    log_path = stream_logs(lsdir, STREAM)[0]
    with Subscription(STREAM, lsdir, start="earliest") as sub:
        got: list = []
        handler = lambda d, h: got.append(decode_sequenced(d, h.position))  # noqa: E731
        idle = BackoffIdleStrategy()
        while len(got) < accepted:
            idle.idle(seq.do_work() + sub.poll(handler, 4096))
        assert seq.sequenced == accepted and seq.ingress.size() == 0
        assert [m.sequence for m in got] == list(range(1, accepted + 1))
        assert [m.origin_sequence for m in got] == list(range(first, first + accepted))
        assert [m.command for m in got] == [k.to_bytes(8, "little") * 4 for k in range(accepted)]
        assert client.send(b"after")  # room again
    client.close()
    seq.close()
    assert log_path.exists()


def test_slow_subscriber_back_pressures_the_sequencer_and_nothing_is_lost(lsdir):
    """A subscriber that does not read holds the log a window back: the sequencer stops,
    the ingress fills, send() says False. Once it reads, everything arrives once, in order."""
    seq = Sequencer(lsdir, term_length=1 << 16, ingress_capacity=1 << 16)
    client = SequencerClient(lsdir, origin_id=8)
    sub = Subscription(STREAM, lsdir, start="earliest")
    accepted = 0
    stuck = 0
    while stuck < 100:  # offer until the ring refuses and the sequencer takes nothing more
        if client.send(accepted.to_bytes(4, "little") * 16):
            accepted += 1
            stuck = 0
        elif seq.do_work() == 0:
            stuck += 1
    assert seq._seq.last_status == lockstep.BACK_PRESSURED
    held = seq.sequenced
    assert 0 < held < accepted, "the window should let some through and hold the rest"
    assert seq.ingress.size() > 0 and not client.send(b"y" * 64)

    got: list = []
    handler = lambda d, h: got.append(decode_sequenced(d))  # noqa: E731
    _sequence_all(seq, None, until=lambda: sub.poll(handler, 4096) == 0 and len(got) >= accepted)
    assert [m.command for m in got] == [k.to_bytes(4, "little") * 16 for k in range(accepted)]
    assert [m.sequence for m in got] == list(range(1, accepted + 1))
    assert seq.ingress.size() == 0
    sub.close()
    client.close()
    seq.close()


@pytest.mark.slow
def test_sequencer_sigkilled_and_restarted_while_clients_send(lsdir, procs, mp):
    """3 clients keep sending while the sequencer process is SIGKILLed twice and restarted.
    Afterwards the log has no gap and no repeat, and every command a client saw send()
    accept is in it exactly once (those waiting in the ingress at the kill included)."""
    clients, per_client = 3, 40_000
    total = clients * per_client
    h = cw.Harness(mp, procs)
    log = cw.LogCollector(lsdir)
    stops = []

    def start_sequencer(k: int) -> None:
        stops.append(h.stop_flag())
        h.start(cw.run_sequencer, f"sequencer{k}", lsdir, stops[-1], h.progress, 0)
        h.wait_reports([f"sequencer{k}"], "started", poll=log.poll)

    start_sequencer(0)
    for i in range(clients):
        h.start(cw.run_client, f"c{i}", lsdir, i, per_client, h.progress, 1 + i)
    for k, kill_at in enumerate((total // 4, total // 2)):
        h.wait(lambda: len(log) >= kill_at, f"{kill_at} commands sequenced", poll=log.poll)
        h.kill(f"sequencer{k}")
        # Clients go on sending into the ingress while nobody sequences it.
        before = sum(h.progress[1:1 + clients])
        h.wait(lambda: sum(h.progress[1:1 + clients]) > before + 1000
               or all(h.report(f"c{i}") for i in range(clients)), "clients sending meanwhile", poll=log.poll)
        start_sequencer(k + 1)
        assert h.report(f"sequencer{k + 1}", "started")["last_sequence"] >= kill_at
    client_reports = h.wait_reports([f"c{i}" for i in range(clients)], poll=log.poll)
    h.wait(lambda: len(log) >= total, "every accepted command in the log", poll=log.poll,
           detail=lambda: f"{len(log)} of {total} in the log")
    stops[-1].set()
    final = h.wait_reports(["sequencer2"], poll=log.poll)[0]
    while log.poll():
        pass
    check_gap_free(log)
    assert len(log) == total == final["last_sequence"]
    check_clients_in_log(log, client_reports)
    log.close()


def test_second_sequencer_on_the_same_directory_is_refused(lsdir, procs, mp):
    seq = Sequencer(lsdir)
    with pytest.raises(LockstepError, match="another sequencer is running"):
        Sequencer(lsdir)
    code = ("import json, sys, lockstep\n"
            "try:\n    lockstep.Sequencer(sys.argv[1]); print(json.dumps('started'))\n"
            "except lockstep.LockstepError as e:\n    print(json.dumps(str(e)))\n")
    result = run_python(code, str(lsdir))
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout.strip().splitlines()[-1])
    assert "another sequencer is running" in message and str(lsdir) in message
    seq.close()
    Sequencer(lsdir).close()  # free again once the first has stopped


def test_malformed_ingress_records_are_rejected_and_counted(lsdir):
    """Records of an unknown type, shorter than the ingress header, or longer than the log
    takes are dropped and counted; the commands around them are sequenced."""
    seq = Sequencer(lsdir, term_length=1 << 16, ingress_capacity=1 << 20)
    client = SequencerClient(lsdir, origin_id=9)
    raw = ManyToOneRing(lsdir / INGRESS_FILE)
    with Subscription(STREAM, lsdir, start="earliest") as sub:
        assert client.send(b"first")
        assert raw.write(2, b"\0" * 24)            # not a command
        assert raw.write(1, b"short")              # shorter than the 16-byte ingress header
        too_long = b"z" * (seq.log.max_message_length + 1)  # longer than the log takes
        with pytest.raises(lockstep.InvalidArgumentError, match="command length"):
            client.send(too_long)  # the client refuses it; one written past the client is dropped
        assert raw.write(1, (client.next_origin_sequence).to_bytes(8, "little") + (9).to_bytes(4, "little")
                         + bytes(4) + too_long)
        client.next_origin_sequence += 1
        assert client.send(b"last")
        got: list = []
        handler = lambda d, h: got.append(decode_sequenced(d))  # noqa: E731
        _sequence_all(seq, until=lambda: sub.poll(handler, 10) == 0 and len(got) >= 2)
        assert [(m.sequence, m.command) for m in got] == [(1, b"first"), (2, b"last")]
        assert seq.rejected == 3 and seq.sequenced == 2 and seq.ingress.size() == 0
    seq._housekeeping(time.monotonic_ns())
    counters = {i.label: i.value for i in lockstep.transport.client.client_for(lsdir).counters
                if i.state == "allocated" and i.label.startswith("sequencer:")}
    assert counters["sequencer: rejected"] == 3
    raw.close()
    client.close()
    seq.close()


def test_a_killed_log_subscriber_does_not_stall_the_sequencer(lsdir, procs, mp):
    """A subscriber process attached to the log and then SIGKILLed leaves its position
    counter behind; the sequencer must evict it rather than wait on it forever."""
    h = cw.Harness(mp, procs)
    seq = Sequencer(lsdir, term_length=1 << 16)
    h.start(cw.run_idle_subscriber, "idle", lsdir, STREAM)
    h.wait_reports(["idle"], "started")
    client = SequencerClient(lsdir, origin_id=10)
    count = 20_000  # ~2.5 MiB of log: many windows of a 64 KiB term
    got = 0
    with Subscription(STREAM, lsdir, start="earliest") as sub:
        def handler(d, hdr):
            nonlocal got
            got += 1
        sent = 0
        killed = False
        idle = BackoffIdleStrategy()
        last_move = time.monotonic()
        while got < count:
            work = 0
            while sent < count and client.send(sent.to_bytes(8, "little")):
                sent += 1
                work += 1
            work += seq.do_work() + sub.poll(handler, 4096)
            if not killed and seq._seq.last_status == lockstep.BACK_PRESSURED and got == seq.sequenced:
                h.kill("idle")  # it holds the log: now it dies with its counter allocated
                killed = True
            if work:
                last_move = time.monotonic()
            assert time.monotonic() - last_move < cw.STALL_S, (
                f"sequencer stalled at {seq.sequenced} of {count} (killed subscriber: {killed})")
            idle.idle(work)
        assert killed and seq.sequenced == count
    client.close()
    seq.close()


def test_client_send_numbers_commands_and_takes_any_buffer(lsdir):
    """send() (one C call) numbers each accepted command with the next origin sequence, takes
    any contiguous buffer, says False on a full ingress without using a number, and raises
    ClosedError after close."""
    import numpy as np

    client = SequencerClient(lsdir, origin_id=77, ingress_capacity=1 << 16)
    client.next_origin_sequence = 1000
    for command in (b"bytes", bytearray(b"bytearray"), memoryview(b"view"), np.arange(3, dtype=np.int64)):
        assert client.send(command) is True
    assert client.next_origin_sequence == 1004
    while client.send(b"x" * 64):
        pass
    full_at = client.next_origin_sequence
    assert client.send(b"x" * 64) is False and client.next_origin_sequence == full_at
    with Sequencer(lsdir) as seq, Subscription(seq.stream_id, lsdir, start="earliest") as sub:
        seq.do_work()
        got = []
        while sub.poll(lambda data, header: got.append(lockstep.decode_sequenced(data)), 100):
            pass
    assert [(m.origin_id, m.origin_sequence) for m in got[:4]] == [(77, 1000), (77, 1001), (77, 1002), (77, 1003)]
    assert [bytes(m.command) for m in got[:4]] == [b"bytes", b"bytearray", b"view",
                                                    np.arange(3, dtype=np.int64).tobytes()]
    assert got[-1].origin_sequence == full_at - 1
    client.close()
    with pytest.raises(lockstep.ClosedError):
        client.send(b"after close")


def test_send_batch_sends_in_order_until_the_ingress_is_full(lsdir):
    """send_batch (one C call for many) numbers the commands it takes in order, returns how
    many of the first ones went (fewer on a full ingress, none lost or numbered twice), hands
    an odd one to send's checks, and raises ClosedError after close."""
    import numpy as np

    client = SequencerClient(lsdir, origin_id=78, ingress_capacity=1 << 12)
    client.next_origin_sequence = 500
    assert client.send_batch([b"a", bytearray(b"bb"), memoryview(b"ccc"), np.arange(2, dtype=np.int32)]) == 4
    assert client.send_batch([]) == 0 and client.next_origin_sequence == 504
    batch = [b"%05d" % i for i in range(1000)]
    taken = client.send_batch(batch)
    assert 0 < taken < len(batch) and client.next_origin_sequence == 504 + taken
    with pytest.raises(lockstep.InvalidArgumentError):  # longer than the ring takes: send's error
        client.send_batch([b"x" * (1 << 12)])
    with Sequencer(lsdir) as seq, Subscription(seq.stream_id, lsdir, start="earliest") as sub:
        got = []

        def drain():
            while seq.do_work() or sub.poll(lambda data, header: got.append(lockstep.decode_sequenced(data)), 100):
                pass

        while taken < len(batch):  # room again after each drain: the rest, in order
            drain()
            more = client.send_batch(batch[taken:])
            assert more > 0
            taken += more
        drain()
    assert [m.origin_sequence for m in got] == list(range(500, 504 + len(batch)))
    assert [bytes(m.command) for m in got] == [b"a", b"bb", b"ccc", np.arange(2, dtype=np.int32).tobytes()] + batch
    client.close()
    with pytest.raises(lockstep.ClosedError):
        client.send_batch([b"after close"])

