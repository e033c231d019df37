"""lockstep.aeron.Aeron against a real aeronmd, in one process: publications and subscriptions
over the driver's logs (intact, in order, once; fragments; headers; claims; batches), image
callbacks, the driver's errors, and bad input (no driver, stale or foreign cnc.dat, a driver
killed mid-stream)."""

from __future__ import annotations

import os
import shutil
import struct
import time

import numpy as np
import pytest

import lockstep
from lockstep import BACK_PRESSURED, CLOSED, NOT_CONNECTED, DriverError, LockstepError
from lockstep.aeron import Aeron, AeronPublication, AeronSubscription
from lockstep.errors import FileFormatError

from aeron.harness import check_sequence, driver, drivers, free_udp_port, message, unique_dir  # noqa: F401

IPC = "aeron:ipc"


def offer_all(pub, sub, count: int, received: list, handler) -> None:
    """Offer messages 0..count-1, polling the subscription whenever the publication pushes back."""
    idle = lockstep.BackoffIdleStrategy()
    for i in range(count):
        data = message(i)
        while (result := pub.offer(data)) < 0:
            assert result in (BACK_PRESSURED, NOT_CONNECTED, lockstep.ADMIN_ACTION), lockstep.status_name(result)
            idle.idle(sub.poll(handler, 10))
        idle.reset()


def drain(sub, received: list, handler, count: int, stall_s: float = 20.0) -> None:
    """Poll until `count` messages arrived; fail if nothing moves for stall_s."""
    idle = lockstep.BackoffIdleStrategy()
    last, since = len(received), time.monotonic()
    while len(received) < count:
        idle.idle(sub.poll(handler, 10))
        if len(received) != last:
            last, since = len(received), time.monotonic()
        assert time.monotonic() - since < stall_s, f"stalled at {len(received)} of {count}"


def wait_for(predicate, what: str, timeout: float = 20.0, step=None):
    idle = lockstep.BackoffIdleStrategy()
    deadline = time.monotonic() + timeout
    while not predicate():
        if step is not None:
            step()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        idle.idle(0)


@pytest.mark.parametrize("channel", [IPC, "udp"])
@pytest.mark.parametrize("exclusive", [False, True])
def test_messages_arrive_once_in_order_intact(driver, channel, exclusive):
    if channel == "udp":
        channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    count = 3000  # > 3 terms of 64 KiB: every partition is reused
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(channel, 7)
        pub = (aeron.add_exclusive_publication if exclusive else aeron.add_publication)(channel, 7)
        assert isinstance(pub, lockstep.Publication) and isinstance(pub, AeronPublication)
        assert isinstance(sub, lockstep.Subscription) and isinstance(sub, AeronSubscription)
        received, headers = [], []

        def handler(data, header):
            received.append(bytes(data))
            headers.append((header.position, header.session_id, header.stream_id, header.term_id,
                            header.term_offset, header.flags))

        wait_for(lambda: pub.is_connected and sub.is_connected, "connection")
        offer_all(pub, sub, count, received, handler)
        drain(sub, received, handler, count)
        check_sequence(received, count)
        positions = [h[0] for h in headers]
        assert positions == sorted(positions) and positions[-1] == pub.position
        assert {h[1] for h in headers} == {pub.session_id} and {h[2] for h in headers} == {7}
        assert {h[5] for h in headers} == {0xC0}  # fragmented ones come reassembled
        assert all(h[4] % 32 == 0 for h in headers)


def test_receive_try_claim_offer_batch_and_poll_batch(driver):
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 8)
        pub = aeron.add_exclusive_publication(IPC, 8)
        wait_for(lambda: sub.is_connected, "image")
        with pub.try_claim(5) as claim:
            claim.buffer[:] = b"claim"
        data = b"".join(message(i) for i in range(8))
        lengths = np.array([len(message(i)) for i in range(8)], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
        accepted, position = pub.offer_batch(data, offsets, lengths)
        assert accepted == 8 and position == pub.position
        got = []
        wait_for(lambda: got.append(sub.receive()) or got[-1] is not None, "claimed message")
        assert got[-1] == b"claim"
        batches = []
        wait_for(lambda: sum(batches) >= 8, "batch",
                 step=lambda: sub.poll_batch(lambda b: batches.append(len(b)) or None))
        assert sum(batches) == 8


def test_poll_of_a_driver_image_moves_the_position_only_after_its_handlers(driver):
    """The driver zeroes its logs behind the subscriber position, so polling an aeron image
    (directly or through the subscription) is the deferred-commit poll, never lockstep's C poll
    that commits before the handlers run: while a handler runs, the position is still before
    its message; afterwards it is past every message handed out. A claim after close is CLOSED."""
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 12)
        pub = aeron.add_exclusive_publication(IPC, 12)
        wait_for(lambda: pub.is_connected and sub.is_connected, "connection")
        [image] = sub.images
        seen: list = []

        def handler(data, header):
            seen.append((bytes(data), image.position, header.position))

        for round, poll in enumerate((sub.poll, image.poll)):
            for i in range(5):
                wait_for(lambda: pub.offer(message(5 * round + i)) > 0, "an offer")
            wait_for(lambda: len(seen) >= 5 * (round + 1), "the messages", step=lambda: poll(handler, 10))
        assert [s[0] for s in seen] == [message(i) for i in range(10)]
        assert all(during < after for _, during, after in seen), seen
        assert image.position == seen[-1][2] == pub.position
        pub.close()
        assert pub.try_claim(8).status == CLOSED


def test_close_from_a_handler_lets_the_poll_of_a_driver_image_finish(driver):
    """An aeron image's poll is a call in flight like any other (issue 13 item 3): a close()
    from inside its handler waits for the poll to return (the rest of the batch is handed out
    from mapped memory), and later polls raise ClosedError."""
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 14)
        pub = aeron.add_exclusive_publication(IPC, 14)
        wait_for(lambda: pub.is_connected and sub.is_connected, "connection")
        [image] = sub.images
        for i in range(5):
            wait_for(lambda: pub.offer(message(i)) > 0, "an offer")
        seen: list = []

        def handler(data, header):
            seen.append(bytes(data))
            if len(seen) == 2:
                image.close()

        polled: list = []
        wait_for(lambda: image.closed, "the close", step=lambda: polled.append(image.poll(handler, 10)))
        assert polled[-1] == len(seen) - sum(polled[:-1]) > 2  # that poll went on past the close
        assert seen == [message(i) for i in range(len(seen))]
        with pytest.raises(lockstep.ClosedError):
            image.poll(handler, 10)


@pytest.mark.parametrize("channel", [IPC, "udp"])
def test_image_callbacks_and_unavailable_on_close(driver, channel):
    if channel == "udp":
        channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    events = []
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(channel, 9, on_available_image=lambda img: events.append(("up", img.session_id)),
                                     on_unavailable_image=lambda img: events.append(("down", img.session_id)))
        pub = aeron.add_publication(channel, 9)
        wait_for(lambda: sub.is_connected and pub.is_connected, "image")
        assert events == [("up", pub.session_id)]
        source = sub.images[0].source_identity
        assert source == "aeron:ipc" if channel == IPC else source.startswith("127.0.0.1:")
        assert pub.offer(b"last") > 0
        session = pub.session_id
        pub.close()
        assert pub.offer(b"x") == CLOSED
        got = []
        wait_for(lambda: ("down", session) in events, "unavailable image",
                 step=lambda: sub.poll(lambda d, h: got.append(bytes(d)), 10))
        assert got == [b"last"]  # drained before the image went
        assert not sub.is_connected


def test_shared_publication_two_adders_one_log(driver):
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 11)
        a = aeron.add_publication(IPC, 11)
        b = aeron.add_publication(IPC, 11)
        assert a.registration_id == b.registration_id and a.session_id == b.session_id
        assert a.correlation_id != b.correlation_id
        wait_for(lambda: sub.is_connected, "image")
        received = []
        for i in range(200):
            while (a if i % 2 else b).offer(message(i)) < 0:
                sub.poll(lambda d, h: received.append(bytes(d)), 10)
        drain(sub, received, lambda d, h: received.append(bytes(d)), 200)
        check_sequence(received, 200)
        a.close()
        assert b.offer(b"still open") > 0  # the other adder's reference keeps the publication


def test_not_connected_then_back_pressured(driver):
    with Aeron(driver.dir) as aeron:
        pub = aeron.add_exclusive_publication(IPC, 12)
        assert pub.offer(b"x") == NOT_CONNECTED and not pub.is_connected
        sub = aeron.add_subscription(IPC, 12)
        wait_for(lambda: pub.is_connected and pub.position_limit > 0, "connection and a limit")
        n = 0
        while (result := pub.offer(message(5))) > 0:  # nobody polls: the window fills
            n += 1
        assert result == BACK_PRESSURED
        assert pub.position >= pub.position_limit > 0
        received = []
        drain(sub, received, lambda d, h: received.append(bytes(d)), n)
        assert received == [message(5)] * n


def test_invalid_channel_is_a_driver_error_with_its_text(driver):
    with Aeron(driver.dir) as aeron:
        with pytest.raises(DriverError) as info:
            aeron.add_publication("aeron:tcp?endpoint=x", 1)
        assert info.value.code == 1 and info.value.code_name == "INVALID_CHANNEL"
        assert "invalid URI scheme or transport: aeron:tcp?endpoint=x" in str(info.value)
        with pytest.raises(DriverError) as info:
            aeron.add_subscription("aeron:udp?endpoint=127.0.0.1:notaport", 1)
        assert info.value.code != 0 and info.value.driver_message
        with pytest.raises(lockstep.InvalidArgumentError):
            aeron.add_publication("x" * 5000, 1)
        # The client is still fine after refused requests.
        assert aeron.add_publication(IPC, 1).offer(b"x") == NOT_CONNECTED


def test_no_driver_names_the_directory_after_the_timeout(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LockstepError, match=str(tmp_path)) as info:
        Aeron(tmp_path, driver_timeout_ms=300)
    assert "no Aeron media driver within 300 ms" in str(info.value)
    assert time.monotonic() - t0 >= 0.3


def test_stale_cnc_of_a_killed_driver(drivers):
    dead = drivers.start("dead")
    dead.kill()  # SIGKILL: cnc.dat stays, its heartbeat stops
    time.sleep(0.4)
    with pytest.raises(LockstepError, match="stale cnc.dat") as info:
        Aeron(dead.dir, driver_timeout_ms=300)
    assert str(dead.dir) in str(info.value)


def test_cnc_of_another_major_version_is_refused(driver):
    other = unique_dir("v1")
    other.mkdir()
    try:
        shutil.copy(driver.dir / "cnc.dat", other / "cnc.dat")
        with open(other / "cnc.dat", "r+b") as f:
            f.write(struct.pack("<i", (1 << 16) | (2 << 8)))  # 1.2.0
        with pytest.raises(FileFormatError, match="CnC version not compatible: found 1.2.0"):
            Aeron(other, driver_timeout_ms=300)
    finally:
        shutil.rmtree(other)


def test_heartbeat_keeps_the_client_alive_past_the_liveness_timeout(driver):
    # The test driver times clients out after 3 s without a heartbeat; the daemon thread beats.
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 13)
        pub = aeron.add_publication(IPC, 13)
        wait_for(lambda: sub.is_connected, "image")
        time.sleep(4.5)
        assert not aeron.is_closed
        assert pub.offer(b"alive") > 0
        got = []
        wait_for(lambda: got, "message", step=lambda: sub.poll(lambda d, h: got.append(bytes(d)), 10))
        assert got == [b"alive"]


@pytest.mark.parametrize("channel", [IPC, "udp"])
def test_driver_killed_mid_stream(driver, channel):
    if channel == "udp":
        channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    gone = []
    aeron = Aeron(driver.dir, driver_timeout_ms=2000)
    try:
        sub = aeron.add_subscription(channel, 14, on_unavailable_image=lambda img: gone.append(img.session_id))
        pub = aeron.add_publication(channel, 14)
        wait_for(lambda: sub.is_connected and pub.is_connected, "connection")
        for i in range(50):
            while pub.offer(message(i)) < 0:
                sub.poll(lambda d, h: None, 10)
        driver.kill()
        results = []
        wait_for(lambda: aeron.is_closed, "the client to notice", step=lambda: results.append(pub.offer(b"x")))
        assert pub.offer(b"after") == CLOSED
        # Until the client notices, offers may still land in the (now unread) log or push back.
        assert all(r > 0 or r in (CLOSED, NOT_CONNECTED, BACK_PRESSURED) for r in results)
        wait_for(lambda: gone == [pub.session_id], "images to go", step=lambda: sub.poll(lambda d, h: None, 10))
        assert not sub.is_connected
        assert "MediaDriver" in aeron.closed_reason
        with pytest.raises(LockstepError, match="closed"):
            aeron.add_publication(IPC, 1)
    finally:
        aeron.close()  # never hangs on a dead driver


def test_spy_reads_a_local_network_publication(driver):
    channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(channel, 15)
        spy = aeron.add_subscription("aeron-spy:" + channel, 15)
        pub = aeron.add_publication(channel, 15)
        wait_for(lambda: sub.is_connected and spy.is_connected, "images")
        assert spy.images[0].session_id == pub.session_id
        heard, spied = [], []
        for i in range(500):
            while pub.offer(message(i)) < 0:
                sub.poll(lambda d, h: heard.append(bytes(d)), 10)
                spy.poll(lambda d, h: spied.append(bytes(d)), 10)
        wait_for(lambda: len(heard) == 500 and len(spied) == 500, "both readers",
                 step=lambda: (sub.poll(lambda d, h: heard.append(bytes(d)), 10),
                               spy.poll(lambda d, h: spied.append(bytes(d)), 10)))
        check_sequence(heard, 500)
        check_sequence(spied, 500)


def test_blocking_receive_waits_for_a_message(driver):
    import threading

    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription(IPC, 16)
        pub = aeron.add_publication(IPC, 16)
        wait_for(lambda: sub.is_connected, "image")
        assert sub.receive(timeout=0.05) is None
        timer = threading.Timer(0.2, lambda: pub.offer(message(5)))
        timer.start()
        try:
            assert sub.receive(timeout=30) == message(5)  # a fragmented one: the slow path, copied
        finally:
            timer.join()


def test_full_to_driver_ring_is_an_error_not_a_hang(driver):
    import signal

    from lockstep.aeron import protocol

    with Aeron(driver.dir) as aeron:
        pub = aeron.add_publication(IPC, 17)
        os.kill(driver.pid, signal.SIGSTOP)  # the driver stops reading its ring
        try:
            with pytest.raises(LockstepError, match="to-driver ring is full"):
                for _ in range(1 << 20):  # 1 MiB ring, 24 bytes a keepalive
                    aeron._send(protocol.CLIENT_KEEPALIVE, protocol.correlated(aeron.client_id, 0))
        finally:
            os.kill(driver.pid, signal.SIGCONT)
        # Once the driver drains its ring the client works again.
        sub = aeron.add_subscription(IPC, 17)
        wait_for(lambda: sub.is_connected, "image")
        assert pub.offer(b"after") > 0


def test_a_client_the_driver_timed_out_is_closed(driver):
    # Stop the heartbeat thread (as a process frozen longer than the liveness timeout would):
    # the test driver drops clients after 3 s; the next request learns it from the broadcast.
    aeron = Aeron(driver.dir)
    try:
        pub = aeron.add_publication(IPC, 18)
        aeron._stop.set()
        aeron._thread.join()
        time.sleep(4.5)
        with pytest.raises(LockstepError, match="timed this client out"):
            aeron.add_subscription(IPC, 18)
        assert aeron.is_closed and pub.offer(b"x") == CLOSED
    finally:
        aeron.close()


def test_default_directory_is_aerons(driver, monkeypatch):
    from lockstep.aeron import default_aeron_dir

    monkeypatch.delenv("AERON_DIR", raising=False)
    import getpass

    assert str(default_aeron_dir()) == f"/dev/shm/aeron-{getpass.getuser()}"
    monkeypatch.setenv("AERON_DIR", str(driver.dir))
    with lockstep.Aeron() as aeron:  # (also exported at the top level)
        assert aeron.dir == driver.dir
        assert aeron.add_publication(IPC, 19).offer(b"x") == NOT_CONNECTED
