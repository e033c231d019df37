"""Found by the fault campaign (200-round soak, seed 3098373070): a replica lagging behind
the other one kept copies of outputs the other replica had already had sequenced, met a
full ingress with them again and again (the clients refill it as soon as the sequencer
drains some), and so put its snapshots off for ~100k messages; killed then, it restarted
from a snapshot the log no longer retained. Copies of outputs already in the log must not
hold a snapshot back: the sequencer would drop them anyway."""

from __future__ import annotations

from lockstep import ManyToOneRing, Replica
from lockstep.cluster.replica import _default_origin, latest_snapshot
from lockstep.examples.orderbook import BUY, SELL, Fill, OrderBook, new_order
from lockstep.cluster.sequencer import INGRESS_FILE, SEQUENCED_HEADER

BOOK_ORIGIN = _default_origin(OrderBook())


def _sequenced(sequence: int, command: bytes, origin_id: int, origin_sequence: int) -> bytes:
    return SEQUENCED_HEADER.pack(sequence, 1_700_000_000_000_000_000 + sequence, origin_sequence, origin_id, 0) + command


def test_outputs_already_in_the_log_do_not_hold_a_snapshot_back(lsdir):
    replica = Replica(OrderBook(), lsdir, name="lagging", hash_every=0, snapshot_every=2)
    ingress = ManyToOneRing(lsdir / INGRESS_FILE)
    for size in (4000, 64, 1):  # full to the last byte: the replica's outputs stay queued
        while ingress.write(1, b"f" * size):
            pass
    replica.apply(_sequenced(1, new_order(1, SELL, 100, 5), 1000, 1), 64)
    replica.apply(_sequenced(2, new_order(2, BUY, 100, 5), 1000, 2), 128)  # trades: a Fill to send
    assert replica.do_work() == 0 and replica.pending_outputs == 1
    assert latest_snapshot(lsdir, "lagging") is None, "due at sequence 2, but its output is only in memory"
    # The other replica's copy of that Fill comes back through the log.
    fill = Fill.encode(match_id=1, taker_id=2, maker_id=1, price=100, qty=5, timestamp_ns=1_700_000_000_000_000_002)
    replica.apply(_sequenced(3, fill, BOOK_ORIGIN, 2 << 16), 224)
    snapshot = latest_snapshot(lsdir, "lagging")
    assert snapshot is not None and snapshot.sequence == 3
    assert replica.pending_outputs == 0
    # An output not yet in the log still holds the next snapshot back.
    replica.apply(_sequenced(4, new_order(3, BUY, 99, 1), 1000, 3), 288)   # rests; snapshot at 4
    replica.apply(_sequenced(5, new_order(4, SELL, 99, 1), 1000, 4), 352)  # trades: a Fill to send
    replica.apply(_sequenced(6, new_order(5, BUY, 1, 1), 1000, 5), 416)    # due again, output queued
    assert replica.do_work() == 0
    assert replica.pending_outputs == 1 and latest_snapshot(lsdir, "lagging").sequence == 4
    ingress.close()
    replica.close()
