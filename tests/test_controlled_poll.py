"""controlled_poll(handler, limit) of subscriptions, images and log readers (Aeron's
controlledPoll, in C on poll's path): the handler's ControlledAction decides what is consumed —
ABORT leaves the message unread (a reassembled one too) and stops, BREAK consumes it and stops,
COMMIT stores the position past it at once, CONTINUE or None goes on — across padding,
fragments and term rotation, every message once and in order; and the same against a real
media driver, whose image's position is the driver's counter."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockstep
from lockstep import ClosedError, ControlledAction as A, InvalidArgumentError, Publication, Subscription
from lockstep.transport.reader import LogReader

from test_receive import _connected as connected, _message

TERM = 64 * 1024
ACTIONS = [A.CONTINUE, A.ABORT, A.BREAK, A.COMMIT, None]


def _connected(dir, term_length: int = 4 * TERM) -> tuple[Publication, Subscription]:
    return connected(dir, term_length)


def _offer(pub: Publication, data: bytes) -> None:
    assert pub.offer(data) > 0


@pytest.mark.parametrize("size", [40, 5000])  # a whole frame (frame by frame) / fragments (the scan path)
def test_each_action_does_what_aeron_s_does(lsdir, size):
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        sent = [_message(i, size) for i in range(8)]
        for m in sent:
            _offer(pub, m)
        got: list[bytes] = []
        plan: list = []
        ends: list[int] = []

        def handler(data, header):
            action = plan.pop(0) if plan else A.CONTINUE
            ends.append(header.position)
            if action is not A.ABORT:
                got.append(bytes(data))
            return action

        plan[:] = [A.ABORT]
        assert sub.controlled_poll(handler, 10) == 0 and got == []  # unread
        if size < 1000:
            assert image.position == image.join_position  # nothing moved
        else:  # back to its END fragment, the others kept reassembled (Aeron's ControlledFragmentAssembler)
            assert image.join_position < image.position < ends[0]
        plan[:] = [A.CONTINUE, A.BREAK]
        assert sub.controlled_poll(handler, 10) == 2 and got == sent[:2]  # BREAK: consumed, then stop
        plan[:] = [None, A.ABORT]
        assert sub.controlled_poll(handler, 10) == 1 and got == sent[:3]  # None continues; ABORT: message 3 again
        assert sub.controlled_poll(handler, 2) == 2 and got == sent[:5]  # the limit still counts
        assert sub.controlled_poll(handler, 10) == 3 and got == sent
        assert sub.controlled_poll(handler, 10) == 0 and image.position == pub.position


@pytest.mark.parametrize("size", [40, 5000])
def test_a_result_that_is_no_action_continues(lsdir, size):
    pub, sub = _connected(lsdir)
    with pub, sub:
        for i in range(5):
            _offer(pub, _message(i, size))
        results = iter(["ABORT", 99, 1 << 80, -1, object()])
        assert sub.controlled_poll(lambda d, h: next(results), 10) == 5


@pytest.mark.parametrize("size", [40, 5000])
def test_commit_stores_the_position_at_once_continue_at_the_end(lsdir, size):
    """A publisher's window moves on COMMIT mid-poll; with CONTINUE only after the handlers."""
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        for i in range(6):
            _offer(pub, _message(i, size))
        start = image.position
        seen: list[tuple[int, int]] = []  # (the image's position while handling, the header's after)

        def handler(data, header):
            seen.append((image.position, header.position))
            return A.COMMIT if len(seen) == 3 else A.CONTINUE

        assert sub.controlled_poll(handler, 10) == 6
        after = [p for _, p in seen]
        if size < 1000:  # frame by frame: stored once, after the handlers, unless committed
            assert [p for p, _ in seen] == [start] * 3 + [after[2]] * 3
        else:  # the scan path stores the position as it scans (its bytes stay intact): COMMIT changes nothing
            assert all(p >= a for p, a in seen)
        assert image.position == after[-1] == pub.position


def test_an_aborted_reassembled_message_comes_again_whole_and_intact(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        sent = [_message(0, 30), _message(1, 20_000), _message(2, 30)]
        for m in sent:
            _offer(pub, m)
        got: list[bytes] = []
        aborts = [2, 2]  # abort the 20 kB message twice (after its fragments were assembled)

        def handler(data, header):
            if len(data) == 20_000 and aborts:
                aborts.pop()
                return A.ABORT
            got.append(bytes(data))
            return A.CONTINUE

        counts = [sub.controlled_poll(handler, 10) for _ in range(4)]
        assert got == sent and counts == [1, 0, 2, 0]


def test_a_handler_that_raises_has_its_message_consumed_the_rest_not(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        sent = [_message(i, 5000 if i == 3 else 40) for i in range(6)]
        for m in sent:
            _offer(pub, m)
        got: list[bytes] = []

        def failing(data, header):
            got.append(bytes(data))
            if len(got) in (2, 4):
                raise KeyError("boom")
            return A.CONTINUE

        for _ in range(2):
            with pytest.raises(KeyError):
                sub.controlled_poll(failing, 10)
        assert sub.controlled_poll(failing, 10) == 2
        assert got == sent


def test_closed_bad_limits_keywords_and_a_close_from_the_handler(lsdir):
    pub, sub = _connected(lsdir)
    with pub:
        [image] = sub.images
        for i in range(4):
            _offer(pub, _message(i, 40))
        assert type(sub.controlled_poll).__name__ == "PollAny"  # the C entry
        for bad in ("3", 1.5, None, 1 << 70):
            with pytest.raises(InvalidArgumentError):
                sub.controlled_poll(lambda d, h: None, bad)
            with pytest.raises(InvalidArgumentError):
                image.controlled_poll(lambda d, h: None, bad)
        assert sub.controlled_poll(lambda d, h: A.BREAK, fragment_limit=5) == 1  # a keyword: the Python entry, the same poll
        assert image.controlled_poll(lambda d, h: A.BREAK, limit=5) == 1
        assert sub.controlled_poll(lambda d, h: None, 0) == 0

        def closing(data, header):
            sub.close()
            return A.CONTINUE

        assert sub.controlled_poll(closing, 10) == 2  # the call finishes, then it is closed
        with pytest.raises(ClosedError):
            sub.controlled_poll(lambda d, h: None, 10)
        with pytest.raises(ClosedError):
            image.controlled_poll(lambda d, h: None, 10)


def test_a_log_reader_on_a_file_polls_controlled_too(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        sent = [_message(i, 3000 * (i % 3)) for i in range(9)]
        for m in sent:
            _offer(pub, m)
        reader = LogReader(sub.images[0].path, position=0)
        with reader:
            got: list[bytes] = []
            seen = 0

            def handler(data, header):
                nonlocal seen
                seen += 1
                if seen % 3 == 0:
                    return A.ABORT
                got.append(bytes(data))
                return A.BREAK if seen % 4 == 0 else A.CONTINUE

            while reader.controlled_poll(handler, 4) or len(got) < len(sent):
                assert seen < 100
            assert got == sent
        with pytest.raises(ClosedError):
            reader.controlled_poll(handler, 4)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.one_of(st.integers(0, 100), st.integers(1300, 8192)), min_size=1, max_size=80),
       actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=12),
       limits=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       rounds=st.integers(1, 6))
def test_any_actions_over_rotation_padding_and_fragments_match_the_model(sizes, actions, limits, rounds):
    """The model: each poll hands out messages from the first unread one; ABORT ends the poll
    with it unread, BREAK after it; the poll returns the messages consumed, never more than its
    limit, and at least one when one is there and the first action is not ABORT. Small terms
    force rotation and padding; sizes over the mtu payload force fragments."""
    actions = [*actions, A.CONTINUE]  # (not only ABORTs: the stream must get on)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as dir:
        pub, sub = _connected(dir, TERM)
        with pub, sub:
            sent: list[bytes] = []
            consumed = 0
            deliveries = 0

            def poll_once() -> None:
                nonlocal consumed, deliveries
                limit = limits[deliveries % len(limits)]
                handed: list[tuple[bytes, A | None]] = []

                def handler(data, header):
                    nonlocal deliveries
                    action = actions[deliveries % len(actions)]
                    deliveries += 1
                    handed.append((bytes(data), action))
                    return action

                n = sub.controlled_poll(handler, limit)
                expect = 0
                for k, (data, action) in enumerate(handed):
                    assert data == sent[consumed + expect], f"delivery {k} of a poll: not the first unread message"
                    if action is A.ABORT:
                        assert k == len(handed) - 1
                        break
                    expect += 1
                    if action is A.BREAK:
                        assert k == len(handed) - 1
                assert n == expect <= limit
                if consumed < len(sent) and not handed:
                    assert False, "a message was there and the poll handed out nothing"
                consumed += n

            for _ in range(rounds):
                for size in sizes:
                    msg = _message(len(sent), size)
                    while pub.offer(msg) <= 0:
                        poll_once()
                    sent.append(msg)
            polls = 0
            while consumed < len(sent):
                poll_once()
                polls += 1
                assert polls < 100_000
            assert sub.images[0].position == pub.position


# -- a media driver's image (its C poll defers the position to after the handlers) --------------

from aeron.harness import check_sequence, driver, drivers, message  # noqa: E402,F401


def test_a_driver_subscription_polls_controlled_the_position_in_the_drivers_counter(driver):
    from lockstep.aeron import Aeron
    from test_aeron_client import wait_for

    with Aeron(driver.dir) as aeron:
        sub = aeron.add_subscription("aeron:ipc", 31)
        pub = aeron.add_exclusive_publication("aeron:ipc", 31)
        wait_for(lambda: pub.is_connected and sub.is_connected, "connection")
        [image] = sub.images
        assert type(sub.controlled_poll).__name__ == "PollAny"
        counter = aeron.counters
        cid = image.subscriber_position_id
        count = 600  # the harness's lengths include fragmented ones (4000, 8192 > the mtu)
        received: list[bytes] = []
        deliveries = 0

        def handler(data, header):
            nonlocal deliveries
            action = ACTIONS[deliveries % len(ACTIONS)]
            deliveries += 1
            if action is A.ABORT:
                return action
            received.append(bytes(data))
            return action

        last_commit: list[int] = []

        def committing(data, header):
            # after a COMMIT the driver's counter is past the committed message (and any padding
            # after it) while the next is handled, and never past the message being handled
            value = counter.info(cid).value
            assert value < header.position
            if last_commit:
                assert value >= last_commit.pop()
            action = handler(data, header)
            if action is A.COMMIT:
                last_commit.append(header.position)
            return action

        sent = stalls = 0
        idle = lockstep.BackoffIdleStrategy()
        while len(received) < count:
            while sent < count and pub.offer(message(sent)) > 0:
                sent += 1
            last_commit.clear()
            n = sub.controlled_poll(committing, 7)
            assert n <= 7
            assert counter.info(cid).value == image.position
            stalls = 0 if n else stalls + 1
            assert stalls < 20_000, f"stuck at {len(received)} of {count} (the log behind the position is zeroed)"
            idle.idle(n)
        check_sequence(received, count)
        assert image.position == pub.position
        sub.close()
        with pytest.raises(ClosedError):
            sub.controlled_poll(handler, 10)


def test_the_controlled_action_of_rings_and_logs_is_one_enum_with_aeron_s_values():
    from lockstep.transport.ring import ControlledAction as RingAction

    assert RingAction is lockstep.ControlledAction
    assert [(a.name, a.value) for a in A] == [("ABORT", 1), ("BREAK", 2), ("COMMIT", 3), ("CONTINUE", 4)]
