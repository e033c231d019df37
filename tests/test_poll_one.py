"""poll(handler, 1) takes a one-call fast path: it must deliver exactly what the batch path
delivers — same bytes, same headers, fragmented messages reassembled, padding skipped."""

from __future__ import annotations

import pytest

from lockstep import Publication, Subscription


def _drain(sub: Subscription, limit: int) -> list[tuple[bytes, dict]]:
    got: list[tuple[bytes, dict]] = []

    def handler(data, header) -> None:
        got.append((bytes(data), {k: getattr(header, k) for k in
                                  ("position", "session_id", "stream_id", "term_id", "term_offset", "flags")}))

    while sub.poll(handler, limit):
        pass
    return got


@pytest.mark.parametrize("exclusive", [True, False])
def test_poll_one_matches_batch_poll(lsdir, exclusive):
    sizes = [0, 1, 31, 1376, 1377, 5000, 7, 3 * 1408] * 40  # crosses term ends (64 KiB terms)
    with Publication(11, exclusive=exclusive, term_length=1 << 16) as pub, \
            Subscription(11, start="earliest") as one, Subscription(11, start="earliest") as many:
        one.discover()
        many.discover()
        sent, got_one, got_many = [], [], []
        for i, size in enumerate(sizes):
            payload = bytes((i + j) & 0xFF for j in range(size))
            while (position := pub.offer(payload)) < 0:  # back-pressured: both read, then retry
                got_one += _drain(one, 1)
                got_many += _drain(many, 10)
            sent.append((payload, position))
        got_one += _drain(one, 1)
        got_many += _drain(many, 10)
    assert [p for p, _ in got_one] == [p for p, _ in sent]
    assert got_one == got_many
    assert [h["position"] for _, h in got_one] == [pos for _, pos in sent]
    assert all(h["flags"] == 0xC0 for _, h in got_one)


def test_poll_one_consumes_a_message_whose_handler_raises(lsdir):
    with Publication(12, exclusive=True) as pub, Subscription(12) as sub:
        sub.discover()
        assert pub.offer(b"first") > 0 and pub.offer(b"second") > 0

        def boom(data, header) -> None:
            raise RuntimeError(bytes(data))

        with pytest.raises(RuntimeError, match="first"):
            sub.poll(boom, 1)
        assert [p for p, _ in _drain(sub, 1)] == [b"second"]
