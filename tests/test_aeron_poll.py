"""poll(handler) of a media driver's subscription in C (issue 15 item 3), against a real aeronmd:
`AeronSubscription.poll` is the C PollAny over each image's C Poll, which reads the driver's log
and stores the position into the driver's subscriber-position counter once its handlers are done
(the driver zeroes the log behind it). Fragments reassembled, in order, once; a handler that
raises consumes its message only; an image that goes is told, with nothing of it after."""

from __future__ import annotations

import pytest

import lockstep
from lockstep.aeron import Aeron

from aeron.harness import check_sequence, driver, drivers, free_udp_port, message  # noqa: F401
from test_aeron_client import wait_for

IPC = "aeron:ipc"


class _Boom(Exception):
    pass


def _connected(aeron: Aeron, channel: str, stream_id: int, **callbacks):
    sub = aeron.add_subscription(channel, stream_id, **callbacks)
    pub = aeron.add_exclusive_publication(channel, stream_id)
    wait_for(lambda: pub.is_connected and sub.is_connected, "connection")
    return pub, sub


def _offer(pub, data: bytes) -> None:
    wait_for(lambda: pub.offer(data) > 0, "an offer")


@pytest.mark.parametrize("channel", [IPC, "udp"])
def test_a_driver_subscription_polls_in_c_once_in_order_the_position_in_the_drivers_counter(driver, channel):
    if channel == "udp":
        channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
    count = 2000  # every length of the sequence, fragmented ones (4000, 8192 > the mtu) too, over > 3 terms
    with Aeron(driver.dir) as aeron:
        pub, sub = _connected(aeron, channel, 21)
        [image] = sub.images
        assert type(sub.poll).__name__ == "PollAny" and type(image.poll).__name__ == "Poll"  # in C
        counter = aeron.counters
        cid = image.subscriber_position_id
        received: list[bytes] = []
        positions: list[int] = []

        def handler(data, header):
            # The driver's counter holds the position from before this poll until its handlers are done.
            assert counter.info(cid).value < header.position
            received.append(bytes(data))
            positions.append(header.position)

        limits = (1, 3, 10, 256)
        sent = 0
        polls = 0
        idle = lockstep.BackoffIdleStrategy()
        while len(received) < count:
            while sent < count and pub.offer(message(sent)) > 0:
                sent += 1
            n = sub.poll(handler, limits[polls % len(limits)])
            polls += 1
            assert n <= limits[(polls - 1) % len(limits)]
            assert counter.info(cid).value == image.position >= (positions[-1] if positions else image.join_position)
            idle.idle(n)
        check_sequence(received, count)
        assert positions == sorted(set(positions))
        assert image.position == pub.position


def test_a_handler_that_raises_on_a_driver_image_consumes_its_message_only(driver):
    with Aeron(driver.dir) as aeron:
        pub, sub = _connected(aeron, IPC, 22)
        [image] = sub.images
        for i in range(6):  # message 4 is 4000 bytes: fragmented, reassembled by the scan path
            _offer(pub, message(i))
        got: list[bytes] = []

        def failing_on(which: int):
            def handler(data, header):
                got.append(bytes(data))
                if len(got) == which:
                    raise _Boom
            return handler

        for which in (2, 5):
            with pytest.raises(_Boom):
                wait_for(lambda: False, "the handler's raise", step=lambda: sub.poll(failing_on(which), 10))
            assert len(got) == which
            assert aeron.counters.info(image.subscriber_position_id).value == image.position
        wait_for(lambda: len(got) == 6, "the rest", step=lambda: sub.poll(lambda d, h: got.append(bytes(d)), 10))
        check_sequence(got, 6)
        assert image.position == pub.position


def test_an_image_that_goes_is_told_by_the_c_poll_and_nothing_of_it_follows(driver):
    told: list = []
    with Aeron(driver.dir) as aeron:
        pub, sub = _connected(aeron, IPC, 23, on_unavailable_image=told.append)
        [image] = sub.images
        for i in range(3):
            _offer(pub, message(i))
        pub.close()
        got: list[bytes] = []
        wait_for(lambda: told, "unavailable image", step=lambda: sub.poll(lambda d, h: got.append(bytes(d)), 10))
        assert told == [image] and image.closed and not sub.images
        check_sequence(got, 3)  # drained before it went
        assert sub.poll(lambda d, h: pytest.fail("a message of a gone image"), 10) == 0
        sub.close()
        assert sub.poll(lambda d, h: None, 10) == 0  # (closed: the Python poll, as before)


def test_poll_any_applies_announced_changes_before_it_polls():
    """PollAny(housekeeping, fallback, events): whenever `events` (the driver's announcements) is
    not empty, housekeeping runs first — before any image is polled — else only every 64 empty polls."""
    from lockstep._native._fastpath import PollAny

    events: list = []
    calls: list[int] = []

    def housekeeping() -> None:
        calls.append(len(events))
        events.clear()

    poll = PollAny(housekeeping, lambda handler, limit=10: pytest.fail("the fallback"), events)
    assert poll(lambda d, h: None, 10) == 0 and calls == []
    events.append(("available", None))
    assert poll(lambda d, h: None, 10) == 0 and calls == [1] and events == []
    for _ in range(64):
        poll(lambda d, h: None, 10)
    assert calls == [1, 0]  # the periodic one
