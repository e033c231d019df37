"""Fault campaign for streams, SIGSTOP/SIGCONT rounds: a publisher process (exclusive, liveness
timeout 1 s) and four subscriber processes, one per read call (receive, poll, poll_batch,
poll with on_unavailable_image); each round a seeded RNG pauses one of them for 0.3-2 s (often
past the liveness timeout) and resumes it, while this process reads the stream and is never
paused. Afterwards:

* this process received every message the publisher saw accepted, once, in order (nothing
  accepted is lost while a live subscriber holds the publisher back);
* every subscriber process got its messages in order and none twice, and every jump in the
  sequence came right after it was told of a loss (ImageLostError or on_unavailable_image),
  by `lost_workers.check_events` (which also lets a loss retract messages its handler read
  from views while paused); a paused publisher cost nobody a message.

Guards are no-progress timeouts (60 s), never speed limits. Rounds: 6 in CI, or --soak N /
$LOCKSTEP_SOAK_ROUNDS; seed: $LOCKSTEP_FAULT_SEED (printed, and named in any failure).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import time

import lost_workers as lw
from lockstep import BackoffIdleStrategy, Subscription

STREAM = 1300
LIVENESS_MS = 1000  # (shorter makes the never-paused reader look dead on a loaded 2-core host)
RATE = 20_000  # messages/s offered (2 shared cores)
STALL_S = 60.0


def _rounds(config) -> int:
    soak = config.getoption("--soak", default=None)
    return soak or int(os.environ.get("LOCKSTEP_SOAK_ROUNDS") or 6)


def _get(q, what: str, timeout: float = STALL_S):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def test_pausing_publishers_and_subscribers_past_liveness_never_loses_silently(lsdir, procs, mp, request):
    rounds = _rounds(request.config)
    seed = int(os.environ.get("LOCKSTEP_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"stream pause campaign: {rounds} rounds, seed {seed} (LOCKSTEP_FAULT_SEED={seed} repeats it)")
    rng = random.Random(seed)
    ready, go, stop_pub, count = mp.Queue(), mp.Event(), mp.Event(), mp.Queue()
    publisher = procs.start(lw.publish_until_stopped, STREAM, LIVENESS_MS, RATE, ready, go, stop_pub, count)
    _get(ready, "publisher")
    last = mp.Value("q", 1 << 62, lock=False)
    attached, stop_subs = mp.Queue(), mp.Event()
    results = {mode: mp.Queue() for mode in lw.MODES}
    subscribers = {mode: procs.start(lw.read_and_report, STREAM, mode, last, attached, stop_subs, results[mode],
                                     liveness_timeout_ms=LIVENESS_MS)
                   for mode in lw.MODES}
    for _ in lw.MODES:
        _get(attached, "attached subscriber")
    got: list[int] = []
    collect = lambda data, header: got.append(lw.seq_of(data))  # noqa: E731
    idle = BackoffIdleStrategy()
    kinds: dict[str, int] = {}
    with Subscription(STREAM, liveness_timeout_ms=LIVENESS_MS) as checker:
        def read_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                if checker.poll(collect, 1000):
                    idle.reset()
                else:
                    idle.idle(0)

        deadline = time.monotonic() + STALL_S
        while not checker.discover():
            assert time.monotonic() < deadline, f"seed {seed}: no publication"
        go.set()
        read_for(0.3)
        for r in range(rounds):
            victim = rng.choice(["publisher", *lw.MODES])
            pid = (publisher if victim == "publisher" else subscribers[victim]).pid
            pause = rng.uniform(0.3, 2.0)
            kind = f"{'publisher' if victim == 'publisher' else 'subscriber'} paused " + (
                "past liveness" if pause * 1000 > LIVENESS_MS else "within liveness")
            kinds[kind] = kinds.get(kind, 0) + 1
            before = len(got)
            os.kill(pid, signal.SIGSTOP)
            try:
                read_for(pause)
            finally:
                os.kill(pid, signal.SIGCONT)
            progress_by = time.monotonic() + STALL_S
            while len(got) < before + RATE // 20:  # the stream goes on after each round
                assert time.monotonic() < progress_by, f"seed {seed} round {r}: no progress after {kind}"
                read_for(0.05)
        stop_pub.set()
        sent = _get(count, "publisher's count")
        last.value = sent - 1
        drain_by = time.monotonic() + STALL_S
        while len(got) < sent:
            assert time.monotonic() < drain_by, f"seed {seed}: checker stuck at {len(got)} of {sent}"
            read_for(0.05)
    assert got == list(range(sent)), f"seed {seed}: the never-paused subscriber lost or reordered messages"
    time.sleep(1.0)  # let each subscriber read to the end on its own
    stop_subs.set()
    told = retracted = 0
    for mode in lw.MODES:
        events = _get(results[mode], f"{mode} subscriber's report")
        losses, views = lw.check_events(events, 0, sent - 1, f"seed {seed}, {mode} subscriber")
        told, retracted = told + losses, retracted + views
    procs.join_all(STALL_S)
    print(f"stream pause campaign: {rounds} rounds {kinds}, {sent} messages x {1 + len(lw.MODES)} subscribers "
          f"checked, {told} losses told (none silent), {retracted} messages read from views retracted by them")
