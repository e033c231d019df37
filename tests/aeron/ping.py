"""Round trip through one media driver vs lockstep's driverless IPC, in one run, same API on
both sides (offer + receive(), one message per call, busy or yielding spin), two processes:

    python tests/aeron/ping.py [--messages 20000] [--size 32] [--idle spin|yield] [--api receive|poll]
                               [--pyaeron-python /path/to/python3.12] [--throughput] [--json]

Prints p50/p90/p99 round-trip microseconds for aeron:ipc, aeron:udp (loopback) through a
fresh aeronmd (test settings), and lockstep's own Publication/Subscription; with
--pyaeron-python (a CPython >= 3.12 with pyaeron installed) also pyaeron through the same
driver (poll with a handler: use --api poll to compare like with like). A measurement
script, not a test: nothing here asserts a time."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lockstep  # noqa: E402
from lockstep.aeron import Aeron, MediaDriver  # noqa: E402
from lockstep.aeron.driver import TEST_DEFAULTS  # noqa: E402

PING, PONG = 101, 102


def _endpoints(kind: str, dir: str, port: int):
    """(publish, subscribe) factories for one side; `first` = the pinger's streams."""
    if kind == "lockstep":
        return (lambda s: lockstep.Publication(s, dir, exclusive=True),
                lambda s: lockstep.Subscription(s, dir), None)
    aeron = Aeron(dir)
    channel = "aeron:ipc" if kind == "aeron-ipc" else f"aeron:udp?endpoint=127.0.0.1:{port}"
    other = "aeron:ipc" if kind == "aeron-ipc" else f"aeron:udp?endpoint=127.0.0.1:{port + 1}"

    def publish(stream: int):
        return aeron.add_exclusive_publication(channel if stream == PING else other, stream)

    def subscribe(stream: int):
        return aeron.add_subscription(channel if stream == PING else other, stream)

    return publish, subscribe, aeron


def _spin(idle: str):
    return os.sched_yield if idle == "yield" else (lambda: None)


def _receiver(sub, api: str):
    """() -> bytes | None: receive() itself, or poll(handler, 1) with a handler that copies."""
    if api == "receive":
        return sub.receive
    got: list[bytes] = []
    handler = lambda data, header: got.append(bytes(data))  # noqa: E731
    poll = sub.poll

    def receive():
        poll(handler, 1)
        return got.pop() if got else None

    return receive


def pong(kind: str, dir: str, port: int, count: int, idle: str, api: str) -> None:
    publish, subscribe, aeron = _endpoints(kind, dir, port)
    sub, pub = subscribe(PING), publish(PONG)
    wait = _spin(idle)
    receive, offer = _receiver(sub, api), pub.offer
    print("ready", flush=True)
    for _ in range(count):
        while (data := receive()) is None:
            wait()
        while offer(data) < 0:
            wait()
    sys.stdin.read()
    if aeron is not None:
        aeron.close()


def ping(kind: str, dir: str, port: int, count: int, warmup: int, size: int, idle: str, api: str) -> list[int]:
    publish, subscribe, aeron = _endpoints(kind, dir, port)
    pub, sub = publish(PING), subscribe(PONG)
    wait = _spin(idle)
    receive, offer = _receiver(sub, api), pub.offer
    payload = bytes(size)
    samples = []
    for i in range(warmup + count):
        t0 = time.perf_counter_ns()
        while offer(payload) < 0:
            wait()
        while receive() is None:
            wait()
        if i >= warmup:
            samples.append(time.perf_counter_ns() - t0)
    if aeron is not None:
        aeron.close()
    return samples


def source(kind: str, dir: str, port: int, count: int, size: int, idle: str) -> None:
    """The sending side of --throughput: offer `count` messages as fast as they go."""
    publish, _, aeron = _endpoints(kind, dir, port)
    pub = publish(PING)
    wait = _spin(idle)
    offer, payload = pub.offer, bytes(size)
    print("ready", flush=True)
    for _ in range(count):
        while offer(payload) < 0:
            wait()
    sys.stdin.read()
    if aeron is not None:
        aeron.close()


def sink(kind: str, dir: str, port: int, count: int, size: int, idle: str, api: str) -> float:
    """Messages per second received, from the first message to the last."""
    _, subscribe, aeron = _endpoints(kind, dir, port)
    sub = subscribe(PING)
    sender = subprocess.Popen([sys.executable, __file__, "--source", kind, dir, str(port), str(count), str(size), idle],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sender.stdout.readline().strip() == "ready"
    wait = _spin(idle)
    got = [0]
    if api == "receive":
        receive = sub.receive
        while receive() is None:
            wait()
        t0 = time.perf_counter()
        n = 1
        while n < count:
            if receive() is None:
                wait()
            else:
                n += 1
    else:
        handler = lambda data, header: None  # noqa: E731
        poll = sub.poll
        while not (n := poll(handler, 10)):
            wait()
        t0 = time.perf_counter()
        while n < count:
            k = poll(handler, 10)
            n += k
            if not k:
                wait()
    elapsed = time.perf_counter() - t0
    sender.stdin.close()
    sender.wait(60)
    if aeron is not None:
        aeron.close()
    return (count - 1) / elapsed


def run(kind: str, messages: int, warmup: int, size: int, idle: str, api: str, pyaeron_python: str | None,
        throughput: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lockstep-ping-", dir="/dev/shm"))
    driver = None
    try:
        if kind == "lockstep":
            dir = str(tmp / "ls")
        else:
            driver = MediaDriver(tmp / "aeron", defaults={**TEST_DEFAULTS, "AERON_IPC_TERM_BUFFER_LENGTH": "1m",
                                                           "AERON_TERM_BUFFER_LENGTH": "1m"})
            dir = str(driver.dir)
        port = 41000 + os.getpid() % 1000 * 2
        if kind.startswith("pyaeron"):
            ipc = kind == "pyaeron-ipc"
            channels = ["aeron:ipc"] * 2 if ipc else [f"aeron:udp?endpoint=127.0.0.1:{port + i}" for i in (0, 1)]
            out = subprocess.run([pyaeron_python, str(Path(__file__).with_name("ping_pyaeron.py")), dir, *channels,
                                  str(messages), str(warmup), str(size), idle], capture_output=True, text=True,
                                 timeout=600, check=True).stdout
            return {"transport": kind, "api": "poll", **json.loads(out.splitlines()[-1])}
        if throughput:
            return {"transport": kind, "api": api, "msgs_per_sec": round(sink(kind, dir, port, messages, size, idle, api))}
        ponger = subprocess.Popen([sys.executable, __file__, "--pong", kind, dir, str(port), str(messages + warmup), idle,
                                   api], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert ponger.stdout.readline().strip() == "ready"
        samples = sorted(ping(kind, dir, port, messages, warmup, size, idle, api))
        ponger.stdin.close()
        ponger.wait(60)
        q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] / 1000  # noqa: E731
        return {"transport": kind, "api": api, "p50_us": round(q(0.5), 2), "p90_us": round(q(0.9), 2), "p99_us": round(q(0.99), 2)}
    finally:
        if driver is not None:
            driver.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if sys.argv[1:2] == ["--source"]:
        kind, dir, port, count, size, idle = sys.argv[2:8]
        source(kind, dir, int(port), int(count), int(size), idle)
        return
    if sys.argv[1:2] == ["--pong"]:
        kind, dir, port, count, idle, api = sys.argv[2:8]
        pong(kind, dir, int(port), int(count), idle, api)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--idle", choices=["spin", "yield"], default="spin")
    parser.add_argument("--api", choices=["receive", "poll"], default="receive")
    parser.add_argument("--pyaeron-python", default=None, help="a CPython >= 3.12 with pyaeron installed")
    parser.add_argument("--throughput", action="store_true", help="one-way msgs/s instead of round trips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = ["lockstep", "aeron-ipc", "aeron-udp"]
    if args.pyaeron_python and not args.throughput:
        kinds += ["pyaeron-ipc", "pyaeron-udp"]
    for kind in kinds:
        result = run(kind, args.messages, args.warmup, args.size, args.idle, args.api, args.pyaeron_python,
                     args.throughput)
        if args.throughput:
            print(json.dumps(result) if args.json else f"{kind:12s} {result['api']:8s} {result['msgs_per_sec']:>12,} msgs/s")
            continue
        print(json.dumps(result) if args.json else
              f"{kind:12s} {result['api']:8s} p50 {result['p50_us']:8.2f} us  p90 {result['p90_us']:8.2f} us  p99 {result['p99_us']:8.2f} us")


if __name__ == "__main__":
    main()
