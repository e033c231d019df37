"""The demo's execution gateway: venue orders addressed to it, out to its simulated venue;
the venue's acks, fills, rejects and cancels back through the sequencer; declines while
halted. The side channel and the loop are `lockstep.cluster.gateway.Gateway`'s."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from lockstep.cluster.gateway import Gateway, HaltRecord
from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM

from .messages import SCHEMA, VENUES, Ack, Cancelled, Decline, Fill, Reject, VenueOrder, VenueStatus
from .venue import ACK, CANCELLED, FILL, REJECT, VenueSimulator

__all__ = ["ExecutionGateway", "GATEWAY_ORIGIN_BASE"]

GATEWAY_ORIGIN_BASE = 2000  # gateway i sends with origin id GATEWAY_ORIGIN_BASE + i
_VENUE_ORDER = (VenueOrder.template_id, SCHEMA.schema_id)


class ExecutionGateway(Gateway):
    """Gateway `VENUES[venue]` in front of a `VenueSimulator`."""

    def __init__(self, venue: int, dir: Any = None, *, seed: int = 1, stream_id: int = DEFAULT_LOG_STREAM,
                 venue_options: dict | None = None, **link: Any) -> None:
        """`link`: Gateway's keywords for a gateway on another host (channel, ingress_channel, ...)."""
        super().__init__(VENUES[venue], dir, stream_id=stream_id, origin_id=GATEWAY_ORIGIN_BASE + venue, **link)
        self.venue_index = venue
        self.venue = VenueSimulator(venue, seed, **(venue_options or {}))
        self._waiting: deque[tuple[int, int, int, int]] = deque()  # received, waiting for the throttle
        self.declined_ids: list[int] = []
        self.sent_ids: list[int] = []
        self.send(VenueStatus.encode(venue=venue, up=1))

    # -- requests -------------------------------------------------------------------------

    def on_command(self, command: memoryview, sequence: int, position: int) -> None:
        if len(command) < 8 or (command[2] | command[3] << 8, command[4] | command[5] << 8) != _VENUE_ORDER:
            return
        msg = VenueOrder.decode(command)
        if msg.venue != self.venue_index:
            return
        self.requests += 1
        order = (msg.order_id, msg.side, msg.qty, msg.price)
        if self.halted:
            self._decline(order)
        else:
            self._waiting.append(order)
            self._submit_waiting()

    def _decline(self, order: tuple[int, int, int, int]) -> None:
        self.declined_ids.append(order[0])
        self.decline(Decline.encode(order_id=order[0], venue=self.venue_index, leaves=order[2]))

    def _submit_waiting(self) -> int:
        sent = 0
        waiting, venue = self._waiting, self.venue
        while waiting:
            if self.check_priority():  # a halt in the side channel goes before any send
                return sent
            now = time.monotonic_ns()
            if not venue.accepts(now):
                break
            order_id, side, qty, price = waiting.popleft()
            venue.submit(order_id, side, qty, price, now)
            self.sent_ids.append(order_id)
            self.to_venue += 1
            sent += 1
        return sent

    def ready_for_log(self) -> bool:
        return not self._waiting

    def venue_timer_ns(self) -> int | None:
        """The venue's next response due, or the throttle's next token for orders waiting on it."""
        venue = self.venue
        at = venue.next_due_ns if venue.connected else None
        if self._waiting:
            token = time.monotonic_ns() + int(1e9 / venue.throttle_per_s)
            at = token if at is None else min(at, token)
        return at

    def poll_venue(self) -> int:
        work = self._submit_waiting() if self._waiting else 0
        if self.venue.connected and self.venue.pending:
            responses = self.venue.poll(time.monotonic_ns())
            self._respond(responses)
            work += len(responses)
        return work

    def _respond(self, responses: Any) -> None:
        v = self.venue_index
        for kind, order_id, qty, price, leaves in responses:
            if kind == FILL:
                self.send(Fill.encode(order_id=order_id, venue=v, qty=qty, price=price, leaves=leaves))
            elif kind == ACK:
                self.send(Ack.encode(order_id=order_id, venue=v))
            elif kind == REJECT:
                self.send(Reject.encode(order_id=order_id, venue=v, leaves=leaves))
            elif kind == CANCELLED:
                self.send(Cancelled.encode(order_id=order_id, venue=v, leaves=leaves))

    # -- halt and resume ----------------------------------------------------------------

    def on_halt(self, record: HaltRecord) -> None:
        self._on_disconnect = self.venue.disconnect(time.monotonic_ns())

    def after_halt(self, record: HaltRecord) -> None:
        self._respond(self._on_disconnect)  # what was due, then cancel on disconnect
        self._on_disconnect = []
        while self._waiting:  # received, not sent: declined like any request from now on
            self._decline(self._waiting.popleft())
        self.send(VenueStatus.encode(venue=self.venue_index, up=0))

    def on_resume(self) -> None:
        self.venue.connect()
        self.send(VenueStatus.encode(venue=self.venue_index, up=1))

    # -- results ------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Work not finished: waiting requests, venue responses not due, unsent responses."""
        return len(self._waiting) + (self.venue.pending if self.venue.connected else 0) + self.pending_responses

    def report(self) -> dict:
        halts = [h.to_dict() for h in self.halts]
        first = self.halts[0] if self.halts else None
        arrivals = self.venue.arrivals
        # Orders that reached the venue while the gateway was halted (acted .. resumed).
        after = sum(1 for t in arrivals for h in self.halts if h.acted_ns <= t and (not h.resumed_ns or t < h.resumed_ns))
        in_window = sum(1 for t in arrivals if first is not None and first.sent_ns <= t < first.acted_ns)
        return {"gateway": self.name, "venue": self.venue_index, "requests": self.requests,
                "to_venue": self.to_venue, "declined": self.declined, "halts": halts,
                "orders_after_halt": after, "orders_between_halt_sent_and_acted": in_window,
                "received_while_disconnected": self.venue.received_while_disconnected,
                "arrivals": arrivals.tobytes(), "declined_ids": self.declined_ids, "sent_ids": self.sent_ids,
                "position": self.position, "messages_read": self.messages_read}
