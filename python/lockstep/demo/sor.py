"""The smart order router (SOR): a replicated state machine that routes each child order
to one venue by a deterministic rule — the venue that is up with the fewest open orders,
ties to the lowest venue index — as a `VenueOrder` addressed to that venue's gateway. It
tracks open orders through acks, fills, rejects, cancels and declines, and venue status
(gateways report it through the sequencer): with no venue up, a child is rejected back to
the Algo (`ChildReject`) instead of being routed.
"""

from __future__ import annotations

from typing import Any

import struct

from lockstep.cluster.replica import Context, StateMachine

from .messages import (SCHEMA, VENUES, Ack, Cancelled, ChildOrder, ChildReject, Decline, Fill, Reject,
                       VenueOrder, VenueStatus)

__all__ = ["SmartOrderRouter"]

_SCHEMA_ID = SCHEMA.schema_id
_CHILD, _ACK, _FILL, _STATUS = ChildOrder.template_id, Ack.template_id, Fill.template_id, VenueStatus.template_id
_ENDS = {Reject.template_id: (Reject, 6), Decline.template_id: (Decline, 7), Cancelled.template_id: (Cancelled, 8)}
# per venue: up, open orders, routed, acks, fills, filled qty, rejects, declines, cancels
_VENUE = struct.Struct("<9q")
_TOTALS = struct.Struct("<8q")
_ORDER = struct.Struct("<Qqq")  # order id, venue, leaves


class SmartOrderRouter(StateMachine):
    def __init__(self, venues: int = len(VENUES)) -> None:
        self.venues = [[1, 0, 0, 0, 0, 0, 0, 0, 0] for _ in range(venues)]
        self.open: dict[int, list[int]] = {}  # order id (= child id) -> [venue, leaves]
        self.children = 0
        self.child_rejects = 0
        self.status_changes = 0
        self.last_timestamp_ns = 0

    def on_message(self, ctx: Context, command: bytes) -> None:
        if len(command) < 8 or command[4] | command[5] << 8 != _SCHEMA_ID:
            return
        template = command[2] | command[3] << 8
        if template == _CHILD:
            self.last_timestamp_ns = ctx.timestamp_ns
            self._route(ctx, ChildOrder.decode(command))
        elif template == _FILL:
            m = Fill.decode(command)
            order = self.open.get(m.order_id)
            if order is None:
                return
            venue = self.venues[order[0]]
            venue[4] += 1
            venue[5] += m.qty
            order[1] = m.leaves
            if not m.leaves:
                del self.open[m.order_id]
                venue[1] -= 1
        elif template == _ACK:
            m = Ack.decode(command)
            if m.order_id in self.open:
                self.venues[m.venue][3] += 1
        elif template in _ENDS:
            mtype, column = _ENDS[template]
            m = mtype.decode(command)
            order = self.open.pop(m.order_id, None)
            if order is None:
                return
            venue = self.venues[order[0]]
            venue[1] -= 1
            venue[column] += 1
        elif template == _STATUS:
            m = VenueStatus.decode(command)
            if m.venue < len(self.venues) and self.venues[m.venue][0] != m.up:
                self.venues[m.venue][0] = m.up
                self.status_changes += 1

    def _route(self, ctx: Context, child: Any) -> None:
        self.children += 1
        best = -1
        for i, venue in enumerate(self.venues):
            if venue[0] and (best < 0 or venue[1] < self.venues[best][1]):
                best = i
        if best < 0:
            self.child_rejects += 1
            ctx.send(ChildReject.encode(child_id=child.child_id, qty=child.qty))
            return
        venue = self.venues[best]
        venue[1] += 1
        venue[2] += 1
        self.open[child.child_id] = [best, child.qty]
        ctx.send(VenueOrder.encode(order_id=child.child_id, venue=best, side=child.side, qty=child.qty,
                                   price=child.price))

    # -- state --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        parts = [_TOTALS.pack(len(self.venues), self.children, self.child_rejects, self.status_changes,
                              self.last_timestamp_ns, len(self.open), 0, 0)]
        parts += [_VENUE.pack(*v) for v in self.venues]
        parts += [_ORDER.pack(oid, *self.open[oid]) for oid in sorted(self.open)]
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        (n_venues, self.children, self.child_rejects, self.status_changes, self.last_timestamp_ns, n_open, _,
         _) = _TOTALS.unpack_from(data)
        offset = _TOTALS.size
        self.venues = []
        for _ in range(n_venues):
            self.venues.append(list(_VENUE.unpack_from(data, offset)))
            offset += _VENUE.size
        self.open = {}
        for _ in range(n_open):
            oid, *rest = _ORDER.unpack_from(data, offset)
            self.open[oid] = list(rest)
            offset += _ORDER.size

    def summary(self) -> dict:
        names = ("up", "open", "routed", "acks", "fills", "filled_qty", "rejects", "declines", "cancels")
        return {"children": self.children, "child_rejects": self.child_rejects, "open_orders": len(self.open),
                "venues": {VENUES[i] if i < len(VENUES) else str(i): dict(zip(names, v))
                           for i, v in enumerate(self.venues)}}
