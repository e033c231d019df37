"""Separate processes through one real aeronmd: lockstep -> lockstep, lockstep -> the real
Aeron C client and Aeron C client -> lockstep, on aeron:ipc and aeron:udp, with fragmented
messages (up to 8 KiB over a 1408-byte MTU): every message once, in order, intact (each
receiver checks the sequence itself and reports `ok N`)."""

from __future__ import annotations

import pytest

from aeron.harness import (c_peer, driver, drivers, free_udp_port, interop_binary, lockstep_peer, peers,  # noqa: F401
                           start_peer)

COUNT = 5000  # ~60 terms of 64 KiB: rotations, and the window back-pressuring the publisher


def _channel(kind: str) -> str:
    return "aeron:ipc" if kind == "ipc" else f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"


@pytest.mark.parametrize("kind", ["ipc", "udp"])
@pytest.mark.parametrize("publisher,subscriber", [("lockstep", "lockstep"), ("lockstep", "aeron-c"),
                                                  ("aeron-c", "lockstep")])
def test_every_message_once_in_order_intact(driver, peers, interop_binary, kind, publisher, subscriber):
    channel = _channel(kind)

    def argv(side: str, mode: str) -> list[str]:
        if side == "lockstep":
            return lockstep_peer(mode, driver.dir, channel, 21, COUNT)
        return c_peer(interop_binary, mode, driver.dir, channel, 21, COUNT)

    sub = start_peer(peers, argv(subscriber, "sub"))
    sub.expect("ready")
    pub = start_peer(peers, argv(publisher, "pub"))
    pub.expect("ready")
    assert sub.expect("ok", timeout=120) == f"ok {COUNT}"
    assert pub.expect("sent") == f"sent {COUNT}"
    assert sub.finish() == 0, sub.stderr()
    assert pub.finish() == 0, pub.stderr()


def test_exclusive_lockstep_publication_to_aeron_c(driver, peers, interop_binary):
    sub = start_peer(peers, c_peer(interop_binary, "sub", driver.dir, "aeron:ipc", 22, COUNT))
    sub.expect("ready")
    pub = start_peer(peers, lockstep_peer("pub", driver.dir, "aeron:ipc", 22, COUNT, "exclusive"))
    assert sub.expect("ok", timeout=120) == f"ok {COUNT}"
    assert sub.finish() == 0 and pub.finish() == 0, (sub.stderr(), pub.stderr())


def test_lockstep_and_aeron_c_publish_into_one_shared_log(driver, peers, interop_binary):
    """Two writers in two clients (ours and Aeron's) on one concurrent publication, i.e. one
    log with atomic tail claims from both: each writer's messages arrive once, in its order, intact."""
    import lockstep
    from aeron.harness import check_sequence
    from lockstep.aeron import Aeron

    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription("aeron:ipc", 23)
        ours = aeron.add_publication("aeron:ipc", 23)
        c_pub = start_peer(peers, c_peer(interop_binary, "pub", driver.dir, "aeron:ipc", 23, 2000))
        c_pub.expect("ready")
        got: list[bytes] = []
        idle = lockstep.BackoffIdleStrategy()
        for i in range(2000):
            data = b"LS" + i.to_bytes(4, "little")  # never an Aeron-side message: theirs count up bytewise
            while ours.offer(data) < 0:
                idle.idle(sub.poll(lambda d, h: got.append(bytes(d)), 10))
        while len(got) < 4000:  # (the Aeron publisher finishes as we consume)
            idle.idle(sub.poll(lambda d, h: got.append(bytes(d)), 10))
        c_pub.expect("sent")
        assert c_pub.finish() == 0, c_pub.stderr()
        mine = [g for g in got if len(g) == 6 and g[:2] == b"LS"]
        assert mine == [b"LS" + i.to_bytes(4, "little") for i in range(2000)]
        check_sequence([g for g in got if not (len(g) == 6 and g[:2] == b"LS")], 2000)


@pytest.mark.parametrize("kind", ["ipc", "udp"])
def test_fan_out_to_lockstep_and_aeron_subscribers(driver, peers, interop_binary, kind):
    """One Aeron C publisher, three subscriber processes (two lockstep, one Aeron C) at
    different speeds: the driver holds the publisher to the slowest and zeroes the log
    behind it, so each must still get every message once, in order, intact."""
    channel = _channel(kind)
    subs = [start_peer(peers, lockstep_peer("sub", driver.dir, channel, 24, COUNT)) for _ in range(2)]
    subs.append(start_peer(peers, c_peer(interop_binary, "sub", driver.dir, channel, 24, COUNT)))
    for sub in subs:
        sub.expect("ready")
    pub = start_peer(peers, c_peer(interop_binary, "pub", driver.dir, channel, 24, COUNT))
    pub.expect("ready")
    for sub in subs:
        assert sub.expect("ok", timeout=180) == f"ok {COUNT}"
    assert pub.expect("sent") == f"sent {COUNT}"
    for peer in (*subs, pub):
        assert peer.finish() == 0, peer.stderr()
