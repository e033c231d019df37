"""An order book as a replicated state machine: the example to read first.

Clients send `NewOrder` and `Cancel` commands to the sequencer (`new_order(...)` and
`cancel(...)` encode them); every replica of `OrderBook` applies the sequenced log and
matches orders by price-time priority. Each match is sent back through the sequencer as a
`Fill` (`ctx.send`): all replicas send it, the sequencer keeps one copy, and when it comes
back in the log every replica counts it.

What keeps it deterministic (and so every replica equal):

* time comes only from `ctx.timestamp_ns` (the sequencer's stamp), never the wall clock;
* prices are kept in sorted lists and orders at a price in arrival (FIFO) lists, so
  matching and `snapshot()` walk them in an order fixed by the log alone; the dicts are
  only looked up, never iterated into state or output;
* `snapshot()` writes the whole state in that fixed order, so equal states give equal bytes
  (and `state_hash()`, a hash of those bytes, proves replicas equal).

    from lockstep import SequencerClient
    from lockstep.examples.orderbook import BUY, new_order

    SequencerClient().send(new_order(order_id=1, side=BUY, price=101, qty=5))
"""

from __future__ import annotations

import bisect
import struct
from collections import deque

from lockstep import codec
from lockstep.cluster.replica import Context, StateMachine

__all__ = ["OrderBook", "SCHEMA", "NewOrder", "Cancel", "Fill", "BUY", "SELL", "new_order", "cancel"]

BUY, SELL = 1, 2

SCHEMA = codec.Schema(7301, name="lockstep.examples.orderbook")
NewOrder = SCHEMA.message("NewOrder", 1, [("order_id", "u8"), ("price", "i8"), ("qty", "i8"), ("side", "u1")])
Cancel = SCHEMA.message("Cancel", 2, [("order_id", "u8")])
Fill = SCHEMA.message("Fill", 3, [
    ("match_id", "u8"), ("taker_id", "u8"), ("maker_id", "u8"), ("price", "i8"), ("qty", "i8"),
    ("timestamp_ns", "i8"),
])


def new_order(order_id: int, side: int, price: int, qty: int) -> bytes:
    """A NewOrder command, ready for `SequencerClient.send`."""
    return NewOrder.encode(order_id=order_id, price=price, qty=qty, side=side)


def cancel(order_id: int) -> bytes:
    """A Cancel command, ready for `SequencerClient.send`."""
    return Cancel.encode(order_id=order_id)


_TOTALS = struct.Struct("<9q")    # see snapshot()
_ORDER = struct.Struct("<QBqq")   # order id, side, price, remaining qty


class OrderBook(StateMachine):
    """A single-instrument limit order book with price-time priority."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """The empty state (also what `restore` starts from)."""
        self.orders: dict[int, list[int]] = {}           # order id -> [side, price, qty left]
        self.levels: tuple[dict[int, deque[int]], ...] = ({}, {}, {})  # [side][price] -> ids, oldest first
        self.prices: tuple[list[int], ...] = ([], [], [])  # [side]: prices with resting orders, ascending
        self.commands = 0          # NewOrder and Cancel commands applied
        self.ignored = 0           # commands that changed nothing (unknown order, bad values, unknown type)
        self.next_match_id = 1
        self.fills_sent = 0        # Fill outputs sent (ctx.send)
        self.fills_sequenced = 0   # Fill messages seen back in the log
        self.volume = 0
        self.last_timestamp_ns = 0

    # -- commands -----------------------------------------------------------------------

    def on_message(self, ctx: Context, command: bytes) -> None:
        self.last_timestamp_ns = ctx.timestamp_ns
        try:
            msg = SCHEMA.decode(command)
        except codec.CodecError:
            self.ignored += 1
            return
        if msg.type is NewOrder:
            self.commands += 1
            order_id, price, qty, side = msg.record.item()
            self.add(ctx, order_id, side, price, qty)
        elif msg.type is Cancel:
            self.commands += 1
            self.cancel(int(msg.order_id))
        elif msg.type is Fill:
            self.fills_sequenced += 1
        else:
            self.ignored += 1

    def add(self, ctx: Context, order_id: int, side: int, price: int, qty: int) -> None:
        if side not in (BUY, SELL) or qty <= 0 or order_id in self.orders:
            self.ignored += 1
            return
        other = SELL if side == BUY else BUY
        other_prices = self.prices[other]
        while qty > 0 and other_prices:
            best = other_prices[0] if side == BUY else other_prices[-1]
            if (side == BUY and best > price) or (side == SELL and best < price):
                break
            queue = self.levels[other][best]
            maker_id = queue[0]
            maker = self.orders[maker_id]
            traded = min(qty, maker[2])
            qty -= traded
            maker[2] -= traded
            self.volume += traded
            ctx.send(Fill.encode(match_id=self.next_match_id, taker_id=order_id, maker_id=maker_id,
                                 price=best, qty=traded, timestamp_ns=ctx.timestamp_ns))
            self.next_match_id += 1
            self.fills_sent += 1
            if maker[2] == 0:
                self._remove(maker_id)
        if qty > 0:  # the rest rests in the book, behind orders already at its price
            self.orders[order_id] = [side, price, qty]
            level = self.levels[side].get(price)
            if level is None:
                level = self.levels[side][price] = deque()
                bisect.insort(self.prices[side], price)
            level.append(order_id)

    def cancel(self, order_id: int) -> None:
        if order_id not in self.orders:
            self.ignored += 1
            return
        self._remove(order_id)

    def _remove(self, order_id: int) -> None:
        side, price, _ = self.orders.pop(order_id)
        level = self.levels[side][price]
        if level[0] == order_id:
            level.popleft()
        else:
            level.remove(order_id)
        if not level:
            del self.levels[side][price]
            prices = self.prices[side]
            del prices[bisect.bisect_left(prices, price)]

    # -- queries ------------------------------------------------------------------------

    def best_bid(self) -> int | None:
        return self.prices[BUY][-1] if self.prices[BUY] else None

    def best_ask(self) -> int | None:
        return self.prices[SELL][0] if self.prices[SELL] else None

    # -- state --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Totals, then every resting order: bids then asks, prices ascending, each price's
        orders oldest first (the order `restore` needs to rebuild the same queues)."""
        parts = [_TOTALS.pack(self.commands, self.ignored, self.next_match_id, self.fills_sent,
                              self.fills_sequenced, self.volume, self.last_timestamp_ns, len(self.orders), 0)]
        for side in (BUY, SELL):
            for price in self.prices[side]:
                for order_id in self.levels[side][price]:
                    parts.append(_ORDER.pack(order_id, side, price, self.orders[order_id][2]))
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        self._reset()
        (self.commands, self.ignored, self.next_match_id, self.fills_sent, self.fills_sequenced, self.volume,
         self.last_timestamp_ns, count, _) = _TOTALS.unpack_from(data)
        if (len(data) - _TOTALS.size) % _ORDER.size:
            raise ValueError(f"order book snapshot: {len(data) - _TOTALS.size} bytes of orders, not a multiple of "
                             f"{_ORDER.size}")
        last_side = BUY
        for order_id, side, price, qty in _ORDER.iter_unpack(memoryview(data)[_TOTALS.size:]):
            # As snapshot() writes them: bids then asks, prices ascending, each price's
            # orders together; anything else would leave the book inconsistent.
            if side not in (BUY, SELL) or side < last_side or qty <= 0 or order_id in self.orders:
                raise ValueError(f"order book snapshot: order {order_id}: side {side}, qty {qty}: not a valid "
                                 f"resting order in snapshot order")
            last_side = side
            self.orders[order_id] = [side, price, qty]
            level = self.levels[side].get(price)
            if level is None:
                prices = self.prices[side]
                if prices and price <= prices[-1]:
                    raise ValueError(f"order book snapshot: order {order_id}: price {price} after {prices[-1]}: "
                                     f"expected ascending prices")
                level = self.levels[side][price] = deque()
                prices.append(price)  # written ascending: stays sorted
            elif price != self.prices[side][-1]:
                raise ValueError(f"order book snapshot: order {order_id}: price {price} again after "
                                 f"{self.prices[side][-1]}")
            level.append(order_id)
        if len(self.orders) != count:
            raise ValueError(f"order book snapshot: expected {count} orders, found {len(self.orders)}")
