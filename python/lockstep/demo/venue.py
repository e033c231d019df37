"""A simulated execution venue: deterministic given a seed.

What happens to each order (reject, rest, fill in one or several parts, at which delays)
is drawn from a `random.Random` seeded with (seed, venue), in the order orders arrive, so
the same orders give the same outcomes; only the wall-clock times at which responses
become due depend on when they were sent. The venue's session has an order entry
throttle (orders/s, a token bucket), as real venues do: a gateway that hits it must wait.
Disconnecting cancels every open order (cancel on disconnect) and drops the session.
"""

from __future__ import annotations

import heapq
import random
from array import array

__all__ = ["VenueSimulator", "VenueDisconnected", "ACK", "FILL", "REJECT", "CANCELLED"]

ACK, FILL, REJECT, CANCELLED = "ack", "fill", "reject", "cancelled"


class VenueDisconnected(Exception):
    """An order was sent to a disconnected venue (a gateway bug: it must decline instead)."""


class VenueSimulator:
    """One venue session. `submit` an order, `poll(now_ns)` the responses that are due:
    (kind, order_id, qty, price, leaves) tuples."""

    def __init__(self, venue: int, seed: int = 1, *, latency_us: float = 300.0, throttle_per_s: float = 2000.0,
                 reject_ratio: float = 0.02, rest_ratio: float = 0.10, partial_ratio: float = 0.5) -> None:
        self.venue = venue
        self.rng = random.Random(seed * 1_000_003 + venue)
        self.latency_ns = int(latency_us * 1000)
        self.throttle_per_s = throttle_per_s
        self.reject_ratio = reject_ratio
        self.rest_ratio = rest_ratio
        self.partial_ratio = partial_ratio
        self.connected = True
        self._tokens = min(throttle_per_s / 100, 50.0)  # a burst of 10 ms
        self._burst = self._tokens
        self._refilled_ns = 0
        self._due: list[tuple[int, int, str, int, int, int, int]] = []  # (due, n, kind, order, qty, price, leaves)
        self._n = 0
        self.open: dict[int, int] = {}        # order id -> leaves
        self.arrivals = array("q")           # CLOCK_MONOTONIC ns of each order received
        self.received_while_disconnected = 0
        self.responses = 0

    # -- session --------------------------------------------------------------------------

    def accepts(self, now_ns: int) -> bool:
        """Whether the throttle lets one more order through now."""
        if self._tokens >= 1.0:
            return True
        if self._refilled_ns:
            self._tokens = min(self._burst, self._tokens + (now_ns - self._refilled_ns) * self.throttle_per_s / 1e9)
        self._refilled_ns = now_ns
        return self._tokens >= 1.0

    def submit(self, order_id: int, side: int, qty: int, price: int, now_ns: int) -> None:
        if not self.connected:
            self.received_while_disconnected += 1
            raise VenueDisconnected(f"venue {self.venue}: order {order_id} sent while disconnected")
        self._tokens -= 1.0
        if not self._refilled_ns:
            self._refilled_ns = now_ns
        self.arrivals.append(now_ns)
        rng = self.rng
        lat = self.latency_ns
        t = now_ns + lat + int(rng.random() * lat)
        if rng.random() < self.reject_ratio:
            self._push(t, REJECT, order_id, 0, price, qty)
            return
        self._push(t, ACK, order_id, 0, price, qty)
        self.open[order_id] = qty
        if rng.random() < self.rest_ratio:
            return  # rests: open until filled never, or cancelled on disconnect
        leaves = qty
        if rng.random() < self.partial_ratio and qty > 1:
            part = max(1, int(qty * (0.2 + 0.6 * rng.random())))
            t += lat + int(rng.random() * lat)
            leaves -= part
            self._push(t, FILL, order_id, part, price, leaves)
        t += lat + int(rng.random() * lat)
        self._push(t, FILL, order_id, leaves, price, 0)

    def _push(self, due: int, kind: str, order_id: int, qty: int, price: int, leaves: int) -> None:
        self._n += 1
        heapq.heappush(self._due, (due, self._n, kind, order_id, qty, price, leaves))

    def poll(self, now_ns: int) -> list[tuple[str, int, int, int, int]]:
        """Responses due by `now_ns`, in the venue's order."""
        due = self._due
        out = []
        while due and due[0][0] <= now_ns:
            _, _, kind, order_id, qty, price, leaves = heapq.heappop(due)
            if kind == FILL:
                if order_id not in self.open:
                    continue  # cancelled meanwhile
                if leaves:
                    self.open[order_id] = leaves
                else:
                    del self.open[order_id]
            out.append((kind, order_id, qty, price, leaves))
        self.responses += len(out)
        return out

    def disconnect(self, now_ns: int) -> list[tuple[str, int, int, int, int]]:
        """Drop the session: responses due by now, then every order still live cancelled —
        the open ones, and those whose reject was not due yet (they are not open, yet the
        gateway is owed an answer for them)."""
        out = self.poll(now_ns)
        self.connected = False
        unanswered = [(CANCELLED, order_id, 0, 0, leaves)
                      for _, _, kind, order_id, _, _, leaves in sorted(self._due) if kind == REJECT]
        self._due.clear()
        for order_id, leaves in self.open.items():
            out.append((CANCELLED, order_id, 0, 0, leaves))
        self.open.clear()
        return out + unanswered

    def connect(self) -> None:
        self.connected = True

    @property
    def pending(self) -> int:
        """Responses not yet due."""
        return len(self._due)

    @property
    def next_due_ns(self) -> int | None:
        """When the next response is due (CLOCK_MONOTONIC ns), or None: none pending."""
        return self._due[0][0] if self._due else None
