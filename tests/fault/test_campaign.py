"""Fault-injection campaign: a running system (sequencer, 2 client processes, 2 OrderBook
replicas with snapshots, a recorder) in which a random process, picked by a seeded RNG, is
SIGKILLed at a random moment and restarted, round after round. Afterwards:

* the sequenced log is gap-free from sequence 1, no (origin, origin sequence) twice;
* every command a client saw `send()` accept is in the log exactly once, intact and in
  order (a killed client's last command may be in the log without having been counted);
* every fill is in the log once; the replicas agree (equal final hashes, no divergence in
  their hash files, equal to an offline replay of the whole log);
* every recording holds byte-identical messages to the log over its range, and the newest
  one reaches the end of the log.

Guards are no-progress timeouts (60 s), never speed limits. Rounds: 50, or --soak N /
$LOCKSTEP_SOAK_ROUNDS; seed: $LOCKSTEP_FAULT_SEED (printed, and named in any failure).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

import archive_workers as aw
import cluster_workers as cw
from lockstep import BackoffIdleStrategy, ManyToOneRing, Subscription, first_divergence
from lockstep.archive import Archive
from lockstep.cluster.replica import _default_origin, read_hashes, replay
from lockstep.examples.orderbook import Fill, OrderBook
from lockstep.cluster.sequencer import INGRESS_FILE, SEQUENCED_HEADER

from . import fault_workers as fw

STREAM = 100
TERM_LENGTH = 1 << 24          # 3 x 16 MiB: a restarted replica's snapshot is always retained
SEGMENT_LENGTH = 1 << 25
CLIENT_RATE = 2_000            # commands/s per client process
REPLICA_KW = {"hash_every": 500, "snapshot_every": 3_000}
BOOK_ORIGIN = _default_origin(OrderBook())
ROLES = ["sequencer", "c0", "c1", "r0", "r1", "recorder"]
SEQ, REC, R0, R1 = 0, 1, 2, 3  # progress slots


def _rounds(config) -> int:
    soak = config.getoption("--soak", default=None)
    if soak:
        return soak
    return int(os.environ.get("LOCKSTEP_SOAK_ROUNDS") or 50)


class Collector:
    """The sequenced log read live from its start by this process: whole payloads by position."""

    def __init__(self, dir) -> None:
        self.sub = Subscription(STREAM, dir, start="earliest", join="earliest")
        self.payloads: list[bytes] = []
        self.positions: list[int] = []

    def _handler(self, data, header) -> None:
        self.payloads.append(bytes(data))
        self.positions.append(header.position)

    def poll(self) -> int:
        return self.sub.poll(self._handler, 4096)

    @property
    def last_sequence(self) -> int:
        return SEQUENCED_HEADER.unpack_from(self.payloads[-1])[0] if self.payloads else 0

    def close(self) -> None:
        self.sub.close()


class Campaign:
    def __init__(self, h: cw.Harness, mp, dir, rng: random.Random, seed: int, max_clients: int) -> None:
        self.h, self.mp, self.dir, self.rng, self.seed = h, mp, dir, rng, seed
        self.stops = {role: h.stop_flag() for role in ("sequencer", "recorder", "replicas", "clients")}
        self.pending = mp.Array("q", 2, lock=False)
        self.accepted = mp.Array("q", 2 * max_clients, lock=False)
        self.current: dict[str, str] = {}     # role -> worker name of its live incarnation
        self.incarnations = Counter()
        self.client_slots: list[tuple[int, int]] = []  # (origin id, accepted slot) of every client incarnation
        self.kills = Counter()
        self.log = None

    def start(self, role: str) -> str:
        k = self.incarnations[role]
        self.incarnations[role] += 1
        name = f"{role}#{k}"
        h = self.h
        if role == "sequencer":
            h.start(cw.run_sequencer, name, self.dir, self.stops["sequencer"], h.progress, SEQ,
                    term_length=TERM_LENGTH)
        elif role == "recorder":
            h.start(aw.run_recorder, name, self.dir, self.stops["recorder"], h.progress, REC,
                    stream_id=STREAM, segment_length=SEGMENT_LENGTH)
        elif role in ("r0", "r1"):
            i = int(role[1])
            h.start(fw.run_replica, name, self.dir, self.stops["replicas"], h.progress, R0 + i, self.pending, i,
                    role, **REPLICA_KW)
        else:
            slot = len(self.client_slots)
            origin_id = 5000 + slot
            self.client_slots.append((origin_id, slot))
            h.start(fw.run_client, name, self.dir, origin_id, self.accepted, slot, self.stops["clients"],
                    CLIENT_RATE, self.seed)
        self.current[role] = name
        return name

    def wait_started(self, names) -> None:
        self.h.wait_reports(list(names), "started", poll=self.poll)

    def poll(self) -> int:
        return self.log.poll() if self.log is not None else 0

    def kill(self, role: str) -> None:
        self.h.kill(self.current[role])
        self.kills[role] += 1


def test_random_sigkills_and_restarts_lose_nothing(lsdir, procs, mp, request):
    rounds = _rounds(request.config)
    seed = int(os.environ.get("LOCKSTEP_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nfault campaign: {rounds} rounds, seed {seed} (rerun with LOCKSTEP_FAULT_SEED={seed})")
    try:
        _campaign(lsdir, procs, mp, rounds, seed)
    except Exception as e:
        raise AssertionError(f"fault campaign failed (seed {seed}; rerun with LOCKSTEP_FAULT_SEED={seed}): "
                             f"{type(e).__name__}: {e}") from e


def _streams(lsdir) -> str:
    """What `lockstep stat` shows of the streams: for a stall's diagnosis."""
    from lockstep.cli.stat_view import snapshot_of

    try:
        s = snapshot_of(lsdir)
        ring = ManyToOneRing(lsdir / INGRESS_FILE)
        try:
            head = ring.consumer_position
            ingress = {"head": head, "size": ring.size(), "head_record": bytes(ring._view[
                head % ring.capacity:head % ring.capacity + 16]).hex()}
        finally:
            ring.close()
        return str({k: s[k] for k in ("streams", "sequencer", "errors")} | {"ingress": ingress})
    except Exception as e:  # a diagnosis must not hide the failure it explains
        return f"(stat failed: {e!r})"


def _campaign(lsdir, procs, mp, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    h = cw.Harness(mp, procs)
    c = Campaign(h, mp, lsdir, rng, seed, max_clients=rounds + 4)
    started_at = time.monotonic()

    # -- the system ------------------------------------------------------------------------
    c.wait_started([c.start("sequencer")])
    c.log = Collector(lsdir)
    c.wait_started([c.start("recorder"), c.start("r0"), c.start("r1")])
    c.wait_started([c.start("c0"), c.start("c1")])
    unstarted: set[str] = set()

    # -- rounds of faults ------------------------------------------------------------------
    survived = 0
    for r in range(rounds):
        # Traffic moves (the log grows) before each kill, then a random moment later the kill.
        before = len(c.log.payloads)
        h.wait(lambda: len(c.log.payloads) > before, f"round {r}: the log to grow (from {before} messages)",
               poll=c.poll, detail=lambda: (f"live incarnations {c.current}, not yet started {sorted(unstarted)}; "
                                            f"streams {_streams(lsdir)}"))
        deadline = time.monotonic() + rng.uniform(0.02, 0.4)
        h.wait(lambda: time.monotonic() >= deadline, f"round {r}: traffic", poll=c.poll)
        role = rng.choice(ROLES)
        victim = c.current[role]
        c.kill(role)
        unstarted.discard(victim)
        name = c.start(role)
        if rng.random() < 0.8:
            c.wait_started([name])  # else the next round may kill it while it starts up
        else:
            unstarted.add(name)
        unstarted = {n for n in unstarted if h.report(n, "started") is None}
        survived += 1
    kill_seconds = time.monotonic() - started_at

    # -- quiesce: clients stop, everything else drains -------------------------------------
    c.wait_started([c.current[role] for role in ROLES])
    c.stops["clients"].set()
    h.wait_reports([c.current["c0"], c.current["c1"]], poll=c.poll)
    ingress = ManyToOneRing(lsdir / INGRESS_FILE)

    def quiet() -> bool:
        last = c.log.last_sequence
        return (ingress.size() == 0 and h.progress[SEQ] == last and h.progress[R0] == last
                and h.progress[R1] == last and not c.pending[0] and not c.pending[1]
                and h.progress[REC] == c.log.positions[-1])

    stable_since = [None]

    def settled() -> bool:
        if not quiet():
            stable_since[0] = None
            return False
        now = time.monotonic()
        if stable_since[0] is None:
            stable_since[0] = (now, c.log.last_sequence)
            return False
        return now - stable_since[0][0] > 0.5 and stable_since[0][1] == c.log.last_sequence

    h.wait(settled, "the system to drain (ingress empty, replicas and recorder at the log's end)", poll=c.poll,
           detail=lambda: (f"log last {c.log.last_sequence} at {c.log.positions[-1] if c.log.positions else 0}, "
                           f"ingress {ingress.size()}, progress {list(h.progress[:4])}, "
                           f"pending {list(c.pending)}"))
    ingress.close()
    c.stops["replicas"].set()
    results = h.wait_reports([c.current["r0"], c.current["r1"]], poll=c.poll)
    c.stops["recorder"].set()
    h.wait_reports([c.current["recorder"]], poll=c.poll)
    c.stops["sequencer"].set()
    [seq_report] = h.wait_reports([c.current["sequencer"]], poll=c.poll)
    while c.poll():
        pass
    c.log.close()

    # -- the log: gap-free, nothing lost, nothing twice --------------------------------------
    payloads, positions = c.log.payloads, c.log.positions
    decoded = [SEQUENCED_HEADER.unpack_from(p) for p in payloads]  # sequence, timestamp, origin seq, origin id
    n = len(decoded)
    assert [d[0] for d in decoded] == list(range(1, n + 1)), "log sequences are not 1..n without gap or repeat"
    assert seq_report["last_sequence"] == n
    keys = [(d[3], d[2]) for d in decoded]
    twice = [k for k, v in Counter(keys).items() if v > 1]
    assert not twice, f"(origin, origin sequence) sequenced twice: {twice[:5]}"
    by_origin: dict[int, list[int]] = {}
    for i, d in enumerate(decoded):
        by_origin.setdefault(d[3], []).append(i)
    client_origins = {origin for origin, _ in c.client_slots}
    assert set(by_origin) <= client_origins | {BOOK_ORIGIN}, f"unknown origins {set(by_origin) - client_origins}"
    accepted_total = in_log_total = 0
    for origin_id, slot in c.client_slots:
        first, accepted = c.accepted[2 * slot], c.accepted[2 * slot + 1]
        idx = by_origin.get(origin_id, [])
        origin_sequences = [decoded[i][2] for i in idx]
        if first == 0:  # killed before its SequencerClient existed
            assert not idx, f"client origin {origin_id}: in the log without having started"
            continue
        assert accepted <= len(idx) <= accepted + 1, (
            f"client origin {origin_id}: send() accepted {accepted}, the log holds {len(idx)}; missing origin "
            f"sequences {sorted(set(range(first, first + accepted)) - set(origin_sequences))[:40]} (first {first}); "
            f"sequencer {seq_report}; kills {dict(c.kills)}")
        assert origin_sequences == list(range(first, first + len(idx))), (
            f"client origin {origin_id}: origin sequences not first..first+{len(idx) - 1} in order")
        expected = fw.expected_commands(origin_id, c.seed, len(idx))
        assert [payloads[i][32:] for i in idx] == expected, f"client origin {origin_id}: command bytes differ"
        accepted_total += accepted
        in_log_total += len(idx)
    fill_idx = by_origin.get(BOOK_ORIGIN, [])
    fill_sequences = [decoded[i][2] for i in fill_idx]
    assert fill_sequences == sorted(set(fill_sequences)), "a fill sequenced twice or out of order"
    assert [int(Fill.decode(payloads[i][32:]).match_id) for i in fill_idx] == list(range(1, len(fill_idx) + 1))

    # -- the replicas agree, with each other and with an offline replay of the log ----------
    assert results[0]["hash"] == results[1]["hash"], f"replica hashes differ: {results}"
    assert results[0]["last_sequence"] == results[1]["last_sequence"] == n
    assert results[0]["last_position"] == results[1]["last_position"] == positions[-1]
    assert results[0]["fills"] == len(fill_idx)
    hash_files = [r["hashes_file"] for r in results]
    assert first_divergence(*hash_files) is None
    common = set.intersection(*({p for p, _, _ in read_hashes(f)} for f in hash_files))
    assert len(common) >= n // REPLICA_KW["hash_every"] // 2
    runner = replay(OrderBook(), zip(payloads, positions))
    assert runner.machine.state_hash().hex() == results[0]["hash"], "offline replay of the log differs"

    # -- the recordings match the log -------------------------------------------------------
    by_position = dict(zip(positions, payloads))
    archive = Archive.for_dir(lsdir)
    recordings = archive.recordings()
    assert recordings and all(d.state == "stopped" for d in recordings)
    compared = 0
    for d in recordings:
        with archive.reader(d.recording_id) as reader:
            for payload, header in reader.messages():
                expected = by_position.get(header["position"])
                assert expected is not None, f"recording {d.recording_id}: position {header['position']} not in the log"
                assert payload == expected, f"recording {d.recording_id}: message at {header['position']} differs"
                compared += 1
    assert recordings[-1].stop_position == positions[-1], "the newest recording does not reach the log's end"
    covered = sum(d.stop_position - d.start_position for d in recordings)

    print(f"fault campaign: seed {seed}: survived {survived} rounds of SIGKILL + restart in {kill_seconds:.1f} s "
          f"(kills {dict(sorted(c.kills.items()))}); log {n} messages ({positions[-1]:,} bytes): "
          f"{in_log_total} client commands ({accepted_total} counted as accepted), {len(fill_idx)} fills; "
          f"replicas agree at sequence {n} over {len(common)} common hashes; {len(recordings)} recording(s) "
          f"covering {covered:,} bytes, {compared} messages byte-identical to the log")
