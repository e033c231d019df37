#!/usr/bin/env python
"""lockstep next to the IPC options Python users reach for today, in one run, on one machine.

The SAME two-process harness runs over every peer:

* ping: this process sends a message and waits for an echo from a second process; one
  round trip per sample, `perf_counter_ns` before the send and after the echo is received;
  the first `--warmup` round trips are dropped; percentiles are exact, over all samples
  (numpy), not estimated from buckets.
* throughput: a second process sends `--warmup` + `--tput-messages` messages, one per
  call; this process receives them one per call and times the last `--tput-messages`.

Every peer gets the same message size and counts, and runs alone (one after another:
on a 2-core machine two spinning pairs at once would measure the scheduler). Each
process sees a transport as two functions, `send(bytes)` and `recv() -> bytes`, so
every peer pays the same harness overhead; lockstep's own harness (`lockstep bench`,
which drains up to 4096 messages per poll) is reported as extra rows for reference.

    python bench/compare.py                      # about a minute
    python bench/compare.py --json               # one JSON object
    python bench/compare.py --plot compare.png   # percentile + throughput chart
    python bench/compare.py --only lockstep,baseline,pipe --messages 5000
    python bench/compare.py --pyaeron-python /path/to/python3.13   # adds pyaeron

Ratios, not absolute numbers, are the point: compare rows of the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import signal
import struct
import subprocess
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
PYAERON_SCRIPT = HERE / "compare_pyaeron.py"
PERCENTILES = {"p50_ns": 50, "p90_ns": 90, "p99_ns": 99, "p999_ns": 99.9}
RUN_TIMEOUT_S = 180  # per peer and benchmark: a hung peer becomes an "error" row
REFERENCE = "lockstep-spin"
# What each row calls per message; rows are compared with lockstep's row of the same API.
SEND_RECV, POLL = "send/recv", "poll(handler)"
REFERENCES = {SEND_RECV: REFERENCE, POLL: "lockstep-poll"}


@dataclass
class End:
    """One side of a one-way channel as the harness sees it."""

    fn: Callable  # send(data) or recv() -> bytes
    wait: Callable[[], None] = lambda: None  # until the other side is attached
    close: Callable[[], None] = lambda: None


# -- the pure-Python baseline ------------------------------------------------------------

_INDEX = struct.Struct("q")  # native format: one aligned 8-byte memcpy, i.e. a single store/load


class ShmRing:
    """The baseline: a single-producer single-consumer ring of fixed `slot`-byte slots in
    `multiprocessing.shared_memory`, pure Python, busy-spinning. Consumer index at byte 0,
    producer index at byte 64 (own cache lines), slots from byte 128.

    Correct ONLY on x86-64 (TSO): the producer copies the slot and then stores its index,
    the consumer loads the index and then copies the slot, and nothing but the hardware's
    store order (x86 never reorders a store with an earlier store, nor a load with an
    earlier load) makes the slot visible before the index. CPython emits no fences; on
    ARM or POWER this ring can hand over a stale slot."""

    def __init__(self, buf: memoryview, slot: int, slots: int) -> None:
        self.buf, self.slot, self.mask = buf, slot, slots - 1
        self.head = _INDEX.unpack_from(buf, 0)[0]  # consumer's index: only the consumer writes it
        self.tail = _INDEX.unpack_from(buf, 64)[0]  # producer's index: only the producer writes it
        self.known_head = self.head  # producer's last load of head: reloaded only when the ring looks full
        self.known_tail = self.tail  # consumer's last load of tail: reloaded only when the ring looks empty

    def send(self, data: bytes) -> None:
        buf, tail = self.buf, self.tail
        while tail - self.known_head > self.mask:  # full: spin
            self.known_head = _INDEX.unpack_from(buf, 0)[0]
        off = 128 + (tail & self.mask) * self.slot
        buf[off:off + self.slot] = data
        self.tail = tail + 1
        _INDEX.pack_into(buf, 64, tail + 1)  # publish after the slot (x86-64 store order)

    def recv(self) -> bytes:
        buf, head = self.buf, self.head
        while head == self.known_tail:  # empty: spin
            self.known_tail = _INDEX.unpack_from(buf, 64)[0]
        off = 128 + (head & self.mask) * self.slot
        data = bytes(buf[off:off + self.slot])
        self.head = head + 1
        _INDEX.pack_into(buf, 0, head + 1)  # free the slot after copying it out
        return data


# -- peers ------------------------------------------------------------------------------

class Peer:
    """A transport under test. `channel()` runs in this process before the child starts
    and returns a picklable spec; `sender(spec)` / `receiver(spec)` run in whichever
    process uses that end."""

    key = ""
    family = ""  # what --only matches
    mode = ""
    label = ""

    def missing(self) -> str | None:
        """Why this peer cannot run here (None: it can)."""
        return None

    def version(self) -> str | None:
        return None

    def channel(self, ctx, workdir: str, size: int, index: int) -> Any:
        raise NotImplementedError

    def sender(self, spec: Any) -> End:
        raise NotImplementedError

    def receiver(self, spec: Any) -> End:
        raise NotImplementedError

    def release(self, spec: Any) -> None:
        pass


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


class LockstepPeer(Peer):
    family = "lockstep"

    def __init__(self, idle: str) -> None:
        self.idle = idle
        self.key = f"lockstep-{idle}"
        self.mode = {"spin": "busy spin", "block": "blocking (futex)"}.get(idle, f"{idle} idle")
        self.label = f"lockstep ({idle})"

    def missing(self) -> str | None:
        try:
            import lockstep  # noqa: F401
        except ImportError as e:
            return f"not installed ({e})"
        return None

    def version(self) -> str | None:
        import lockstep

        return lockstep.__version__

    def channel(self, ctx, workdir, size, index):
        return (workdir, 2001 + index)

    def sender(self, spec):
        from lockstep import Publication
        from lockstep.bench import _wait_connected
        from lockstep.transport.idle import idle_strategy

        dir, stream = spec
        pub = Publication(stream, dir, exclusive=True)  # the defaults a user gets (1 MiB terms)
        offer = pub.offer
        if self.idle == "spin":
            def send(data):
                while offer(data) < 0:
                    pass
        else:  # a blocked writer (back-pressure) backs off, as it does for "block" readers
            idle = idle_strategy("backoff" if self.idle == "block" else self.idle).idle

            def send(data):
                while offer(data) < 0:
                    idle(0)
        return End(send, lambda: _wait_connected(pub), pub.close)

    def receiver(self, spec):
        from lockstep import Subscription
        from lockstep.bench import _receiver

        dir, stream = spec
        sub = Subscription(stream, dir)

        def wait():
            deadline = time.monotonic() + 30
            while not sub.discover():
                if time.monotonic() > deadline:
                    raise TimeoutError("lockstep publisher not found")
                time.sleep(0.001)

        return End(_receiver(sub, self.idle), wait, sub.close)


class BaselinePeer(Peer):
    key = "baseline-ring"
    family = "baseline"
    mode = "busy spin"
    label = "pure-Python shm ring"
    SLOTS = 1024

    def channel(self, ctx, workdir, size, index):
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(create=True, size=128 + self.SLOTS * size)
        shm.buf[:128] = bytes(128)
        self._owned = getattr(self, "_owned", {})
        self._owned[shm.name] = shm
        return (shm.name, size)

    def _open(self, spec):
        from multiprocessing import shared_memory

        name, size = spec
        owned = getattr(self, "_owned", {}).get(name)
        # The other process attaches; it shares the parent's resource tracker (spawn), so its
        # registration of the name is the same entry the parent's unlink() removes.
        shm = owned or shared_memory.SharedMemory(name=name)
        ring = ShmRing(shm.buf, size, self.SLOTS)

        def close():
            ring.buf = None  # drop our reference to the view before SharedMemory.close()
            if owned is None:
                shm.close()

        return ring, close

    def sender(self, spec):
        ring, close = self._open(spec)
        return End(ring.send, close=close)

    def receiver(self, spec):
        ring, close = self._open(spec)
        return End(ring.recv, close=close)

    def release(self, spec):
        shm = self._owned.pop(spec[0], None)
        if shm is not None:
            shm.close()
            shm.unlink()


class PipePeer(Peer):
    key = family = "pipe"
    mode = "blocking"
    label = "multiprocessing.Pipe"

    def channel(self, ctx, workdir, size, index):
        return ctx.Pipe()  # (receiving end, sending end); a socketpair, as users get by default

    def sender(self, spec):
        conn = spec[1]
        return End(conn.send_bytes)

    def receiver(self, spec):
        conn = spec[0]
        return End(conn.recv_bytes)


class QueuePeer(Peer):
    mode = "blocking"

    def __init__(self, simple: bool) -> None:
        self.simple = simple
        self.key = self.family = "simplequeue" if simple else "queue"
        self.label = "multiprocessing.SimpleQueue" if simple else "multiprocessing.Queue"

    def channel(self, ctx, workdir, size, index):
        return ctx.SimpleQueue() if self.simple else ctx.Queue()

    def sender(self, spec):
        return End(spec.put)

    def receiver(self, spec):
        return End(spec.get)


class ZmqPeer(Peer):
    key = "pyzmq-ipc"
    family = "pyzmq"
    mode = "blocking"
    label = "pyzmq PAIR ipc://"

    def missing(self):
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "not installed (pip install pyzmq)"
        return None

    def version(self):
        import zmq

        return f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}"

    def channel(self, ctx, workdir, size, index):
        return f"ipc://{workdir}/zmq-{index}.sock"

    def _socket(self, address: str, bind: bool):
        import zmq

        context = zmq.Context()
        sock = context.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(address) if bind else sock.connect(address)

        def close():
            sock.close(linger=0)
            context.term()

        return sock, close

    def sender(self, spec):
        sock, close = self._socket(spec, bind=False)
        return End(sock.send, close=close)

    def receiver(self, spec):
        sock, close = self._socket(spec, bind=True)
        return End(sock.recv, close=close)


class FasterFifoPeer(Peer):
    family = "faster-fifo"

    def __init__(self, spin: bool) -> None:
        self.spin = spin
        self.key = "faster-fifo-spin" if spin else "faster-fifo"
        self.mode = "busy spin (get_nowait)" if spin else "blocking"
        self.label = "faster-fifo Queue"

    def missing(self):
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return "not installed (pip install faster-fifo)"
        return None

    def version(self):
        return _dist_version("faster-fifo")

    def channel(self, ctx, workdir, size, index):
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=1 << 20)

    def sender(self, spec):
        put = spec.put

        def send(data):
            put(data, timeout=RUN_TIMEOUT_S)

        return End(send)

    def receiver(self, spec):
        if not self.spin:
            get = spec.get

            def recv():
                return get(timeout=RUN_TIMEOUT_S)

            return End(recv)
        from queue import Empty

        get_nowait = spec.get_nowait

        def recv():
            while True:
                try:
                    return get_nowait()
                except Empty:
                    pass

        return End(recv)


class PosixMqPeer(Peer):
    """posix_ipc: one POSIX message queue (mq_send / mq_receive, in the kernel) per direction,
    created by this process with a unique name and unlinked in release()."""

    family = "posix_ipc"

    def __init__(self, spin: bool) -> None:
        self.spin = spin
        self.key = "posix-mq-spin" if spin else "posix-mq"
        self.mode = "busy spin (block=False)" if spin else "blocking"
        self.label = "posix_ipc MessageQueue"

    def missing(self):
        try:
            import posix_ipc
        except ImportError:
            return "not installed (pip install posix_ipc)"
        if not posix_ipc.MESSAGE_QUEUES_SUPPORTED:
            return "posix_ipc: no POSIX message queues on this platform"
        return None

    def version(self):
        return _dist_version("posix_ipc")

    def channel(self, ctx, workdir, size, index):
        import posix_ipc

        name = f"/lockstep-compare-{os.getpid()}-{Path(workdir).name}-{index}"
        # The system's default depth (fs.mqueue.msg_max, 10 on Linux): what an unprivileged user can ask for.
        mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=posix_ipc.QUEUE_MESSAGES_MAX_DEFAULT,
                                    max_message_size=size)
        self._owned = getattr(self, "_owned", {})
        self._owned[name] = mq
        return name

    def _open(self, name):
        import posix_ipc

        owned = getattr(self, "_owned", {}).get(name)
        mq = owned or posix_ipc.MessageQueue(name)
        return mq, (lambda: None) if owned else mq.close

    def sender(self, spec):
        mq, close = self._open(spec)
        return End(mq.send, close=close)

    def receiver(self, spec):
        import posix_ipc

        mq, close = self._open(spec)
        receive = mq.receive
        if not self.spin:
            def recv():
                return receive()[0]

            return End(recv, close=close)
        mq.block = False  # O_NONBLOCK: receive() raises BusyError when the queue is empty
        busy = posix_ipc.BusyError

        def recv():
            while True:
                try:
                    return receive()[0]
                except busy:
                    pass

        return End(recv, close=close)

    def release(self, spec):
        mq = self._owned.pop(spec, None)
        if mq is not None:
            mq.close()
            mq.unlink()


class Iceoryx2Peer(Peer):
    """iceoryx2 (Rust, zero-copy shared memory): one publish-subscribe service of u8 slices per
    direction, no overflow (the publisher retries until delivered), busy-spinning receive."""

    key = "iceoryx2"
    family = "iceoryx2"
    mode = "busy spin"
    label = "iceoryx2 publish-subscribe"
    SLOTS = 1024  # subscriber buffer, as the baseline ring's slots

    def missing(self):
        try:
            import iceoryx2  # noqa: F401
        except ImportError:
            return "not installed (pip install iceoryx2)"
        return None

    def version(self):
        return _dist_version("iceoryx2")

    def _service(self, name: str, create: bool = False):
        import ctypes

        import iceoryx2 as iox2

        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)  # not its 'no config file' warning
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        builder = (node.service_builder(iox2.ServiceName.new(name)).publish_subscribe(iox2.Slice[ctypes.c_uint8])
                   .enable_safe_overflow(False).subscriber_max_buffer_size(self.SLOTS)
                   .max_publishers(1).max_subscribers(1))
        return node, builder.create() if create else builder.open()

    def channel(self, ctx, workdir, size, index):
        name = f"lockstep-compare/{os.getpid()}/{Path(workdir).name}/{index}"
        self._owned = getattr(self, "_owned", {})
        self._owned[name] = self._service(name, create=True)
        return (name, size)

    def _open(self, spec):
        name, size = spec
        return getattr(self, "_owned", {}).get(name) or self._service(name)

    def sender(self, spec):
        import ctypes

        import iceoryx2 as iox2

        node, service = self._open(spec)
        size = spec[1]
        pub = (service.publisher_builder().initial_max_slice_len(size)
               .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create())
        loan, memmove = pub.loan_slice_uninit, ctypes.memmove

        def send(data):
            sample = loan(len(data))
            memmove(sample.payload_ptr, data, len(data))
            sample.assume_init().send()

        def wait():
            _wait_for(lambda: service.dynamic_config.number_of_subscribers > 0, "iceoryx2 subscriber")
            pub.update_connections()

        def close():
            nonlocal pub, node, service
            pub.delete()
            pub = node = service = None

        return End(send, wait, close)

    def receiver(self, spec):
        import ctypes

        node, service = self._open(spec)
        size = spec[1]
        string_at = ctypes.string_at
        sub = None

        def recv():
            while True:
                sample = receive()
                if sample is not None:
                    data = string_at(sample.payload_ptr, size)  # fixed-size messages, as the ring's slots
                    sample.delete()
                    return data

        def wait():
            # The subscriber is created once the publisher exists: created before it, it
            # sometimes never saw the publisher's samples here (iceoryx2 0.10.0).
            nonlocal sub, receive
            _wait_for(lambda: service.dynamic_config.number_of_publishers > 0, "iceoryx2 publisher")
            sub = service.subscriber_builder().create()
            receive = sub.receive

        def close():
            nonlocal sub, node, service
            if sub is not None:
                sub.delete()
            sub = node = service = None

        receive = None
        return End(recv, wait, close)

    def release(self, spec):
        self._owned.pop(spec[0], None)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not found")
        time.sleep(0.001)


PEERS: dict[str, Peer] = {p.key: p for p in (
    LockstepPeer("spin"), LockstepPeer("backoff"), LockstepPeer("block"), BaselinePeer(), PipePeer(), QueuePeer(False),
    QueuePeer(True), ZmqPeer(), FasterFifoPeer(False), FasterFifoPeer(True), PosixMqPeer(False), PosixMqPeer(True),
    Iceoryx2Peer())}


# -- the harness ------------------------------------------------------------------------

def _payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def _echo_child(key: str, ping_spec, pong_spec, total: int, ready, done) -> None:
    """The second process of ping: echo `total` messages."""
    peer = PEERS[key]
    rx = peer.receiver(ping_spec)
    tx = peer.sender(pong_spec)
    rx.wait()
    tx.wait()
    ready.set()
    recv, send = rx.fn, tx.fn
    for _ in range(total):
        send(recv())
    done.wait(RUN_TIMEOUT_S)
    tx.close()
    rx.close()


def _producer_child(key: str, spec, size: int, total: int, ready, done) -> None:
    """The second process of throughput: send `total` messages, one per call."""
    peer = PEERS[key]
    tx = peer.sender(spec)
    tx.wait()
    ready.set()
    send = tx.fn
    payload = _payload(size)
    for _ in range(total):
        send(payload)
    done.wait(RUN_TIMEOUT_S)  # keep our end open until the consumer has everything
    tx.close()


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout(f"no result within {RUN_TIMEOUT_S} s")


def _run(peer: Peer, size: int, target: Callable, build: Callable, body: Callable) -> Any:
    """Common plumbing: a private work directory, channels, the child process, a timeout."""
    ctx = multiprocessing.get_context("spawn")
    workdir = tempfile.mkdtemp(prefix="lockstep-compare-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    specs: list = []
    child = None
    ends: list[End] = []
    ready, done = ctx.Event(), ctx.Event()
    finished = False
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(RUN_TIMEOUT_S)
    try:
        def channel():
            specs.append(peer.channel(ctx, workdir, size, len(specs)))
            return specs[-1]

        args, mine = build(channel)
        ends.extend(mine)
        child = ctx.Process(target=target, args=(peer.key, *args, ready, done), daemon=True)
        child.start()
        for end in ends:
            end.wait()
        while not ready.wait(0.1):
            if not child.is_alive():
                raise RuntimeError(f"{peer.key} child exited with {child.exitcode}")
        result = body(*(e.fn for e in ends))
        finished = True
        return result
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        done.set()
        if child is not None:
            child.join(10 if finished else 1)  # after a failure the child may be stuck in recv
            if child.is_alive():
                child.kill()
                child.join()
        for end in ends:
            try:
                end.close()
            except Exception:
                pass
        for spec in specs:
            peer.release(spec)
        shutil.rmtree(workdir, ignore_errors=True)


def run_ping(peer: Peer, size: int, messages: int, warmup: int) -> np.ndarray:
    """Round-trip times (ns) of `messages` echoes after `warmup` unrecorded ones."""
    total = warmup + messages

    def build(channel):
        ping, pong = channel(), channel()
        return (ping, pong, total), [peer.sender(ping), peer.receiver(pong)]

    def body(send, recv):
        payload = _payload(size)
        clock = time.perf_counter_ns
        samples = [0] * total
        for i in range(total):
            start = clock()
            send(payload)
            recv()
            samples[i] = clock() - start
        return np.array(samples[warmup:], dtype=np.int64)

    return _run(peer, size, _echo_child, build, body)


def run_throughput(peer: Peer, size: int, messages: int, warmup: int) -> float:
    """Seconds to receive `messages` one-way messages, after `warmup` untimed ones."""

    def build(channel):
        spec = channel()
        return (spec, size, warmup + messages), [peer.receiver(spec)]

    def body(recv):
        for _ in range(warmup):
            recv()
        start = time.perf_counter_ns()
        for _ in range(messages):
            recv()
        return (time.perf_counter_ns() - start) / 1e9

    return _run(peer, size, _producer_child, build, body)


def ping_stats(samples: np.ndarray, messages: int) -> dict:
    p = np.percentile(samples, list(PERCENTILES.values()))
    stats = {k: int(v) for k, v in zip(PERCENTILES, p)}
    stats.update(max_ns=int(samples.max()), mean_ns=float(samples.mean()), messages=messages)
    return stats


def tput_stats(seconds: float, messages: int, size: int) -> dict:
    rate = messages / seconds
    return {"msgs_per_sec": rate, "mb_per_sec": rate * size / 1e6, "ns_per_msg": 1e9 / rate,
            "messages": messages, "seconds": seconds}


# -- rows other than the common harness -------------------------------------------------

def lockstep_native(size: int, messages: int, warmup: int, tput_messages: int) -> tuple[dict, dict, dict]:
    """lockstep's own harness (`lockstep bench ping|throughput`, idle spin): poll drains up
    to 4096 per call; plus its batch (numpy) throughput and the C floors of both loops."""
    from lockstep import bench

    ping = bench.ping(size=size, messages=messages, warmup=warmup, idle="spin")
    samples = ping.pop("samples")
    one = bench.throughput(size=size, messages=tput_messages, batch=False, idle="spin")
    batch = bench.throughput(size=size, messages=tput_messages, batch=True, idle="spin")
    native = {"ping": ping_stats(samples, messages), "throughput": _from_native(one, size), "samples": samples}
    batch_row = {"ping": None, "throughput": _from_native(batch, size)}
    floor = {"ping": {"p50_ns": ping["c_floor_p50_ns"], "p99_ns": ping["c_floor_p99_ns"], "messages": messages},
             "throughput": {"msgs_per_sec": one["c_floor_msgs_per_sec"],
                            "mb_per_sec": one["c_floor_msgs_per_sec"] * size / 1e6,
                            "ns_per_msg": 1e9 / one["c_floor_msgs_per_sec"], "messages": tput_messages},
             "noop_call_ns": ping["noop_call_ns"]}
    return native, batch_row, floor


# poll(handler): the harness functions of compare_pyaeron.py (stdlib only), run here over
# lockstep and there over pyaeron, so both rows are the same code around the same API.
_POLL_PING, _POLL_PONG, _POLL_DATA = 2101, 2102, 2103


def _poll_harness():
    """bench/compare_pyaeron.py as a module (its poll(handler) harness)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_pyaeron", PYAERON_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Ends:
    """One process's side of the poll(handler) harness over lockstep: an exclusive publication
    (the defaults a user gets; or None) with send(data) offering until accepted, and a
    subscription (or None) whose poll the harness calls; driverless in `dir`, or through the
    media driver whose directory `aeron_dir` is (lockstep.aeron, aeron:ipc)."""

    def __init__(self, dir: str, out_stream: int | None, in_stream: int | None, aeron_dir: str | None = None) -> None:
        from lockstep import Publication, Subscription

        self.aeron = self.pub = self.sub = None
        if aeron_dir is None:
            self.sub = None if in_stream is None else Subscription(in_stream, dir)
            self.pub = None if out_stream is None else Publication(out_stream, dir, exclusive=True)
        else:
            from lockstep.aeron import Aeron

            self.aeron = aeron = Aeron(aeron_dir)
            self.sub = None if in_stream is None else aeron.add_subscription("aeron:ipc", in_stream)
            self.pub = None if out_stream is None else aeron.add_exclusive_publication("aeron:ipc", out_stream)
        offer = None if self.pub is None else self.pub.offer

        def send(data) -> None:
            while offer(data) < 0:
                pass
        self.send = send

    def close(self) -> None:
        for c in (self.pub, self.sub, self.aeron):
            if c is not None:
                c.close()


def _lockstep_poll_echo(dir: str, aeron_dir: str | None, total: int, ready, done) -> None:
    """The second process of the poll(handler) ping: poll_echo over lockstep."""
    ends = _Ends(dir, _POLL_PONG, _POLL_PING, aeron_dir)
    while not ends.sub.discover():  # (our publication connects once the parent has found it)
        time.sleep(0.001)
    ready.set()
    _poll_harness().poll_echo(ends.send, ends.sub.poll, total)
    done.wait(RUN_TIMEOUT_S)
    ends.close()


def _lockstep_poll_produce(dir: str, aeron_dir: str | None, size: int, total: int, ready, done) -> None:
    """The second process of the poll(handler) throughput: one offer per message."""
    from lockstep.bench import _wait_connected

    ends = _Ends(dir, _POLL_DATA, None, aeron_dir)
    ready.set()  # (the parent looks for the publication once we are ready)
    _wait_connected(ends.pub)
    _poll_harness().produce(ends.send, _payload(size), total)
    done.wait(RUN_TIMEOUT_S)
    ends.close()


def _in_child(target: Callable, args: tuple, body: Callable[[], Any]) -> Any:
    """Run `body` here while `target(*args, ready, done)` runs in a spawned process."""
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=target, args=(*args, ready, done), daemon=True)
    child.start()
    try:
        while not ready.wait(0.1):
            if not child.is_alive():
                raise RuntimeError(f"{target.__name__} exited with {child.exitcode}")
        return body()
    finally:
        done.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def lockstep_poll(size: int, messages: int, warmup: int, tput_messages: int,
                  aeron_dir: str | None = None) -> tuple[dict, np.ndarray]:
    """The poll(handler) rows' lockstep side: poll_ping against poll_echo (poll(handler, 10)
    both sides), then one offer per message into poll_consume (poll(handler, 256));
    driverless, or through the media driver in `aeron_dir`."""
    from lockstep.bench import _bench_dir, _wait_connected

    harness = _poll_harness()
    with _bench_dir() as dir:
        ends = _Ends(dir, _POLL_PING, _POLL_PONG, aeron_dir)
        try:
            def ping() -> list[int]:
                _wait_connected(ends.pub, ends.sub)
                return harness.poll_ping(ends.send, ends.sub.poll, _payload(size), warmup + messages)[warmup:]
            samples = np.asarray(_in_child(_lockstep_poll_echo, (dir, aeron_dir, warmup + messages), ping),
                                 dtype=np.int64)
        finally:
            ends.close()
        warm = tput_messages // 10
        data = _Ends(dir, None, _POLL_DATA, aeron_dir)
        try:
            def consume() -> tuple[float, int]:
                while not data.sub.discover():
                    time.sleep(0.001)
                return harness.poll_consume(data.sub.poll, warm, tput_messages)
            seconds, timed = _in_child(_lockstep_poll_produce, (dir, aeron_dir, size, warm + tput_messages), consume)
        finally:
            data.close()
    return {"ping": ping_stats(samples, len(samples)), "throughput": tput_stats(seconds, timed, size)}, samples


def _from_native(result: dict, size: int) -> dict:
    return {"msgs_per_sec": result["msgs_per_sec"], "mb_per_sec": result["mb_per_sec"],
            "ns_per_msg": result["ns_per_msg"], "messages": result["messages"], "seconds": result["seconds"]}


def run_pyaeron(python: str, script: str, size: int, messages: int, warmup: int, tput_messages: int,
                *extra: str) -> dict:
    """Run the pyaeron ping/throughput script under another interpreter (pyaeron needs
    CPython >= 3.12) and read its JSON: {"version", "ping_samples_ns": [...],
    "throughput_seconds", "throughput_messages"} and the poll_ ones of its poll(handler)
    harness (alone with `--poll-only` among `extra`)."""
    cmd = [python, script, "--size", str(size), "--messages", str(messages), "--warmup", str(warmup),
           "--tput-messages", str(tput_messages), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * RUN_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{Path(python).name} {Path(script).name} exited {proc.returncode}: {tail}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    samples = np.asarray(data.get("ping_samples_ns", [0]), dtype=np.int64)
    result = {"ping": ping_stats(samples, len(samples)),
              "throughput": tput_stats(data.get("throughput_seconds", 1.0), data.get("throughput_messages", 1), size),
              "samples": samples, "version": data.get("version"), "poll": None}
    if "poll_ping_samples_ns" in data:  # (a --pyaeron-script of the older contract has none)
        poll_samples = np.asarray(data["poll_ping_samples_ns"], dtype=np.int64)
        result["poll"] = {"ping": ping_stats(poll_samples, len(poll_samples)),
                          "throughput": tput_stats(data["poll_throughput_seconds"], data["poll_throughput_messages"],
                                                   size),
                          "samples": poll_samples, "version": data.get("version")}
    return result


def driver_rows(args, warmup: int, tput: int, samples: dict, say: Callable) -> list[dict]:
    """--aeron-driver: the poll(handler) harness through one aeronmd (the small-machine settings
    of `lockstep driver`: 1 MiB terms, one backoff-idle thread), lockstep.aeron then pyaeron."""
    ls = _row("lockstep-aeronmd", "lockstep.aeron via aeronmd", "busy spin", "lockstep", api=POLL,
              reference="lockstep-aeronmd")
    pa = _row("pyaeron-aeronmd", "pyaeron via aeronmd", "busy spin", "pyaeron", api=POLL, reference="lockstep-aeronmd")
    if not args.pyaeron_python:
        pa.update(status="skipped", reason="no --pyaeron-python")
    tmp = tempfile.mkdtemp(prefix="lockstep-compare-driver-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    driver = None
    try:
        from lockstep.aeron import MediaDriver
        from lockstep.aeron.driver import SMALL_MACHINE_DEFAULTS

        say("aeronmd: starting (lockstep driver's build) ...")
        driver = MediaDriver(Path(tmp) / "aeron", defaults=SMALL_MACHINE_DEFAULTS)
        say("lockstep-aeronmd: poll(handler) ping + throughput through aeronmd ...")
        try:
            result, samples["lockstep-aeronmd"] = lockstep_poll(args.size, args.messages, warmup, tput,
                                                                aeron_dir=str(driver.dir))
            ls.update(result)
        except Exception as e:
            ls.update(status="error", reason=f"{type(e).__name__}: {e}")
        if args.pyaeron_python:
            say("pyaeron-aeronmd: poll(handler) ping + throughput through the same aeronmd ...")
            try:
                poll = run_pyaeron(args.pyaeron_python, args.pyaeron_script, args.size, args.messages, warmup, tput,
                                   "--aeron-dir", str(driver.dir), "--poll-only")["poll"]
                samples["pyaeron-aeronmd"] = poll.pop("samples")
                pa.update(poll)
            except Exception as e:
                pa.update(status="error", reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # no driver (not built, no cmake...): both rows say why
        for r in (ls, pa):
            if r["status"] == "ok":
                r.update(status="error", reason=f"{type(e).__name__}: {e}")
    finally:
        if driver is not None:
            driver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return [ls, pa]


# -- report -----------------------------------------------------------------------------

def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"nproc": usable, "cpu_count": os.cpu_count(), "cpu_model": model or platform.processor() or "unknown",
            "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "loadavg_at_start": [round(x, 2) for x in load] if load else None}


def _row(key: str, label: str, mode: str, family: str, status: str = "ok", api: str = SEND_RECV,
         **extra) -> dict:
    row = {"key": key, "label": label, "mode": mode, "family": family, "api": api, "status": status,
           "reason": None, "version": None, "ping": None, "throughput": None,
           "vs_lockstep": {"p50": None, "p99": None, "throughput": None}}
    row.update(extra)
    return row


def add_ratios(rows: list[dict]) -> None:
    """vs_lockstep: how many times lockstep (spin, same harness, same API: its row of the
    row's `api`, else lockstep-spin) is ahead: peer p50 / lockstep p50, peer p99 / lockstep
    p99, lockstep msgs/s / peer msgs/s. Above 1: lockstep is faster; below 1: the peer is."""
    ok = {r["key"]: r for r in rows if r["status"] == "ok"}
    for r in rows:
        ref = ok.get(r.get("reference") or REFERENCES.get(r.get("api", SEND_RECV), REFERENCE)) or ok.get(REFERENCE)
        if ref is None or r["status"] != "ok":
            continue
        ratios = r["vs_lockstep"]
        if r["ping"] and ref["ping"]:
            ratios["p50"] = r["ping"]["p50_ns"] / max(ref["ping"]["p50_ns"], 1)
            ratios["p99"] = r["ping"]["p99_ns"] / max(ref["ping"]["p99_ns"], 1)
        if r["throughput"] and ref["throughput"]:
            ratios["throughput"] = ref["throughput"]["msgs_per_sec"] / r["throughput"]["msgs_per_sec"]


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1000:.2f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(report: dict) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        f"lockstep bench/compare.py - {report['date']}",
        f"machine: {m['nproc']} CPUs usable ({m['cpu_model']}), {m['machine']}, {m['system']}, {m['python']}, "
        f"load average at start {m['loadavg_at_start']}",
        f"{c['size']}-byte messages; ping: {c['messages']:,} round trips after {c['warmup']:,} warm-up; "
        f"throughput: {c['tput_messages']:,} one-way messages after {c['tput_warmup']:,} warm-up, one per call"
        + (f"; medians of {c['rounds']} interleaved rounds" if c.get("rounds", 1) > 1 else ""),
        "",
        f"{'peer':<31}{'api':<15}{'mode':<24}{'p50 us':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>10}{'msgs/s':>13}"
        f"{'p50 vs ls':>11}{'p99 vs ls':>11}{'tput vs ls':>12}",
    ]
    for r in report["results"]:
        name = r["label"]
        if r["status"] != "ok":
            lines.append(f"{name:<31}{r['api']:<15}{r['mode']:<24}{r['status']}: {r['reason']}")
            continue
        p, t, v = r["ping"] or {}, r["throughput"] or {}, r["vs_lockstep"]
        rate = f"{t['msgs_per_sec']:,.0f}" if t else "-"
        lines.append(f"{name:<31}{r['api']:<15}{r['mode']:<24}{_us(p.get('p50_ns')):>8}{_us(p.get('p90_ns')):>8}"
                     f"{_us(p.get('p99_ns')):>8}{_us(p.get('p999_ns')):>9}{_us(p.get('max_ns')):>10}{rate:>13}"
                     f"{_x(v['p50']):>11}{_x(v['p99']):>11}{_x(v['throughput']):>12}")
    lines += [
        "",
        "round trips in microseconds (exact percentiles over all samples); msgs/s one-way, one message per call.",
        "api send/recv: the common harness, send(bytes) / recv() -> bytes (lockstep: offer / receive(); pyaeron:",
        "offer / poll(handler, 1) + a copy); poll(handler): poll(handler, 10) on both sides of the ping, the echo",
        "offering from its handler, and one offer per message into poll(handler, 256) (bench/compare_pyaeron.py's",
        "poll harness, the same code over both); lockstep (own harness): `lockstep bench ping|throughput --api poll`.",
        "'vs ls' = how many times lockstep (spin, same harness, same api) is ahead: peer latency / lockstep latency",
        "and lockstep msgs/s / peer msgs/s; above 1x lockstep is faster, below 1x the peer is.",
    ]
    if report.get("noop_call_ns"):
        lines.append(f"an empty cffi call costs {report['noop_call_ns']:.0f} ns here (the floor of any per-message C call).")
    return "\n".join(lines)


def plot(report: dict, samples: dict[str, np.ndarray], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: pip install 'lockstep[bench]' (or pip install matplotlib)"
    from lockstep.bench import percentile_axes, plot_percentiles

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6))
    labels = {r["key"]: f"{r['label']} ({r['api']}, {r['mode']})" for r in report["results"]}
    percentile_axes(left, f"round trip, {report['config']['size']} B")
    for i, (key, s) in enumerate(samples.items()):  # past the 10 colours, dashed
        plot_percentiles(left, s, labels.get(key, key), "-" if i < 10 else "--")
    left.legend(fontsize=7)
    rows = [r for r in report["results"] if r["status"] == "ok" and r["throughput"]]
    right.barh([labels[r["key"]] for r in rows], [r["throughput"]["msgs_per_sec"] for r in rows])
    right.set_xscale("log")
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=7)
    right.set_xlabel("messages / s (log)")
    right.set_title("one-way throughput, one message per call (batch row: 1024 per call)")
    m = report["machine"]
    fig.suptitle(f"{m['nproc']} CPUs, {m['cpu_model']}, {m['python']}, {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


# -- main -------------------------------------------------------------------------------

def collect(args, only: set[str] | None, warmup: int, tput: int, tput_warmup: int, say: Callable,
            report: dict) -> tuple[list[dict], dict]:
    """One round: every selected row, one after another (rows, samples)."""
    rows: list[dict] = []
    samples: dict = {}
    for key, peer in PEERS.items():
        if not _selected(only, peer.family, key):
            continue
        row = _row(key, peer.label, peer.mode, peer.family)
        rows.append(row)
        reason = peer.missing()
        if reason:
            row.update(status="skipped", reason=reason)
            say(f"{key}: skipped: {reason}")
            continue
        row["version"] = peer.version()
        try:
            say(f"{key}: ping ...")
            s = run_ping(peer, args.size, args.messages, warmup)
            row["ping"] = ping_stats(s, args.messages)
            samples[key] = s
            say(f"{key}: throughput ...")
            row["throughput"] = tput_stats(run_throughput(peer, args.size, tput, tput_warmup), tput, args.size)
        except Exception as e:  # one broken peer must not hide the others
            row.update(status="error", reason=f"{type(e).__name__}: {e}")
            say(f"{key}: error: {e}")

    if _selected(only, "lockstep", "lockstep-native") and PEERS[REFERENCE].missing() is None:
        say("lockstep-native: lockstep.bench ping/throughput/batch + C floors ...")
        native = _row("lockstep-native", "lockstep (own harness)", "busy spin", "lockstep", api=POLL)
        batch = _row("lockstep-batch", "lockstep batch (numpy)", "busy spin", "lockstep")
        floor = _row("c-floor", "C floor (csrc, 2 threads)", "busy spin", "lockstep")
        try:
            n, b, f = lockstep_native(args.size, args.messages, warmup, tput)
            samples["lockstep-native"] = n.pop("samples")
            native.update(n)
            batch.update(b)
            report["noop_call_ns"] = f.pop("noop_call_ns")
            floor.update(f)
        except Exception as e:
            for r in (native, batch, floor):
                r.update(status="error", reason=f"{type(e).__name__}: {e}")
        rows += [native, batch, floor]

    if _selected(only, "lockstep", "lockstep-poll") and PEERS[REFERENCE].missing() is None:
        say("lockstep-poll: poll(handler) ping + throughput ...")
        row = _row("lockstep-poll", "lockstep", "busy spin", "lockstep", api=POLL)
        rows.append(row)
        try:
            result, samples["lockstep-poll"] = lockstep_poll(args.size, args.messages, warmup, tput)
            row.update(result)
        except Exception as e:
            row.update(status="error", reason=f"{type(e).__name__}: {e}")

    if _selected(only, "pyaeron"):
        row = _row("pyaeron", "pyaeron (Aeron C client)", "busy spin", "pyaeron")
        poll_row = _row("pyaeron-poll", "pyaeron (Aeron C client)", "busy spin", "pyaeron", api=POLL)
        rows.append(row)
        if not args.pyaeron_python:
            row.update(status="skipped", reason="no --pyaeron-python (pyaeron needs CPython >= 3.12; "
                                                       "bench/pyaeron_chroot.sh makes one)")
        else:
            say("pyaeron: ping + throughput (send/recv, then poll(handler)) under", args.pyaeron_python, "...")
            rows.append(poll_row)
            try:
                result = run_pyaeron(args.pyaeron_python, args.pyaeron_script, args.size, args.messages, warmup, tput)
                samples["pyaeron"] = result.pop("samples")
                poll = result.pop("poll")
                row.update(result)
                if poll is None:
                    poll_row.update(status="skipped", reason=f"{args.pyaeron_script} gives no poll_ results")
                else:
                    samples["pyaeron-poll"] = poll.pop("samples")
                    poll_row.update(poll)
            except Exception as e:
                for r in (row, poll_row):
                    r.update(status="error", reason=f"{type(e).__name__}: {e}")

    if args.aeron_driver:
        rows += driver_rows(args, warmup, tput, samples, say)

    return rows, samples


def merge_rounds(runs: list[list[dict]]) -> list[dict]:
    """--rounds N: each row's figures as the median over the rounds, and its 'vs ls' ratios
    the median of the ratios of each round (each a same-run ratio)."""
    for rows in runs:
        add_ratios(rows)
    merged = []
    for i, row in enumerate(runs[0]):
        same = [rows[i] for rows in runs]
        out = dict(row, rounds=len(same))
        if all(r["status"] == "ok" for r in same):
            out["by_round"] = {"p50_ns": [r["ping"]["p50_ns"] if r["ping"] else None for r in same],
                               "msgs_per_sec": [round(r["throughput"]["msgs_per_sec"]) if r["throughput"] else None
                                                for r in same]}
            for part in ("ping", "throughput"):
                if row[part]:
                    out[part] = {k: statistics.median(r[part][k] for r in same) for k in row[part]}
            out["vs_lockstep"] = {k: (statistics.median(v) if (v := [r["vs_lockstep"][k] for r in same
                                                                    if r["vs_lockstep"][k] is not None]) else None)
                                  for k in row["vs_lockstep"]}
        merged.append(out)
    return merged



def _selected(only: set[str] | None, *names: str) -> bool:
    return only is None or any(n in only for n in names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000, help="measured round trips per peer (default 20000)")
    ap.add_argument("--warmup", type=int, default=None, help="unrecorded round trips first (default messages/10)")
    ap.add_argument("--tput-messages", type=int, default=None,
                    help="measured one-way messages per peer (default 10 x --messages)")
    ap.add_argument("--size", type=int, default=32, help="payload bytes per message (default 32)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--plot", metavar="FILE", help="write a percentile + throughput chart (needs matplotlib)")
    ap.add_argument("--only", help="comma-separated peers: lockstep, lockstep-native, lockstep-poll, baseline, pipe, queue, "
                    "simplequeue, pyzmq, faster-fifo, posix_ipc, iceoryx2, pyaeron (or a row key such as "
                    "lockstep-spin)")
    ap.add_argument("--pyaeron-python", metavar="PATH", help="a CPython >= 3.12 with pyaeron installed")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run everything N times, interleaved; each figure is the median over the rounds and each "
                    "'vs ls' ratio the median of the rounds' same-run ratios (on a shared machine: use 5 or more)")
    ap.add_argument("--aeron-driver", action="store_true",
                    help="add the poll(handler) rows through one media driver (aeronmd, `lockstep driver`'s build, "
                    "aeron:ipc): lockstep.aeron, and pyaeron over the same driver with --pyaeron-python")
    ap.add_argument("--pyaeron-script", metavar="FILE", default=str(PYAERON_SCRIPT),
                    help="the script run under --pyaeron-python (default bench/compare_pyaeron.py)")
    args = ap.parse_args(argv)
    if args.size < 1 or args.messages < 1:
        ap.error("--size and --messages must be positive")
    warmup = args.messages // 10 if args.warmup is None else args.warmup
    tput = args.tput_messages or 10 * args.messages
    tput_warmup = tput // 10
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    known = {n for p in PEERS.values() for n in (p.key, p.family)} | {"lockstep-native", "lockstep-poll", "pyaeron"}
    if only and only - known:
        ap.error(f"--only: unknown {', '.join(sorted(only - known))}; expected some of {', '.join(sorted(known))}")
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.json else (lambda *a: None)

    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine(),
        "config": {"size": args.size, "messages": args.messages, "warmup": warmup, "tput_messages": tput,
                   "tput_warmup": tput_warmup, "reference": REFERENCE, "rounds": args.rounds},
        "noop_call_ns": None,
        "results": [],
    }
    runs = []
    for n in range(args.rounds):
        if args.rounds > 1:
            say(f"round {n + 1} of {args.rounds}")
        rows, samples = collect(args, only, warmup, tput, tput_warmup, say, report)
        runs.append(rows)
    if args.rounds > 1:
        report["results"] = rows = merge_rounds(runs)
    else:
        report["results"] = rows
        add_ratios(rows)
    if args.json:
        print(json.dumps(report))
    else:
        print(table(report))
    if args.plot:
        say(plot(report, samples, args.plot)) if not args.json else print(plot(report, samples, args.plot),
                                                                          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
