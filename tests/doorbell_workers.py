"""Processes for test_doorbell.py (spawned: importable at module level)."""

from __future__ import annotations

import time

import lockstep
from lockstep.cluster.gateway import Gateway
from lockstep.transport.idle import BlockingIdleStrategy, agent_idle

STALL_S = 60.0


def ring_reader(path: str, count: int, out) -> None:
    """Read `count` messages from the ring, sleeping in `wait()` whenever it is empty; put
    each (type, bytes) on `out`."""
    with lockstep.ManyToOneRing(path) as ring:
        out.put("attached")
        got = 0
        deadline = time.monotonic() + STALL_S

        def handler(msg_type: int, data) -> None:
            out.put((msg_type, bytes(data)))

        while got < count:
            n = ring.read(handler)
            got += n
            if not n:
                assert time.monotonic() < deadline, f"stalled at {got} of {count}"
                ring.wait(timeout=None)


def agent_reading_ring_and_stream(ring_path: str, dir: str, stream_id: int, count: int, out) -> None:
    """An agent with one BlockingIdleStrategy over a ring and a subscription (several images):
    report what it read from each, in order, and how often it slept."""
    with lockstep.ManyToOneRing(ring_path) as ring, lockstep.Subscription(stream_id, dir) as sub:
        deadline = time.monotonic() + STALL_S
        while sub.discover() < 2:
            assert time.monotonic() < deadline, "publishers did not appear"
            time.sleep(0.005)
        out.put("attached")
        got: list = []
        idle = BlockingIdleStrategy(ring, sub, timeout_ns=50_000_000)

        def do_work() -> int:
            n = ring.read(lambda t, data: got.append(("ring", bytes(data))))
            return n + sub.poll(lambda data, header: got.append((header.session_id, bytes(data))), 10)

        while len(got) < count:
            assert time.monotonic() < deadline, f"stalled at {len(got)} of {count}"
            idle.idle(do_work())
        out.put((got, idle.sleeps))


def blocked_receive_several_images(dir: str, stream_id: int, count: int, out) -> None:
    """receive(timeout=None) on a subscription with two images; put each message on `out`."""
    with lockstep.Subscription(stream_id, dir) as sub:
        deadline = time.monotonic() + STALL_S
        while sub.discover() < 2:
            assert time.monotonic() < deadline, "publishers did not appear"
            time.sleep(0.005)
        out.put("attached")
        for _ in range(count):
            out.put(sub.receive(timeout=None))


class BusyVenueGateway(Gateway):
    """A gateway whose venue takes one request and never answers: after the first request
    it does not read the log (`ready_for_log` False) however much the log holds."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.disconnected_at_position = -1

    def on_command(self, command, sequence: int, position: int) -> None:
        self.requests += 1

    def ready_for_log(self) -> bool:
        return self.requests == 0

    def on_halt(self, record) -> None:
        self.disconnected_at_position = self.position


def gateway_until_halted(dir: str, name: str, out) -> None:
    """Run a BusyVenueGateway with its default idle strategy until a halt arrives; report
    the halt, how far it had read and how often it slept."""
    gw = BusyVenueGateway(name, dir, start="earliest")
    try:
        idle = agent_idle(gw.do_work)
        out.put(("attached", type(idle).__name__))
        deadline = time.monotonic() + STALL_S
        while not gw.halted:
            assert time.monotonic() < deadline, "no halt arrived"
            idle.idle(gw.do_work())
        record = gw.halts[0]
        out.put({"requests": gw.requests, "position_at_act": record.position_at_act,
                 "log_position": record.log_position, "sleeps": getattr(idle, "sleeps", 0),
                 "disconnected_at_position": gw.disconnected_at_position})
    finally:
        gw.close()


def ring_writer_until(path: str, done) -> None:
    """Write a record to the ring every 2 ms until `done` is set (or the ring is full): a
    writer whose next commit must wake a reader that waits for news."""
    with lockstep.ManyToOneRing(path) as ring:
        i = 0
        while not done.is_set() and ring.write(3, i.to_bytes(8, "little")):
            i += 1
            time.sleep(0.002)
