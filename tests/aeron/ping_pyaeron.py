"""The pyaeron side of tests/aeron/ping.py (run with a CPython >= 3.12 that has pyaeron): the
same ping-pong, poll with a handler on both sides, through the driver in DIR.

    python3.12 tests/aeron/ping_pyaeron.py DIR CHANNEL_PING CHANNEL_PONG MESSAGES WARMUP SIZE IDLE
prints one JSON line: p50/p90/p99 round-trip microseconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyaeron

PING, PONG = 101, 102


def pong(dir: str, ping_channel: str, pong_channel: str, count: int, idle: str) -> None:
    wait = os.sched_yield if idle == "yield" else (lambda: None)
    with pyaeron.Aeron(dir=dir) as aeron:
        sub = aeron.add_subscription(ping_channel, PING)
        pub = aeron.add_exclusive_publication(pong_channel, PONG)
        print("ready", flush=True)
        got: list[bytes] = []
        handler = lambda buf, header: got.append(bytes(buf))  # noqa: E731
        for _ in range(count):
            while not got:
                if not sub.poll(handler, 1):
                    wait()
            data = got.pop()
            while not pub.offer(data):
                wait()
        sys.stdin.read()


def ping(dir: str, ping_channel: str, pong_channel: str, count: int, warmup: int, size: int, idle: str) -> list[int]:
    wait = os.sched_yield if idle == "yield" else (lambda: None)
    with pyaeron.Aeron(dir=dir) as aeron:
        pub = aeron.add_exclusive_publication(ping_channel, PING)
        sub = aeron.add_subscription(pong_channel, PONG)
        payload = bytes(size)
        seen = [0]

        def handler(buf, header) -> None:
            seen[0] += 1

        samples = []
        for i in range(warmup + count):
            t0 = time.perf_counter_ns()
            while not pub.offer(payload):
                wait()
            while not seen[0]:
                if not sub.poll(handler, 1):
                    wait()
            seen[0] = 0
            if i >= warmup:
                samples.append(time.perf_counter_ns() - t0)
        return samples


def main() -> None:
    if sys.argv[1] == "--pong":
        dir, ping_channel, pong_channel, count, idle = sys.argv[2:7]
        pong(dir, ping_channel, pong_channel, int(count), idle)
        return
    dir, ping_channel, pong_channel, messages, warmup, size, idle = sys.argv[1:8]
    ponger = subprocess.Popen([sys.executable, __file__, "--pong", dir, ping_channel, pong_channel,
                               str(int(messages) + int(warmup)), idle], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert ponger.stdout.readline().strip() == "ready"
    samples = sorted(ping(dir, ping_channel, pong_channel, int(messages), int(warmup), int(size), idle))
    ponger.stdin.close()
    ponger.wait(60)
    q = lambda p: round(samples[min(len(samples) - 1, int(p * len(samples)))] / 1000, 2)  # noqa: E731
    print(json.dumps({"p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99)}))


if __name__ == "__main__":
    main()
