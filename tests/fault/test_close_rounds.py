"""Fault rounds "close from a second thread mid-call" (issue 13, item 3): a publisher process
opens an exclusive publication per round, one thread offers (offer, a long fragmented offer,
offer_batch or try_claim, picked by a seeded RNG) while another closes the publication at a
random moment. This process reads every round's stream to its end and checks that exactly
what the publisher was told was accepted arrived: nothing accepted lost, nothing twice,
nothing after the end of stream, in order, intact — and that the publisher survived.

Rounds: 20, or --soak N / $LOCKSTEP_SOAK_ROUNDS; seed: $LOCKSTEP_FAULT_SEED (printed, and
named in any failure). Guards are no-progress timeouts, never speed limits.
"""

from __future__ import annotations

import os
import random
import struct
import threading
import time

import lockstep
from lockstep import CLOSED, ClosedError, Publication, Subscription

STREAM = 1717
TERM = 1 << 20
GUARD_S = 60.0
KINDS = ("offer", "offer_long", "offer_batch", "try_claim")
_TAG = struct.Struct("<iq")  # round, message number


def _message(round_no: int, k: int, length: int) -> bytes:
    tag = _TAG.pack(round_no, k)
    return (tag * (length // len(tag) + 1))[:length]


def _length(kind: str, k: int) -> int:
    return 3000 + k % 1000 if kind == "offer_long" else 16 + k % 200  # (long ones: fragmented)


def _offer_until_closed(pub: Publication, kind: str, round_no: int, accepted: list) -> None:
    """Offer messages 0, 1, ... until the publication says CLOSED; accepted[0] counts those
    the publisher was told it took; accepted[1] is any other exception."""
    k = 0
    idle = lockstep.BackoffIdleStrategy()
    try:
        while True:
            if kind == "offer_batch":
                messages = [_message(round_no, k + i, _length(kind, k + i)) for i in range(64)]
                taken, result = pub.offer_many(messages)
            elif kind == "try_claim":
                data = _message(round_no, k, _length(kind, k))
                claim = pub.try_claim(len(data))
                if claim:
                    claim.buffer[:] = data
                    claim.commit()
                taken, result = (1, claim.status) if claim else (0, claim.status)
            else:
                data = _message(round_no, k, _length(kind, k))
                result = pub.offer(data if kind == "offer" else memoryview(data))
                taken = 1 if result > 0 else 0
            k += taken
            accepted[0] = k
            if result == CLOSED:
                return
            if not taken:
                idle.idle(0)
    except ClosedError:
        return
    except BaseException as e:  # noqa: BLE001 - reported to the checker
        accepted[1] = f"{type(e).__name__}: {e}"


def publisher(queue, dir, seed: int, rounds: int) -> None:
    """The worker: `rounds` publications, each closed from a second thread mid-call; reports
    ("round", round, session id, kind, accepted) after each, ("done",) at the end."""
    rng = random.Random(seed)
    for round_no in range(rounds):
        kind = rng.choice(KINDS)
        pub = Publication(STREAM, dir, exclusive=True, term_length=TERM)
        deadline = time.monotonic() + GUARD_S
        while not pub.is_connected:  # the checker discovers the log (else nothing is accepted)
            if time.monotonic() > deadline:
                raise AssertionError(f"round {round_no}: no subscriber within {GUARD_S} s")
            time.sleep(0.005)
        accepted: list = [0, None]
        thread = threading.Thread(target=_offer_until_closed, args=(pub, kind, round_no, accepted))
        thread.start()
        time.sleep(rng.random() * 0.004)
        pub.close()
        thread.join(GUARD_S)
        if thread.is_alive():
            raise AssertionError(f"round {round_no} ({kind}): an offer did not return after close()")
        if accepted[1]:
            raise AssertionError(f"round {round_no} ({kind}): the offering thread failed: {accepted[1]}")
        queue.put(("round", round_no, pub.session_id, kind, accepted[0]))
    queue.put(("done",))


def _rounds(config) -> int:
    return config.getoption("--soak", default=None) or int(os.environ.get("LOCKSTEP_SOAK_ROUNDS") or 20)


def test_close_mid_call_rounds(lsdir, procs, request):
    seed = int(os.environ.get("LOCKSTEP_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    rounds = _rounds(request.config)
    print(f"close rounds: {rounds}, seed {seed} (LOCKSTEP_FAULT_SEED={seed} repeats it)")
    queue = procs.ctx.Queue()
    sub = Subscription(STREAM, lsdir, join="earliest")
    received: dict[int, list[bytes]] = {}
    worker = procs.start(publisher, queue, lsdir, seed, rounds)
    reports: dict[int, tuple] = {}
    done = False
    idle = lockstep.BackoffIdleStrategy()
    last_progress = time.monotonic()

    def handler(data, header) -> None:
        received.setdefault(header.session_id, []).append(bytes(data))

    def complete() -> bool:
        return done and all(len(received.get(s, ())) >= n for s, (_, _, n) in reports.items())

    while not complete():
        n = sub.poll(handler, 1000)
        while not queue.empty():
            item = queue.get()
            if item[0] == "done":
                done = True
            else:
                _, round_no, session_id, kind, accepted = item
                reports[session_id] = (round_no, kind, accepted)
            n += 1
        if n:
            last_progress = time.monotonic()
        else:
            assert worker.is_alive() or not queue.empty() or done, (
                f"seed {seed}: the publisher died (exit {worker.exitcode}) — a close mid-call crashed it?")
            assert time.monotonic() - last_progress < GUARD_S, (
                f"seed {seed}: no progress for {GUARD_S} s ({len(reports)} of {rounds} rounds reported)")
            idle.idle(0)
    end = time.monotonic() + 0.3  # anything past the accepted ones would arrive now
    while time.monotonic() < end:
        if not sub.poll(handler, 1000):
            time.sleep(0.01)
    procs.join_all()
    sub.close()
    checked = 0
    for session_id, (round_no, kind, accepted) in sorted(reports.items(), key=lambda r: r[1][0]):
        got = received.get(session_id, [])
        want = [_message(round_no, k, _length(kind, k)) for k in range(accepted)]
        assert got == want, (
            f"seed {seed}, round {round_no} ({kind}): accepted {accepted}, received {len(got)}; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}")
        checked += accepted
    assert set(received) <= set(reports), "messages of a session no round reported"
    kinds = sorted({kind for _, kind, _ in reports.values()})
    print(f"close rounds: {rounds} rounds ({', '.join(kinds)}), {checked} accepted messages checked, seed {seed}")
