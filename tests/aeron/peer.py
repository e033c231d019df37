"""A lockstep peer process for the Aeron-driver tests, speaking the same protocol as
interop.c: `peer.py pub|sub DIR CHANNEL STREAM COUNT [exclusive] [dest=CHANNEL ...] [receivers=N]`. A publisher prints
`ready`, offers messages 0..COUNT-1 (backing off when not connected or back-pressured),
prints `sent COUNT` and stays until stdin closes; a subscriber prints `ready`, receives
COUNT whole messages, checks each (once, in order, intact) and prints `ok COUNT`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lockstep  # noqa: E402
from lockstep.aeron import Aeron  # noqa: E402
from aeron.harness import message  # noqa: E402


DESTINATIONS: list[str] = []  # dest=CHANNEL arguments: multi-destination cast
RECEIVERS = 0  # receivers=N: publish only once N receivers are connected
TYPE_FC_RECEIVERS = 17


def fc_receivers(aeron: Aeron, registration_id: int) -> int:
    """The driver's flow-control receiver count of a publication (0 before it exists)."""
    for info in aeron.counters:
        if info.type_id == TYPE_FC_RECEIVERS and int.from_bytes(info.key[:8], "little", signed=True) == registration_id:
            return info.value
    return 0


def publish(aeron: Aeron, channel: str, stream_id: int, count: int, exclusive: bool) -> int:
    pub = (aeron.add_exclusive_publication if exclusive else aeron.add_publication)(channel, stream_id)
    for destination in DESTINATIONS:
        pub.add_destination(destination)
    if RECEIVERS:  # wait until the driver's flow control (fc=min) counts that many receivers
        idle = lockstep.BackoffIdleStrategy()
        while fc_receivers(aeron, pub.registration_id) < RECEIVERS:
            idle.idle(0)
    print("ready", flush=True)
    idle = lockstep.BackoffIdleStrategy()
    for i in range(count):
        data = message(i)
        while True:
            result = pub.offer(data)
            if result > 0:
                idle.reset()
                break
            if result in (lockstep.CLOSED, lockstep.MAX_POSITION_EXCEEDED):
                print(f"offer {i}: {lockstep.status_name(result)}", file=sys.stderr)
                return 1
            idle.idle(0)
    print(f"sent {count}", flush=True)
    sys.stdin.read()
    pub.close()
    return 0


def subscribe(aeron: Aeron, channel: str, stream_id: int, count: int) -> int:
    sub = aeron.add_subscription(channel, stream_id)
    print("ready", flush=True)
    received: list[bytes] = []

    def handler(data, header) -> None:
        received.append(bytes(data))

    idle = lockstep.BackoffIdleStrategy()
    while len(received) < count:
        idle.idle(sub.poll(handler, 10))
    for i, data in enumerate(received):
        if data != message(i):
            print(f"message {i}: {len(data)} bytes differ from the {len(message(i))} sent", file=sys.stderr)
            return 1
    if len(received) != count:
        print(f"received {len(received)}, expected {count}", file=sys.stderr)
        return 1
    print(f"ok {count}", flush=True)
    sub.close()
    return 0


def main(argv: list[str]) -> int:
    mode, dir, channel, stream_id, count = argv[:5]
    exclusive = "exclusive" in argv[5:]
    DESTINATIONS.extend(a[len("dest="):] for a in argv[5:] if a.startswith("dest="))
    global RECEIVERS
    RECEIVERS = max([int(a[len("receivers="):]) for a in argv[5:] if a.startswith("receivers=")] or [0])
    with Aeron(dir) as aeron:
        if mode == "pub":
            return publish(aeron, channel, int(stream_id), int(count), exclusive)
        return subscribe(aeron, channel, int(stream_id), int(count))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
