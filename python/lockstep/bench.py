"""`lockstep bench`: throughput and round-trip latency between two real processes over
lockstep streams. Each run uses its own fresh directory, so it disturbs nothing else."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import struct
import tempfile
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

import numpy as np

from .transport.idle import default_idle, idle_strategy
from .transport.mapped import default_dir
from .transport.publication import NOT_CONNECTED, Publication
from .transport.subscription import Subscription
from .cluster.replica import StateMachine

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    from matplotlib.axes import Axes

    from .cluster.gateway import HaltRecord
    from .cluster.replica import Context
    from .transport.reader import Batch

__all__ = ["throughput", "ping", "sequencer", "halt", "APIS"]

# What each side calls per message: poll(handler) (the Aeron way), receive() (one call returning
# bytes), or claim (try_claim + fill + commit to send, poll(handler) to read).
APIS = ("poll", "receive", "claim")

PING_STREAM = 1001
PONG_STREAM = 1002
DATA_STREAM = 1003
TERM_LENGTH = 1 << 22


@contextmanager
def _bench_dir() -> Iterator[str]:
    """A private directory beside the default one (in /dev/shm when it exists)."""
    parent = default_dir().parent
    path = tempfile.mkdtemp(prefix="lockstep-bench-", dir=parent if os.access(parent, os.W_OK) else None)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _wait_connected(pub: Publication, sub: Subscription | None = None, timeout_s: float = 30.0) -> None:
    """Wait until `pub` has a subscriber and `sub` (if given) has found a publisher; polls
    nothing, so no message is consumed while waiting."""
    deadline = time.monotonic() + timeout_s
    while not pub.is_connected or (sub is not None and not sub.discover()):
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark peer did not connect in time")
        time.sleep(0.001)


def _check_api(api: str | None, idle: str) -> str:
    """The API to measure: `api`, by default poll (receive when blocking: poll does not block)."""
    from .errors import InvalidArgumentError

    api = api or ("receive" if idle == "block" else "poll")
    if api not in APIS:
        raise InvalidArgumentError(f"api: expected one of {', '.join(APIS)}, found {api!r}")
    if idle == "block" and api != "receive":
        raise InvalidArgumentError(f"idle block: only receive(timeout) blocks; use api receive, not {api}")
    return api


def _sender(pub: Publication, api: str) -> Callable[[bytes | memoryview], int]:
    """One message out: offer, or (api claim) try_claim + fill + commit. Returns > 0 when sent."""
    if api != "claim":
        return pub.offer
    try_claim = pub.try_claim

    def claim_send(data: bytes | memoryview) -> int:
        claim = try_claim(len(data))
        if claim:
            buffer = claim.buffer
            assert buffer is not None  # (a granted claim has its buffer)
            buffer[:] = data
            claim.commit()
        return claim.status
    return claim_send


def _noop_handler(data: memoryview, header: object) -> None:
    pass


def _poller(sub: Subscription, idle: str, handler: Callable[[memoryview, object], None]) -> Callable[[], int]:
    """A function that polls `sub` with `handler` (fragment limit 10) until something came,
    spinning or idling in between; returns how many messages it handled."""
    poll = sub.poll
    if idle == "spin":
        def poll_spinning() -> int:
            n = poll(handler, 10)
            while not n:
                n = poll(handler, 10)
            return n
        return poll_spinning
    idler = idle_strategy(idle).idle

    def poll_idling() -> int:
        n = poll(handler, 10)
        while not n:
            idler(0)
            n = poll(handler, 10)
        idler(n)
        return n
    return poll_idling


def _producer(dir: str, size: int, messages: int, batch: int, idle: str, api: str = "poll") -> None:
    """Offer `messages` (or, when negative, until the consumer goes away)."""
    idler = idle_strategy(idle)
    endless = messages < 0
    with Publication(DATA_STREAM, dir, exclusive=True, term_length=TERM_LENGTH) as pub:
        _wait_connected(pub)
        payload = bytes(size)
        sent = 0
        if batch > 1:
            data = np.zeros(size * batch, dtype=np.uint8)
            offsets = np.arange(batch, dtype=np.int64) * size
            lengths = np.full(batch, size, dtype=np.int32)
            while endless or sent < messages:
                n = batch if endless else min(batch, messages - sent)
                accepted, status = pub.offer_batch(data, offsets[:n], lengths[:n])
                if status == NOT_CONNECTED:
                    break
                sent += accepted
                idler.idle(accepted)
        else:
            offer = _sender(pub, api)
            while endless or sent < messages:
                status = offer(payload)
                if status > 0:
                    sent += 1
                elif status == NOT_CONNECTED:
                    break
                else:
                    idler.idle(0)
        while pub.is_connected:  # let the consumer drain before the log goes away
            time.sleep(0.01)


def throughput(size: int = 32, messages: int = 1_000_000, batch: bool = False, idle: str = "backoff",
               seconds: float | None = None, api: str | None = None) -> dict:
    """One producer process sends `size`-byte messages (one `offer` call each, try_claim +
    commit with api claim, or 1024 per `offer_batch` with batch); this process takes them
    (`poll(handler, 256)` with api poll or claim, the default; one `receive` call each with api
    receive; or `poll_batch`) until `messages` came, or for `seconds` when given. Returns
    msgs_per_sec and mb_per_sec measured at the consumer, from its first message on."""
    api = _check_api(api, idle)
    ctx = multiprocessing.get_context("spawn")
    with _bench_dir() as dir:
        with Subscription(DATA_STREAM, dir) as sub:
            producer = ctx.Process(target=_producer, daemon=True,
                                   args=(dir, size, -1 if seconds else messages, 1024 if batch else 1, idle, api))
            producer.start()
            try:
                idler = idle_strategy(idle)
                counted = [0]

                def count_batch(b: Batch) -> None:
                    counted[0] += len(b)

                receive = sub.receive

                def count_one_by_one() -> int:  # one receive() call per message
                    n = 0
                    while n < 4096 and receive() is not None:
                        n += 1
                    counted[0] += n
                    return n

                poll = sub.poll

                def count_polled() -> int:  # poll(handler, 256): one handler call per message
                    n = poll(_noop_handler, 256)
                    counted[0] += n
                    return n

                read = count_one_by_one if api == "receive" else count_polled
                clock = time.perf_counter
                start: float | None = None
                first = 0
                while True:
                    n = sub.poll_batch(count_batch, 4096) if batch else read()
                    if n and start is None:
                        start, first = clock(), counted[0]  # the clock starts after the first read
                    if seconds is None and counted[0] >= messages:
                        break
                    if seconds is not None and start is not None and clock() - start >= seconds:
                        break
                    idler.idle(n)
                    if not n and not producer.is_alive() and producer.exitcode:
                        raise RuntimeError(f"producer exited with {producer.exitcode}")
                assert start is not None  # (the loop ends after the first read at the earliest)
                elapsed = clock() - start
                messages, measured = counted[0], counted[0] - first
            finally:
                sub.close()
                producer.join(10)
                if producer.is_alive():
                    producer.kill()
    rate = measured / elapsed
    floor = _c_throughput_floor(messages, size, 1024 if batch else 1)
    return {"msgs_per_sec": rate, "mb_per_sec": rate * size / 1e6, "messages": messages, "size": size,
            "batch": batch, "api": "batch" if batch else api, "seconds": elapsed, "ns_per_msg": 1e9 / rate, "noop_call_ns": _noop_ns(),
            "c_floor_msgs_per_sec": floor, "ratio_to_c_floor": rate / floor if floor else None}


def _noop_ns(calls: int = 200_000) -> float:
    """The cost of one empty Python -> C call through cffi, measured now (the floor of any
    per-message Python API)."""
    from ._native import lib

    noop = lib.ls_noop
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(calls):
            noop()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def _c_throughput_floor(messages: int, size: int, batch: int) -> float | None:
    """The same transfer in C threads over the same core (msgs/s)."""
    from ._native import lib

    ns = lib.ls_bench_throughput_floor(messages, size, batch)
    return messages / ns * 1e9 if ns > 0 else None


def _receiver(sub: Subscription, idle: str) -> Callable[[], bytes]:
    """A function returning the next message: spinning on `receive()`, idling between
    empty ones, or blocking (idle "block": a futex wake-up from the writer)."""
    receive = sub.receive
    if idle == "block":
        return lambda: receive(None)
    if idle == "spin":
        def next_spinning() -> bytes:
            data = receive()
            while data is None:
                data = receive()
            return data
        return next_spinning
    idler = idle_strategy(idle).idle

    def next_idling() -> bytes:
        data = receive()
        while data is None:
            idler(0)
            data = receive()
        idler(1)
        return data
    return next_idling


def _ponger(dir: str, messages: int, idle: str, api: str = "receive") -> None:
    with Subscription(PING_STREAM, dir) as sub, Publication(PONG_STREAM, dir, exclusive=True) as pub:
        _wait_connected(pub, sub)
        send = _sender(pub, api)
        if api == "receive":
            next_message = _receiver(sub, idle)
            for _ in range(messages):
                data = next_message()
                while send(data) < 0:
                    pass
            return

        def echo(data: memoryview, header: object) -> None:  # the Aeron way: answer in the handler
            while send(data) < 0:
                pass
        wait = _poller(sub, idle, echo)
        echoed = 0
        while echoed < messages:
            echoed += wait()


def ping(size: int = 32, messages: int = 100_000, warmup: int = 10_000, idle: str = "spin",
         rate: float | None = None, api: str | None = None) -> dict:
    """Round trips of `size`-byte messages to an echoing process. With `rate` (msgs/s),
    sends on a fixed schedule and measures from the intended send time, so stalls are not
    hidden (coordinated omission). `idle`: spin, backoff (or any idle strategy name), or
    block (receive waits on a futex). `api` (both sides): poll (offer + poll(handler, 10), the
    default), receive (offer + receive()), claim (try_claim + commit + poll(handler, 10)).
    Returns percentiles in ns and all samples."""
    api = _check_api(api, idle)
    ctx = multiprocessing.get_context("spawn")
    total = warmup + messages
    samples = np.empty(messages, dtype=np.int64)
    with _bench_dir() as dir:
        with Publication(PING_STREAM, dir, exclusive=True) as pub, Subscription(PONG_STREAM, dir) as sub:
            ponger = ctx.Process(target=_ponger, args=(dir, total, idle, api), daemon=True)
            ponger.start()
            try:
                _wait_connected(pub, sub)
                payload = bytes(size)
                clock = time.perf_counter_ns
                interval = int(1e9 / rate) if rate else 0
                offer = _sender(pub, api)
                next_message = _receiver(sub, idle) if api == "receive" else _poller(sub, idle, _noop_handler)
                next_send = clock()
                for i in range(total):
                    if interval:
                        while clock() < next_send:
                            pass
                        start = next_send
                        next_send += interval
                    else:
                        start = clock()
                    while offer(payload) < 0:
                        pass
                    next_message()
                    if i >= warmup:
                        samples[i - warmup] = clock() - start
            finally:
                ponger.join(10)
                if ponger.is_alive():
                    ponger.kill()
    p = np.percentile(samples, [50, 90, 99, 99.9])
    from ._native import ffi, lib

    floor = np.zeros(messages, dtype=np.int64)
    lib.ls_bench_ping_floor(messages, warmup, size, ffi.from_buffer("int64_t[]", floor))
    return {"p50_ns": int(p[0]), "p90_ns": int(p[1]), "p99_ns": int(p[2]), "p999_ns": int(p[3]),
            "max_ns": int(samples.max()), "messages": messages, "size": size, "idle": idle, "api": api,
            "rate": rate, "c_floor_p50_ns": int(np.percentile(floor, 50)),
            "c_floor_p99_ns": int(np.percentile(floor, 99)), "noop_call_ns": _noop_ns(), "samples": samples,
            "c_floor_samples": floor}


# -- pictures -----------------------------------------------------------------------------

def percentile_axes(ax: Axes, title: str) -> None:
    """Axes for round-trip percentile curves, HdrHistogram style: x = 1 / (1 - percentile),
    log, labelled 50% .. 99.99%; y = microseconds, log."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([2, 10, 100, 1000, 10000], ["50%", "90%", "99%", "99.9%", "99.99%"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("round trip (us)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def plot_percentiles(ax: Axes, samples_ns: np.ndarray, label: str, linestyle: str = "-") -> None:
    """One curve of `samples_ns` (round trips in ns) on `percentile_axes`."""
    s = np.sort(np.asarray(samples_ns))
    q = (np.arange(len(s)) + 0.5) / len(s)
    ax.plot(1 / (1 - q), s / 1000, label=label, linestyle=linestyle)


def write_ping_plot(result: dict, path: str) -> str:
    """The percentile distribution of a `ping` result (with its C floor as a reference)
    written to `path` (PNG, SVG or PDF by suffix). Returns what was done, for the user."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: pip install 'lockstep[bench]' (or pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(8, 5))
    rate = f", {result['rate']:,.0f} msgs/s" if result["rate"] else ""
    percentile_axes(ax, f"lockstep ping, {result['size']} B, {result.get('api', 'receive')}, idle {result['idle']}{rate}")
    plot_percentiles(ax, result["samples"], "lockstep (Python)")
    plot_percentiles(ax, result["c_floor_samples"], "C floor (csrc, 2 threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


# -- sequencer ---------------------------------------------------------------------------

_STAMP = struct.Struct("<q")


# A paced client sleeps until this long before each send time, then spins to it: its CPU
# stays free for the agents it measures (a spinning client takes one of 2 cores), and it
# is late only when its wake-up took longer than this (the result's client_late_*).
PACE_SPIN_NS = 30_000


def _pace_until(deadline_ns: int, spin_ns: int) -> None:
    """Return at `deadline_ns` (CLOCK_MONOTONIC): asleep until `spin_ns` before it, then spinning."""
    clock = time.monotonic_ns
    ahead = deadline_ns - spin_ns - clock()
    if ahead > 0:
        time.sleep(ahead / 1e9)
    while clock() < deadline_ns:
        pass


def _precise_sleeps() -> None:
    """For a paced sender: timer slack 1 us (Linux's default 50 us would make every sleep up
    to 50 us late) and a short time slice (woken, it runs soon on a busy machine), as an agent
    asleep on doorbells has (`short_slice`); elsewhere a no-op."""
    from .transport.idle import short_slice

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass
    short_slice()


def _client(dir: str, commands: int, size: int, rate: float | None, batch: int = 1,
            spin_ns: int = PACE_SPIN_NS) -> None:
    """Send `commands` commands carrying their (intended) send time, CLOCK_MONOTONIC ns, and
    (size >= 16) the time it went; paced at `rate` by `_pace_until`; with `batch` > 1,
    `send_batch` of that many at a time (all with the batch's send time)."""
    from .cluster.sequencer import SequencerClient

    _precise_sleeps()
    idler = idle_strategy("backoff")
    padding = bytes(max(size - 8, 0))
    interval = int(1e9 / rate) if rate else 0
    with SequencerClient(dir) as client:
        clock = time.monotonic_ns
        if batch > 1:
            left = commands
            while left:
                chunk = [_STAMP.pack(clock()) + padding] * min(batch, left)
                while chunk:
                    sent = client.send_batch(chunk)
                    del chunk[:sent]
                    left -= sent
                    if chunk:
                        idler.idle(sent)
                idler.reset()
            return
        next_send = clock()
        for _ in range(commands):
            if interval:
                _pace_until(next_send, spin_ns)
                stamp, next_send = next_send, next_send + interval
            else:
                stamp = clock()
            command = _STAMP.pack(stamp) + (_STAMP.pack(clock()) + padding[8:] if size >= 16 else padding)
            while not client.send(command):
                idler.idle(0)
            idler.reset()


class _Stamps(StateMachine):
    """A trivial machine: counts commands and keeps each one's send-to-apply latency, and
    where it went: the client's lateness (its send after the intended time, when the command
    has room for a second stamp) and intended send -> sequenced (the sequencer's timestamp)."""

    def __init__(self, commands: int) -> None:
        self.latencies = np.zeros(commands, dtype=np.int64)
        self.late = np.zeros(commands, dtype=np.int64)
        self.sequenced = np.zeros(commands, dtype=np.int64)
        self.realtime_offset = time.time_ns() - time.monotonic_ns()  # the sequencer stamps CLOCK_REALTIME
        self.count = 0

    def on_message(self, ctx: Context, command: bytes) -> None:
        i = self.count
        if i < len(self.latencies):
            intended = _STAMP.unpack_from(command)[0]
            self.latencies[i] = time.monotonic_ns() - intended
            self.sequenced[i] = ctx.timestamp_ns - self.realtime_offset - intended
            if len(command) >= 2 * _STAMP.size:
                self.late[i] = _STAMP.unpack_from(command, _STAMP.size)[0] - intended
        self.count = i + 1

    def snapshot(self) -> bytes:
        return _STAMP.pack(self.count)

    def restore(self, data: bytes) -> None:
        (self.count,) = _STAMP.unpack(data)

    def state_hash(self) -> bytes:
        return self.snapshot()


def sequencer(commands: int = 1_000_000, clients: int = 2, size: int = 32, rate: float | None = None,
              batch: int = 1, round_trips: int = 0) -> dict:
    """`clients` processes send `commands` in total through ingress -> sequencer -> log;
    this process runs the sequencer and reads the log. Without `rate`: commands/s (the log
    read in batches; `batch` > 1: the clients use `send_batch` of that many). With `rate`: a
    replica of a trivial machine applies each command and send-to-apply latency percentiles
    are reported, from the intended send time (a late client counts) and, size >= 16, from
    the client's send call (its back-pressure counts, its oversleeping does not); with
    `round_trips`, next to that many blocking round trips of the same run (`ping(idle="block")`,
    the yardstick of issue 18's target). Both report the machine's apply rate on its own (an
    offline replay of the log) and the C floor of the same loop, in this run."""
    from ._native import lib
    from .cluster.replica import OfflineReplica, Replica
    from .transport.reader import LogReader
    from .cluster.sequencer import Sequencer

    ctx = multiprocessing.get_context("spawn")
    with _bench_dir() as dir:
        seq = Sequencer(dir, term_length=TERM_LENGTH)
        machine = _Stamps(commands if rate else 0)
        replica = Replica(machine, dir, name="bench", hash_every=0, send_outputs=False)
        read_log = replica.do_work
        if not rate:
            # Throughput: count the log in batches, so the sequencer, not Python's
            # per-message apply, is what is measured (the apply rate is measured below).
            def count(batch: Batch) -> None:
                machine.count += len(batch)

            def read_log(limit: int = 256) -> int:
                return replica.subscription.poll_batch(count, limit)
        per_client = [commands // clients + (i < commands % clients) for i in range(clients)]
        if rate and batch > 1:
            raise ValueError("batch: the latency run (rate) sends one command at a time")
        procs = [ctx.Process(target=_client, args=(dir, n, size, rate / clients if rate else None, batch), daemon=True)
                 for n in per_client]
        try:
            for p in procs:
                p.start()
            idler = default_idle(seq, replica)  # asleep on the ingress and the log: a send wakes it
            start: float | None = None
            deadline = time.monotonic() + 600
            while machine.count < commands:
                work = seq.do_work() + read_log(4096)
                if work and start is None:
                    start = time.perf_counter()
                idler.idle(work)
                if time.monotonic() > deadline or (work == 0 and any(p.exitcode for p in procs)):
                    raise RuntimeError(f"sequencer benchmark stalled at {machine.count} of {commands}")
            assert start is not None  # (the first command counted started the clock)
            elapsed = time.perf_counter() - start
            log_path = seq.log.path
            replica.close()
            seq.close()
            # The machine alone: the same log replayed offline, no IPC in the loop.
            with LogReader(log_path) as reader:  # what the log still holds
                offline = OfflineReplica(_Stamps(0))
                apply_start = time.perf_counter()
                applied = 0
                while True:
                    n = reader.poll(lambda data, header: offline.apply(data, header.position), 4096)
                    applied += n
                    if n == 0:
                        break
                apply_elapsed = time.perf_counter() - apply_start
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
    floor_ns = lib.ls_bench_sequencer_floor(commands, clients, size)
    pct = np.percentile(machine.latencies, [50, 99]) if rate else (None, None)
    # Where the latency went (rate runs): the client's lateness, intended send -> sequenced,
    # and the latency from the client's send call (size >= 16: the command carries that stamp).
    series = [("client_late", machine.late), ("to_sequenced", machine.sequenced)]
    if size >= 2 * _STAMP.size:
        series.append(("from_send", machine.latencies - machine.late))
    parts: dict[str, int] = {f"{name}_{q}_ns": int(np.percentile(values, p)) for name, values in series
                             for q, p in (("p50", 50), ("p99", 99))} if rate else {}
    if rate and round_trips:
        trip = ping(messages=round_trips, warmup=max(round_trips // 10, 100), idle="block")
        parts["round_trip_p50_ns"] = trip["p50_ns"]
    return {"commands_per_sec": commands / elapsed, "commands": commands, "clients": clients, "size": size,
            "rate": rate, "batch": batch, "latency_p50_ns": pct[0] and int(pct[0]), "latency_p99_ns": pct[1] and int(pct[1]),
            "apply_per_sec": applied / apply_elapsed if apply_elapsed else 0.0,
            "c_floor_commands_per_sec": commands / floor_ns * 1e9 if floor_ns > 0 else None,
            "ratio_to_c_floor": (commands / elapsed) / (commands / floor_ns * 1e9) if floor_ns > 0 else None, **parts,
            "idle": {k: getattr(idler, k, 0) for k in ("sleeps", "parks")}}


# -- halt --------------------------------------------------------------------------------

_HALT_GATEWAY = "bench"
_READY, _ACTED, _REACHED, _RESUMED = range(4)  # the gateway's progress, in a shared array


class _Progress(Protocol):
    """The gateway's progress (a shared array of int64, indexed _READY .. _RESUMED)."""

    def __setitem__(self, index: int, value: int, /) -> None: ...


def _halt_gateway(dir: str, venue_rate: float, progress: _Progress, stop: Event) -> None:
    """The gateway of `halt`: a venue that takes `venue_rate` requests/s, so the log backs up
    behind it; its default idle strategy; its halts put in `<dir>/bench-halts.json` at the end."""
    from .cluster.gateway import Gateway
    from .transport.idle import agent_idle

    class ThrottledGateway(Gateway):
        """Sends one request per venue interval; waiting for the next, it does not read the
        log (asleep on its side channel until the interval ends). Halted, it declines at once."""

        def __init__(self) -> None:
            super().__init__(_HALT_GATEWAY, dir, start="earliest")
            self.interval_ns = int(1e9 / venue_rate)
            self.next_send_ns = 0
            self.waiting = 0

        def on_command(self, command: memoryview, sequence: int, position: int) -> None:
            self.requests += 1
            if self.halted:
                self.declined += 1  # (counted only: no sequencer runs to take declines)
            else:
                self.waiting += 1
                self.poll_venue()

        def poll_venue(self) -> int:
            sent = 0
            while self.waiting and not self.check_priority():  # a halt goes before any send
                now = time.monotonic_ns()
                if now < self.next_send_ns:
                    break
                self.next_send_ns = now + self.interval_ns
                self.waiting -= 1
                self.to_venue += 1
                sent += 1
            return sent

        def ready_for_log(self) -> bool:
            return not self.waiting

        def venue_timer_ns(self) -> int | None:
            return self.next_send_ns if self.waiting else None

        def on_halt(self, record: HaltRecord) -> None:
            self.declined += self.waiting
            self.waiting = 0

    gw = ThrottledGateway()
    try:
        idle = agent_idle(gw.do_work)
        progress[_READY] = 1
        while not stop.is_set():
            work = gw.do_work()
            halts = gw.halts
            if halts:
                progress[_ACTED] = len(halts)
                progress[_REACHED] = sum(1 for h in halts if h.reached_ns)
                progress[_RESUMED] = sum(1 for h in halts if h.resumed_ns)
            idle.idle(work)
        with open(os.path.join(dir, "bench-halts.json"), "w") as f:
            json.dump({"halts": [h.to_dict() for h in gw.halts], "idle": type(idle).__name__,
                       "requests": gw.requests, "to_venue": gw.to_venue}, f)
    finally:
        gw.close()


def _percentiles(values: list[int]) -> dict:
    a = np.asarray(values, dtype=np.int64)
    p = np.percentile(a, [50, 99]) if len(a) else (0, 0)
    return {"p50_ns": int(p[0]), "p99_ns": int(p[1]), "max_ns": int(a.max()) if len(a) else 0}


def halt(halts: int = 200, rate: float = 20_000, venue_rate: float = 5_000, gap_ms: float = 10.0,
         round_trips: int = 5_000) -> dict:
    """A gateway process behind a backlogged log (written at `rate` messages/s, read at the
    `venue_rate` its venue takes) receives `halts` halts and resumes through its side channel,
    `gap_ms` of backlog apart. Per halt: sent -> acted (the side channel); sent -> the
    gateway's reading reached where the log was at the halt (queued in the log, read at a
    halted gateway's pace); the backlog at the venue's pace (what it would have waited queued
    and unhalted); per resume: sent -> acted. Then `round_trips` blocking round trips
    (`ping(idle="block")`) in the same run, the yardstick of two wake-ups."""
    from .cluster.gateway import halt as send_halt, resume as send_resume
    from .cluster.sequencer import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH

    ctx = multiprocessing.get_context("spawn")
    interval_ns = int(1e9 / rate)
    message = bytes(SEQUENCED_HEADER_LENGTH + 8)
    with _bench_dir() as dir:
        with Publication(DEFAULT_LOG_STREAM, dir, term_length=TERM_LENGTH) as log:
            progress = ctx.RawArray("q", 4)
            stop = ctx.Event()
            gateway = ctx.Process(target=_halt_gateway, args=(dir, venue_rate, progress, stop), daemon=True)
            gateway.start()
            written = back_pressured = 0
            next_write = time.monotonic_ns()

            def pump_until(condition: Callable[[], bool], what: str) -> None:
                """Keep writing the log at `rate` (what is due, then a short sleep) until `condition()`."""
                nonlocal written, back_pressured, next_write
                deadline = time.monotonic() + 60
                while not condition():
                    now = time.monotonic_ns()
                    while next_write <= now:
                        if log.offer(message) > 0:
                            written += 1
                        else:
                            back_pressured += 1
                        next_write += interval_ns
                    if gateway.exitcode is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"halt benchmark: waiting for {what}: gateway "
                                           f"{'exited ' + str(gateway.exitcode) if gateway.exitcode is not None else 'stalled'}")
                    time.sleep(0.0002)

            try:
                pump_until(lambda: progress[_READY] == 1 and log.is_connected, "the gateway to start")
                resumes_sent = []
                for i in range(halts):
                    gap_end = time.monotonic() + gap_ms / 1000
                    pump_until(lambda: time.monotonic() >= gap_end, "the backlog to build")
                    sent = send_halt(dir, _HALT_GATEWAY, log_position=log.position, reason="bench")
                    if not sent["gateways"][0]["delivered"]:
                        raise RuntimeError("halt benchmark: the side channel is full")
                    pump_until(lambda: progress[_ACTED] > i and progress[_REACHED] > i, f"halt {i + 1}")
                    resumes_sent.append(send_resume(dir, _HALT_GATEWAY, reason="bench")["sent_ns"])
                    pump_until(lambda: progress[_RESUMED] > i, f"resume {i + 1}")
            finally:
                stop.set()
                gateway.join(30)
                if gateway.is_alive():
                    gateway.kill()
            if gateway.exitcode != 0:
                raise RuntimeError(f"halt benchmark: the gateway process exited with {gateway.exitcode}")
            with open(os.path.join(dir, "bench-halts.json")) as f:
                report = json.load(f)
    records = report["halts"]
    latencies = [r["latency_ns"] for r in records]
    delays = [r["sequenced_delay_ns"] for r in records if r["sequenced_delay_ns"] is not None]
    resumes = [r["resumed_ns"] - sent for r, sent in zip(records, resumes_sent) if r["resumed_ns"]]
    trip = ping(messages=round_trips, warmup=max(round_trips // 10, 100), idle="block")
    result = {
        "halts": len(records), "rate": rate, "venue_rate": venue_rate, "gap_ms": gap_ms,
        "gateway_idle": report["idle"], "log_messages_written": written, "log_back_pressured": back_pressured,
        "side_channel": _percentiles(latencies), "queued_in_log": _percentiles(delays),
        # Queued in the log, the gateway would not have been halted on its way there: it would
        # have sent the backlog before it at the venue's pace (an estimate: backlog / venue_rate).
        "queued_at_venue_pace": _percentiles([int(r["backlog_messages"] * 1e9 / venue_rate) for r in records]),
        "resume": _percentiles(resumes),
        "backlog_messages_p50": int(np.percentile([r["backlog_messages"] for r in records], 50)) if records else 0,
        "round_trip_block": {k: trip[k] for k in ("p50_ns", "p99_ns", "max_ns")},
    }
    result["p99_to_round_trip_p50"] = result["side_channel"]["p99_ns"] / max(trip["p50_ns"], 1)
    result["log_delay_to_side_channel_p50"] = result["queued_in_log"]["p50_ns"] / max(result["side_channel"]["p50_ns"], 1)
    return result
