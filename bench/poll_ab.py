#!/usr/bin/env python
"""poll(handler) ping-pong of several sides, interleaved block by block, so that every side meets
the same machine (on a shared 2-core VM the cross-core hand-over changes from one second to the
next: whole-run figures of two runs a minute apart are not comparable, blocks of a few ms are).

    python bench/poll_ab.py [--blocks 30] [--block 3000] [--throughput] NAME=PYTHON:KIND ...
    python bench/poll_ab.py lockstep=python:lockstep pyaeron=/opt/pyaeron-python:pyaeron

KIND is lockstep (driverless, exclusive Publication / Subscription) or pyaeron (aeron:ipc, its
embedded driver); with --aeron-driver (one aeronmd, `lockstep driver`'s build and small-machine
settings, started here) also lockstep.aeron and pyaeron.aeronmd, both over `aeron:ipc` through that
driver; PYTHON the interpreter that has it. Each side is one process pair, started once:
the ping process runs `compare_pyaeron.poll_ping` (poll(handler, 10), the same code for every
side) for 300 unrecorded + BLOCK round trips whenever told, and the echo process runs the echo
handler of `poll_echo` (offering from inside the handler), spinning while messages come and
sleeping 0.5 ms at a time once nothing came for 2 ms, so only the pair being measured spins. The
sides take turns (the order flips every block). Prints per side the median of its blocks' p50s,
the median of its per-block ratios to the first side, and in how many blocks it was faster: the
first side is ahead where the ratio is above 1. With --throughput a block is instead one
`produce` of a tenth more than BLOCK messages (one offer each, by the side's second process,
which waits on a pipe between blocks) into `poll_consume` (poll(handler, 256)), timed over the
last BLOCK: msgs/s per block, where higher is better.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare_pyaeron as harness  # noqa: E402  (stdlib only: runs under any side's interpreter)

PING, PONG = 3101, 3102  # side i uses these + 2 * i (sides may share one driver)
WARMUP = 300


def _ends(kind: str, dir: str, out_stream: int, in_stream: int):
    """(send, poll, wait_connected) of one process of a side."""
    if kind == "lockstep.aeron":
        from lockstep.aeron import Aeron
        from lockstep.bench import _wait_connected

        aeron = Aeron(dir)
        sub = aeron.add_subscription("aeron:ipc", in_stream)
        pub = aeron.add_exclusive_publication("aeron:ipc", out_stream)
        offer = pub.offer

        def send_aeron(data) -> None:
            while offer(data) < 0:
                pass
        return send_aeron, sub.poll, lambda: _wait_connected(pub, sub)
    if kind == "lockstep":
        from lockstep import Publication, Subscription
        from lockstep.bench import _wait_connected

        sub = Subscription(in_stream, dir)
        pub = Publication(out_stream, dir, exclusive=True)
        offer = pub.offer

        def send(data) -> None:
            while offer(data) < 0:
                pass
        return send, sub.poll, lambda: _wait_connected(pub, sub)
    client = harness.connect(dir)
    poll = harness.poller(client, in_stream)
    return harness.sender(client, out_stream), poll, lambda: None


def _echo(kind: str, dir: str, base: int) -> None:
    """The echo process: poll_echo's handler; sleeps in 0.5 ms steps while no block runs."""
    send, poll, _ = _ends(kind, dir, PONG + base, PING + base)

    def echo(data, header) -> None:
        send(data)

    last = time.monotonic()
    while True:
        if poll(echo, 10):
            last = time.monotonic()
        elif time.monotonic() - last > 0.002:
            time.sleep(0.0005)


def _producer(kind: str, dir: str, base: int, blocks) -> None:
    """--throughput's second process: one offer per message, as many as each block asks for."""
    send, _, _ = _ends(kind, dir, PONG + base, PING + base)
    payload = bytes(32)
    while True:
        harness.produce(send, payload, blocks.recv())


def side(kind: str, base: int, throughput: bool, aeron_dir: str | None) -> None:
    """--side KIND BASE: one side's measuring process, driven line by line from stdin."""
    if kind in ("lockstep.aeron", "pyaeron.aeronmd"):
        if aeron_dir is None:
            raise SystemExit(f"{kind}: needs --aeron-driver")
        dir, driver = aeron_dir, None
        kind = "pyaeron" if kind == "pyaeron.aeronmd" else kind
    else:
        dir = tempfile.mkdtemp(prefix="lockstep-poll-ab-", dir="/dev/shm")
        driver = harness.start_driver(dir) if kind == "pyaeron" else None
    ctx = multiprocessing.get_context("spawn")
    blocks, theirs = ctx.Pipe()
    child = ctx.Process(target=_producer if throughput else _echo,
                        args=(kind, dir, base, theirs) if throughput else (kind, dir, base), daemon=True)
    child.start()
    send, poll, wait_connected = _ends(kind, dir, PING + base, PONG + base)
    if not throughput:  # (the producer's offers wait for this side's polls to find its log)
        wait_connected()
    payload = bytes(32)
    if throughput:
        blocks.send(1000)
        harness.poll_consume(poll, 0, 1000)
    else:
        harness.poll_ping(send, poll, payload, 1000)
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        if throughput:
            blocks.send(n + n // 10)
            seconds, timed = harness.poll_consume(poll, n // 10, n)
            print(json.dumps([round(timed / seconds)]), flush=True)
        else:
            s = sorted(harness.poll_ping(send, poll, payload, WARMUP + n)[WARMUP:])
            print(json.dumps([s[len(s) // 2], s[len(s) * 9 // 10]]), flush=True)
    child.kill()
    if driver is not None:
        harness.close(driver)


def main() -> None:
    if sys.argv[1:2] == ["--side"]:
        kind, base, mode, aeron_dir = sys.argv[2:6]
        side(kind, int(base), mode == "throughput", None if aeron_dir == "-" else aeron_dir)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--block", type=int, default=3000, help="round trips per block (after 300 unrecorded)")
    ap.add_argument("--throughput", action="store_true", help="one-way msgs/s blocks instead of round trips")
    ap.add_argument("--aeron-driver", action="store_true",
                    help="start one aeronmd for the lockstep.aeron and pyaeron.aeronmd sides")
    ap.add_argument("sides", nargs="+", metavar="NAME=PYTHON:KIND")
    args = ap.parse_args()
    driver = None
    if args.aeron_driver:
        from lockstep.aeron import MediaDriver
        from lockstep.aeron.driver import SMALL_MACHINE_DEFAULTS

        driver = MediaDriver(Path(tempfile.mkdtemp(prefix="lockstep-poll-ab-driver-", dir="/dev/shm")) / "aeron",
                             defaults=SMALL_MACHINE_DEFAULTS)
    procs = []
    p50s: dict[str, list[int]] = {}
    try:
        for i, spec in enumerate(args.sides):
            name, rest = spec.split("=", 1)
            python, kind = rest.rsplit(":", 1)
            p = subprocess.Popen([python, str(Path(__file__).resolve()), "--side", kind, str(2 * i),
                                  "throughput" if args.throughput else "ping",
                                  str(driver.dir) if driver is not None else "-"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append((name, p))
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"{name}: the side did not start")
            p50s[name] = []
        for b in range(args.blocks):
            for name, p in (procs if b % 2 == 0 else procs[::-1]):
                p.stdin.write(f"{args.block}\n")
                p.stdin.flush()
                p50s[name].append(json.loads(p.stdout.readline())[0])
    finally:
        for _, p in procs:
            p.stdin.close()
            p.wait(30)
        if driver is not None:
            driver.stop()
    first = procs[0][0]
    if args.throughput:
        print(f"{args.blocks} blocks of {args.block} one-way messages, 32 B, one offer each into poll(handler, 256)")
    else:
        print(f"{args.blocks} blocks of {args.block} round trips, 32 B, poll(handler, 10) both sides, busy spin")
    what, unit, better = ("msgs/s", "", "higher") if args.throughput else ("p50", " ns", "lower")
    for name, values in p50s.items():
        ratios = [v / f for v, f in zip(values, p50s[first])]
        wins = sum(r > 1 if args.throughput else r < 1 for r in ratios)
        print(f"{name:14} {what} median {statistics.median(values):10.0f}{unit}   per-block ratio to {first}: median "
              f"{statistics.median(ratios):.3f}, {better} than {first}'s in {wins}/{len(ratios)}")


if __name__ == "__main__":
    main()
