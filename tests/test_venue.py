"""The demo's venue simulator: every order sent to it gets a final answer (fill, reject or
cancel), also when the session drops while answers are still on their way."""

from __future__ import annotations

from lockstep.demo.venue import CANCELLED, FILL, REJECT, VenueSimulator


def _final_answers(responses) -> dict[int, str]:
    final: dict[int, str] = {}
    for kind, order_id, _qty, _price, leaves in responses:
        if kind in (REJECT, CANCELLED) or (kind == FILL and leaves == 0):
            assert order_id not in final, f"order {order_id} answered twice"
            final[order_id] = kind
    return final


def test_every_order_gets_one_final_answer_even_when_disconnected_midway():
    for seed in range(20):
        venue = VenueSimulator(0, seed, reject_ratio=0.3, throttle_per_s=1e9)
        now = 1_000_000_000
        orders = list(range(1, 201))
        for order_id in orders:
            venue.submit(order_id, 1, 10, 100, now)
        responses = venue.poll(now + 400_000)  # some answered, most still on their way
        responses += venue.disconnect(now + 400_000)
        assert sorted(_final_answers(responses)) == orders, f"seed {seed}"
        assert venue.poll(now + 10**12) == []  # nothing more once disconnected
