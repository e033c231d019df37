"""poll(handler) in C reads frame by frame, as Aeron's image poll does (issue 15 item 1): the
subscriber position — what publishers are held back by — moves once per poll, after its
handlers; messages on both sides of a term end (padding between) go out in one call, in order,
with their headers; a handler that raises has its message consumed, the rest not."""

from __future__ import annotations

import time

import pytest

from lockstep import Publication, Subscription
from lockstep.transport.client import client_for

STREAM = 1501
TERM = 64 * 1024


class _Boom(Exception):
    pass


def _connected(dir) -> tuple[Publication, Subscription]:
    sub = Subscription(STREAM, dir)
    pub = Publication(STREAM, dir, exclusive=True, term_length=TERM)
    deadline = time.monotonic() + 30
    while not (sub.discover() and pub.is_connected):
        assert time.monotonic() < deadline, "publication and subscription did not connect"
        time.sleep(0.001)
    return pub, sub


def test_poll_stores_the_position_publishers_see_once_after_its_handlers(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        counters = client_for(lsdir).counters  # what publishers read: the subscriber's position counter
        start = image.position
        positions = [pub.offer(bytes([i]) * 40) for i in range(5)]
        during: list[tuple[int, int]] = []

        def handler(data, header):
            during.append((image.position, counters.info(image._counter.id).value))

        assert sub.poll(handler, 10) == 5
        assert during == [(start, start)] * 5  # the bytes stay held back while the handlers read them
        assert image.position == counters.info(image._counter.id).value == positions[-1]


def test_one_poll_reads_on_across_a_term_end_in_order_with_headers(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        size = 1000  # 1056-byte frames: the term ends in padding
        for _ in range(55):  # to 7 frames before the term end
            assert pub.offer(bytes(size)) > 0
            assert sub.poll(lambda d, h: None, 1) == 1
        count = 12
        sent = [(i.to_bytes(4, "little") * 250, pub.offer(i.to_bytes(4, "little") * 250, i)) for i in range(count)]
        assert all(p > 0 for _, p in sent)
        got: list[tuple[bytes, int, int, int, int]] = []

        def handler(data, header):
            got.append((bytes(data), header.position, header.reserved_value, header.term_id, header.term_offset))

        assert sub.poll(handler, count) == count
        assert [(g[0], g[1], g[2]) for g in got] == [(d, p, i) for i, (d, p) in enumerate(sent)]
        assert all(len(g[0]) == size for g in got)
        term_ids = [g[3] for g in got]
        assert len(set(term_ids)) == 2 and term_ids == sorted(term_ids)  # both sides of the term end
        assert got[term_ids.index(term_ids[-1])][4] == 0  # the next term's first frame


def test_a_raising_handler_consumes_its_message_and_the_next_poll_goes_on(lsdir):
    pub, sub = _connected(lsdir)
    with pub, sub:
        [image] = sub.images
        positions = [pub.offer(bytes([i]) * 8) for i in range(6)]
        got: list[bytes] = []

        def handler(data, header):
            got.append(bytes(data))
            if len(got) == 3:
                raise _Boom

        with pytest.raises(_Boom):
            sub.poll(handler, 10)
        assert image.position == positions[2]
        assert sub.poll(handler, 10) == 3
        assert got == [bytes([i]) * 8 for i in range(6)]


@pytest.mark.parametrize("how", ["poll", "controlled_poll"])
def test_a_poll_of_the_same_image_from_its_handler_raises_instead_of_handing_messages_out_twice(lsdir, how):
    """The position moves only after the handlers: a nested poll of the same image would hand the
    same messages out again (it did). It raises RuntimeError; the outer poll goes on, each message
    once; a handler may still poll another subscription."""
    pub, sub = _connected(lsdir)
    other = Subscription(STREAM + 1, lsdir)
    other_pub = Publication(STREAM + 1, lsdir, exclusive=True)
    with pub, sub, other, other_pub:
        while not (other.discover() and other_pub.is_connected):
            time.sleep(0.001)
        for i in range(4):
            pub.offer(bytes([i]) * 40)
        other_pub.offer(b"elsewhere")
        got: list = []
        errors: list[str] = []

        def handler(data, header):
            got.append(data[0])
            if len(got) == 1:
                for poll in (sub.poll, sub.controlled_poll, sub.images[0].poll, sub.images[0].controlled_poll):
                    with pytest.raises(RuntimeError, match="already polling") as e:
                        poll(lambda d, h: got.append(("again", d[0])), 10)
                    errors.append(str(e.value))
                assert other.poll(lambda d, h: got.append(bytes(d)), 10) == 1

        assert getattr(sub, how)(handler, 10) == 4
        assert got == [0, b"elsewhere", 1, 2, 3] and len(errors) == 4


def test_a_receive_of_the_same_image_from_a_poll_handler_raises_instead_of_handing_messages_out_twice(lsdir):
    """receive() read from the position the poll stores only after its handlers: from a handler it
    returned the message being handled and then one the poll handed out too (it did)."""
    pub, sub = _connected(lsdir)
    with pub, sub:
        for i in range(4):
            pub.offer(bytes([i]) * 40)
        got: list = []

        def handler(data, header):
            got.append(data[0])
            if len(got) == 1:
                for receive in (sub.receive, sub.images[0].receive, lambda: sub.receive(timeout=0.01)):
                    with pytest.raises(RuntimeError, match="poll of this image is in flight"):
                        receive()

        assert sub.poll(handler, 10) == 4 and got == [0, 1, 2, 3]
        assert sub.receive() is None  # after the poll: as before
        pub.offer(b"next")
        assert sub.receive() == b"next"
