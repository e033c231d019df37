"""Two "hosts" for real: network namespaces joined by a veth pair, one media driver in each,
lockstep publisher and subscriber processes inside them, 10 % of DATA frames dropped by the
receiving driver's loss generator — nothing lost, nothing twice, in order. Skipped where
namespaces cannot be made (not root, no iproute2)."""

from __future__ import annotations

from lockstep.aeron import Aeron

from aeron.harness import drivers, lockstep_peer, netns_pair, peers, start_peer  # noqa: F401

COUNT = 3000
LOSSY = {"AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS": "loss",
         "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS": "rate=0.1|seed=11|recv-msg-mask=0x2"}


def test_two_hosts_over_veth_with_loss(drivers, peers, netns_pair):
    sender = drivers.start("host-a", netns=netns_pair.a)
    receiver = drivers.start("host-b", netns=netns_pair.b, **LOSSY)
    channel = f"aeron:udp?endpoint={netns_pair.address_b}:40456"
    sub = start_peer(peers, netns_pair.exec_prefix(netns_pair.b) + lockstep_peer("sub", receiver.dir, channel, 41, COUNT))
    sub.expect("ready")
    pub = start_peer(peers, netns_pair.exec_prefix(netns_pair.a) + lockstep_peer("pub", sender.dir, channel, 41, COUNT))
    pub.expect("ready")
    assert sub.expect("ok", timeout=180) == f"ok {COUNT}"
    assert pub.expect("sent") == f"sent {COUNT}"
    with Aeron(receiver.dir) as aeron:
        bound = [c.label for c in aeron.counters if c.type_id == 14]  # rcv-local-sockaddr
        assert aeron.counters.get(5) > 0  # NAKs sent: the loss was real, and repaired
    assert any(f"{netns_pair.address_b}:40456" in label for label in bound), bound  # on host b's veth
    assert sub.finish() == 0, sub.stderr()
    assert pub.finish() == 0, pub.stderr()
