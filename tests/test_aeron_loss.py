"""Across media drivers ("hosts" with their own directories, on loopback): lockstep ->
lockstep over UDP while the receiving driver's loss generator drops 10 % of the DATA frames
it receives (spec §8.5), unicast and multi-destination cast to two receivers. Aeron's NAKs
and retransmits repair it: nothing lost, nothing twice, in order (each receiver checks)."""

from __future__ import annotations

from lockstep.aeron import Aeron

from aeron.harness import drivers, free_udp_port, lockstep_peer, peers, start_peer  # noqa: F401

COUNT = 3000
# Drop each incoming DATA frame (mask bit 1 << type 1) with probability 0.1.
LOSSY = {"AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS": "loss",
         "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS": "rate=0.1|seed=7|recv-msg-mask=0x2"}
NAKS_SENT = 5          # system counters (spec §6)
RETRANSMITS_SENT = 11


def system_counter(dir, counter_id: int) -> int:
    with Aeron(dir) as aeron:
        return aeron.counters.get(counter_id)


def test_unicast_with_10_percent_loss_loses_nothing(drivers, peers):
    sender = drivers.start("sender")
    receiver = drivers.start("receiver", **LOSSY)
    channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    sub = start_peer(peers, lockstep_peer("sub", receiver.dir, channel, 31, COUNT))
    sub.expect("ready")
    pub = start_peer(peers, lockstep_peer("pub", sender.dir, channel, 31, COUNT))
    pub.expect("ready")
    assert sub.expect("ok", timeout=180) == f"ok {COUNT}"
    assert pub.expect("sent") == f"sent {COUNT}"
    assert system_counter(receiver.dir, NAKS_SENT) > 0  # the loss was real and was repaired
    assert system_counter(sender.dir, RETRANSMITS_SENT) > 0
    assert sub.finish() == 0, sub.stderr()
    assert pub.finish() == 0, pub.stderr()


def test_multi_destination_cast_to_two_lossy_receivers(drivers, peers):
    sender = drivers.start("mdc-sender")
    receivers = [drivers.start(f"mdc-receiver{i}", **LOSSY) for i in range(2)]
    endpoints = [f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}" for _ in receivers]
    subs = []
    for receiver, endpoint in zip(receivers, endpoints):
        sub = start_peer(peers, lockstep_peer("sub", receiver.dir, endpoint, 32, COUNT))
        sub.expect("ready")
        subs.append(sub)
    # Min flow control: the sender waits for the slower receiver, so neither falls out of the window.
    control = f"aeron:udp?control-mode=manual|control=127.0.0.1:{free_udp_port()}|fc=min"
    pub = start_peer(peers, lockstep_peer("pub", sender.dir, control, 32, COUNT, *(f"dest={e}" for e in endpoints),
                                          "receivers=2"))
    pub.expect("ready")
    for sub in subs:
        assert sub.expect("ok", timeout=180) == f"ok {COUNT}"
    assert pub.expect("sent") == f"sent {COUNT}"
    for receiver in receivers:
        assert system_counter(receiver.dir, NAKS_SENT) > 0
    for peer in (*subs, pub):
        assert peer.finish() == 0, peer.stderr()
