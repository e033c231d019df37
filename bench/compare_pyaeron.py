"""pyaeron ping + throughput for bench/compare.py, run under a CPython >= 3.12 that has
pyaeron (a C-API binding of the Aeron C client with an embedded C media driver):

    /path/to/python3.13 bench/compare_pyaeron.py --size 32 --messages 20000 --warmup 2000 --tput-messages 200000

It needs only the standard library and pyaeron (no lockstep, no numpy), runs the same
harness as compare.py (two spawn processes; ping: perf_counter_ns around send + echo,
warm-up dropped; throughput: warm-up then `--tput-messages` timed, one message per call,
busy spin) over aeron:ipc, and prints ONE JSON line:

    {"version": str, "ping_samples_ns": [int, ...], "throughput_seconds": float,
     "throughput_messages": int, "poll_ping_samples_ns": [int, ...], "poll_throughput_seconds": float,
     "poll_throughput_messages": int}

The first three are the send/recv shape of compare.py (`poll(handler, 1)` and a copy per
message); the `poll_` ones the Aeron way, `poll(handler, 10)` on both sides of the ping (the
echo offers from inside its handler) and one `offer` per message into `poll(handler, 256)`,
run by the functions of the "poll(handler) harness" section below, which compare.py runs over
lockstep too: the same code on both sides.

compare.py computes the percentiles from the samples itself (numpy), like every other row.
If the last echo is not the payload sent, it exits non-zero instead.

The pyaeron calls are gathered in the "adapter" section below. They were run against
pyaeron 0.1.0 (PyPI, cp313 manylinux wheel; Aeron C 1.53.0-SNAPSHOT) under CPython 3.13.5
in a Debian trixie chroot on a CPython 3.11 machine, set up by bench/pyaeron_chroot.sh
(which writes /opt/pyaeron-python, the interpreter to pass as `--pyaeron-python`). That
API: MediaDriver(dir=, threading=) starts on construction and has close(); Aeron(dir=);
offer returns True or a falsy OfferCode (BACK_PRESSURED, NOT_CONNECTED, ADMIN_ACTION);
is_connected is a property; poll(handler, fragment_limit) returns the fragment count
and hands (BufferView, Header) to the handler, the view valid only inside it. If your
pyaeron spells them differently, change only that section, or pass your own script with
`compare.py --pyaeron-script FILE` keeping the JSON contract above.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time

PING, PONG, DATA = 1001, 1002, 1003
CHANNEL = "aeron:ipc"


# -- adapter: every pyaeron call is here ------------------------------------------------

def start_driver(aeron_dir: str):
    """The embedded C media driver, in this (the parent) process. pyaeron's MediaDriver
    starts on construction (there is no start()); threading='shared' runs the conductor,
    sender and receiver agents on one driver thread, as fits a 2-core machine."""
    import pyaeron

    return pyaeron.MediaDriver(dir=aeron_dir, threading="shared")


def connect(aeron_dir: str):
    import pyaeron

    return pyaeron.Aeron(dir=aeron_dir)


def sender(client, stream_id: int):
    pub = client.add_exclusive_publication(CHANNEL, stream_id)
    offer = pub.offer

    def send(data: bytes) -> None:
        while not offer(data):  # falsy OfferCode: BACK_PRESSURED / NOT_CONNECTED / ADMIN_ACTION
            pass

    while not pub.is_connected:  # a property; True once a subscriber of the stream exists
        time.sleep(0.001)
    return send


def poller(client, stream_id: int):
    """A new subscription's poll(handler, fragment_limit) (polling before its image is there finds nothing)."""
    return client.add_subscription(CHANNEL, stream_id).poll


def receiver(client, stream_id: int):
    sub = client.add_subscription(CHANNEL, stream_id)
    poll = sub.poll
    box = [b""]

    def handler(fragment, header) -> None:  # fragment: a BufferView, valid only in here
        box[0] = fragment.tobytes()

    def recv() -> bytes:
        while not poll(handler, 1):  # returns the number of fragments delivered
            pass
        return box[0]

    return recv


def close(*resources) -> None:
    """Clients first, then the driver (Aeron.close / MediaDriver.close)."""
    for r in resources:
        if r is not None:
            r.close()


def version() -> str:
    try:
        from importlib.metadata import version as v

        import pyaeron

        aeron = pyaeron.aeron_version.split("version=", 1)[-1].split()[0]  # "aeron version=1.53.0 commit=..."
        return f"pyaeron {v('pyaeron')} (Aeron C {aeron})"
    except Exception:
        return "pyaeron"


# -- poll(handler) harness: compare.py runs these same functions over lockstep ------------
# `send(data)` offers until accepted; `poll(handler, fragment_limit)` is the subscription's.

def noop(data, header) -> None:
    """The ping side's and the consumer's handler: the message is only counted (by poll's result)."""


def poll_ping(send, poll, payload: bytes, total: int) -> list[int]:
    """`total` round trips: offer, then poll(noop, 10) until the echo came; ns per round trip."""
    clock, samples = time.perf_counter_ns, [0] * total
    for i in range(total):
        start = clock()
        send(payload)
        while not poll(noop, 10):
            pass
        samples[i] = clock() - start
    return samples


def poll_echo(send, poll, total: int) -> None:
    """Echo `total` messages, offering each from inside the handler (the Aeron way)."""
    def echo(data, header) -> None:
        send(data)

    echoed = 0
    while echoed < total:
        echoed += poll(echo, 10)


def poll_consume(poll, warmup: int, messages: int) -> tuple[float, int]:
    """poll(noop, 256) until `warmup` messages came, then time the next `messages`
    (seconds, messages counted: a poll may hand more than are left)."""
    clock, count = time.perf_counter_ns, 0
    while count < warmup:
        count += poll(noop, 256)
    start, first, end = clock(), count, warmup + messages
    while count < end:
        count += poll(noop, 256)
    return (clock() - start) / 1e9, count - first


def produce(send, payload: bytes, total: int) -> None:
    """One offer per message."""
    for _ in range(total):
        send(payload)


# -- the harness (same shape as compare.py) ----------------------------------------------

def _payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def _echo(aeron_dir: str, total: int, ready, done) -> None:
    client = connect(aeron_dir)
    recv = receiver(client, PING)
    send = sender(client, PONG)
    ready.set()
    for _ in range(total):
        send(recv())
    done.wait(300)
    close(client)


def _produce(aeron_dir: str, stream_id: int, size: int, total: int, ready, done) -> None:
    client = connect(aeron_dir)
    send = sender(client, stream_id)
    ready.set()
    produce(send, _payload(size), total)
    done.wait(300)
    close(client)


def _poll_echo(aeron_dir: str, total: int, ready, done) -> None:
    client = connect(aeron_dir)
    poll = poller(client, PING + 10)  # (before waiting for our publication's subscriber: that is the parent)
    send = sender(client, PONG + 10)
    ready.set()
    poll_echo(send, poll, total)
    done.wait(300)
    close(client)


def _poll_run(aeron_dir: str, size: int, messages: int, warmup: int, tput_messages: int) -> tuple[list[int], float, int]:
    """The poll(handler) ping and throughput: (ping samples, seconds, messages timed)."""
    ctx = multiprocessing.get_context("spawn")
    client = connect(aeron_dir)
    try:
        total = warmup + messages
        ready, done = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_poll_echo, args=(aeron_dir, total, ready, done), daemon=True)
        child.start()
        send = sender(client, PING + 10)
        poll = poller(client, PONG + 10)
        ready.wait(60)
        samples = poll_ping(send, poll, _payload(size), total)[warmup:]
        done.set()
        child.join(10)
        warm = tput_messages // 10
        ready, done = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_produce, args=(aeron_dir, DATA + 10, size, warm + tput_messages, ready, done),
                            daemon=True)
        child.start()
        poll = poller(client, DATA + 10)
        ready.wait(60)
        seconds, timed = poll_consume(poll, warm, tput_messages)
        done.set()
        child.join(10)
        return samples, seconds, timed
    finally:
        close(client)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--tput-messages", type=int, default=200_000)
    ap.add_argument("--aeron-dir", help="a running media driver's directory to go through (else the embedded one)")
    ap.add_argument("--poll-only", action="store_true", help="only the poll(handler) harness (the poll_ keys)")
    args = ap.parse_args()
    if args.poll_only:
        _poll_only(args)
        return
    ctx = multiprocessing.get_context("spawn")
    aeron_dir = args.aeron_dir or tempfile.mkdtemp(prefix="lockstep-compare-aeron-", dir="/dev/shm")
    driver = client = None
    try:
        driver = None if args.aeron_dir else start_driver(aeron_dir)
        client = connect(aeron_dir)
        # ping
        total = args.warmup + args.messages
        ready, done = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_echo, args=(aeron_dir, total, ready, done), daemon=True)
        child.start()
        send = sender(client, PING)
        recv = receiver(client, PONG)
        ready.wait(60)
        payload, clock, samples = _payload(args.size), time.perf_counter_ns, [0] * total
        echo = b""
        for i in range(total):
            start = clock()
            send(payload)
            echo = recv()
            samples[i] = clock() - start
        done.set()
        if echo != payload:
            raise SystemExit(f"echo differs from what was sent: {echo!r}")
        child.join(10)
        # throughput
        warm = args.tput_messages // 10
        ready, done = ctx.Event(), ctx.Event()
        recv = receiver(client, DATA)
        child = ctx.Process(target=_produce, args=(aeron_dir, DATA, args.size, warm + args.tput_messages, ready, done),
                            daemon=True)
        child.start()
        ready.wait(60)
        for _ in range(warm):
            recv()
        start = clock()
        for _ in range(args.tput_messages):
            recv()
        seconds = (clock() - start) / 1e9
        done.set()
        child.join(10)
        poll_samples, poll_seconds, poll_messages = _poll_run(aeron_dir, args.size, args.messages, args.warmup,
                                                              args.tput_messages)
    finally:
        close(client, driver)
        if not args.aeron_dir:
            shutil.rmtree(aeron_dir, ignore_errors=True)
    print(json.dumps({"version": version(), "ping_samples_ns": samples[args.warmup:],
                      "throughput_seconds": seconds, "throughput_messages": args.tput_messages,
                      "poll_ping_samples_ns": poll_samples, "poll_throughput_seconds": poll_seconds,
                      "poll_throughput_messages": poll_messages}))


def _poll_only(args) -> None:
    """--poll-only: the poll(handler) ping and throughput alone, as one JSON line of the poll_ keys."""
    aeron_dir = args.aeron_dir or tempfile.mkdtemp(prefix="lockstep-compare-aeron-", dir="/dev/shm")
    driver = None
    try:
        driver = None if args.aeron_dir else start_driver(aeron_dir)
        samples, seconds, messages = _poll_run(aeron_dir, args.size, args.messages, args.warmup, args.tput_messages)
    finally:
        close(driver)
        if not args.aeron_dir:
            shutil.rmtree(aeron_dir, ignore_errors=True)
    print(json.dumps({"version": version(), "poll_ping_samples_ns": samples, "poll_throughput_seconds": seconds,
                      "poll_throughput_messages": messages}))


if __name__ == "__main__":
    main()
