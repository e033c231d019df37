"""The Algo engine: a replicated state machine that slices parent orders into child
orders, one slice per parent on every `Tick` of the desk's clock, sent to the SOR through
the sequencer (`ctx.send`: every replica sends, the sequencer keeps one copy).

Its injectable malfunction (`InjectMalfunction`, sequenced, so every replica breaks at the
same point) makes it flood: on every tick it also sends `flood_per_tick` children,
ignoring what its parents have left. A sequenced `StopAlgo` stops it from sending.
Deterministic: time and inputs come only from the log; state is kept in insertion-ordered
dicts keyed by log-assigned ids, and `snapshot()` writes it sorted by id.
"""

from __future__ import annotations

import struct

from lockstep.cluster.replica import Context, StateMachine

from .messages import (SCHEMA, Cancelled, ChildOrder, ChildReject, Decline, Fill, InjectMalfunction, ParentOrder,
                       Reject, StopAlgo, Tick)

__all__ = ["AlgoEngine"]

_TOTALS = struct.Struct("<16q")
_PARENT = struct.Struct("<QBqqqqq")   # id, side, qty, price, slice, working, filled
_CHILD = struct.Struct("<QQq")        # id, parent id, leaves

_SCHEMA_ID = SCHEMA.schema_id
_TICK, _PARENT_ORDER, _MALFUNCTION, _STOP = (Tick.template_id, ParentOrder.template_id,
                                             InjectMalfunction.template_id, StopAlgo.template_id)
_FILL, _ENDS = Fill.template_id, {t.template_id: t for t in (Reject, Decline, Cancelled, ChildReject)}


class AlgoEngine(StateMachine):
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """The empty state (also what `restore` starts from)."""
        self.parents: dict[int, list[int]] = {}   # parent id -> [side, qty, price, slice, working, filled]
        self.children: dict[int, list[int]] = {}  # open child id -> [parent id, leaves]
        self.next_child_id = 1
        self.flood_per_tick = 0
        self.stopped = 0
        self.ticks = 0
        self.children_sent = 0
        self.flood_sent = 0
        self.filled_qty = 0
        self.fills = 0
        self.ended = 0             # children ended without a complete fill (reject, decline, cancel)
        self.declines = 0
        self.last_timestamp_ns = 0
        self.stopped_at_sequence = 0

    def on_message(self, ctx: Context, command: bytes) -> None:
        if len(command) < 8 or command[4] | command[5] << 8 != _SCHEMA_ID:
            return
        self.last_timestamp_ns = ctx.timestamp_ns
        template = command[2] | command[3] << 8
        if template == _TICK:
            self.ticks += 1
            if not self.stopped:
                self._slice(ctx)
        elif template == _FILL:
            m = Fill.decode(command)
            child = self.children.get(m.order_id)
            if child is None:
                return
            parent = self.parents[child[0]]
            qty = m.qty
            parent[4] -= qty
            parent[5] += qty
            self.filled_qty += qty
            self.fills += 1
            child[1] = m.leaves
            if not m.leaves:
                del self.children[m.order_id]
        elif template in _ENDS:
            m = _ENDS[template].decode(command)
            child = self.children.pop(m.order_id if template != ChildReject.template_id else m.child_id, None)
            if child is None:
                return
            self.parents[child[0]][4] -= child[1]
            self.ended += 1
            if template == Decline.template_id:
                self.declines += 1
        elif template == _PARENT_ORDER:
            m = ParentOrder.decode(command)
            if m.parent_id not in self.parents and m.qty > 0 and m.slice_qty > 0:
                self.parents[m.parent_id] = [m.side, m.qty, m.price, m.slice_qty, 0, 0]
        elif template == _MALFUNCTION:
            self.flood_per_tick = InjectMalfunction.decode(command).flood_per_tick
        elif template == _STOP:
            if not self.stopped:
                self.stopped = 1
                self.stopped_at_sequence = ctx.sequence

    def _child(self, ctx: Context, parent_id: int, parent: list[int], qty: int) -> None:
        child_id = self.next_child_id
        self.next_child_id += 1
        self.children[child_id] = [parent_id, qty]
        parent[4] += qty
        ctx.send(ChildOrder.encode(child_id=child_id, parent_id=parent_id, side=parent[0], qty=qty, price=parent[2]))
        self.children_sent += 1

    def _slice(self, ctx: Context) -> None:
        for parent_id in sorted(self.parents):  # id order: the same after a restore
            parent = self.parents[parent_id]
            left = parent[1] - parent[4] - parent[5]
            if left > 0:
                self._child(ctx, parent_id, parent, min(parent[3], left))
        if self.flood_per_tick and self.parents:
            # The malfunction: children for the first parent, whatever it has left.
            parent_id = min(self.parents)
            parent = self.parents[parent_id]
            for _ in range(self.flood_per_tick):
                self._child(ctx, parent_id, parent, parent[3])
            self.flood_sent += self.flood_per_tick

    # -- state --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        parts = [_TOTALS.pack(self.next_child_id, self.flood_per_tick, self.stopped, self.ticks, self.children_sent,
                              self.flood_sent, self.filled_qty, self.fills, self.ended, self.declines,
                              self.last_timestamp_ns, self.stopped_at_sequence, len(self.parents),
                              len(self.children), 0, 0)]
        parts += [_PARENT.pack(pid, *self.parents[pid]) for pid in sorted(self.parents)]
        parts += [_CHILD.pack(cid, *self.children[cid]) for cid in sorted(self.children)]
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        self._reset()
        (self.next_child_id, self.flood_per_tick, self.stopped, self.ticks, self.children_sent, self.flood_sent,
         self.filled_qty, self.fills, self.ended, self.declines, self.last_timestamp_ns, self.stopped_at_sequence,
         n_parents, n_children, _, _) = _TOTALS.unpack_from(data)
        offset = _TOTALS.size
        for _ in range(n_parents):
            pid, *rest = _PARENT.unpack_from(data, offset)
            self.parents[pid] = list(rest)
            offset += _PARENT.size
        for _ in range(n_children):
            cid, *rest = _CHILD.unpack_from(data, offset)
            self.children[cid] = list(rest)
            offset += _CHILD.size

    def summary(self) -> dict:
        return {"children_sent": self.children_sent, "flood_sent": self.flood_sent, "stopped": bool(self.stopped),
                "open_children": len(self.children), "filled_qty": self.filled_qty, "declines": self.declines,
                "ticks": self.ticks}
