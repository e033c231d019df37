"""The demo's messages (one SBE schema): what flows through the sequencer.

Parent orders and the clock come from the desk (the demo's driver); the Algo engine turns
them into child orders; the smart order router (SOR) turns each child into a venue order
addressed to one execution gateway; gateways answer with acks, fills, rejects, cancels
and — while halted — declines. `InjectMalfunction` and `StopAlgo` are sequenced admin
messages: every Algo replica sees them at the same point of the log.
"""

from __future__ import annotations

from lockstep import codec

__all__ = ["SCHEMA", "BUY", "SELL", "VENUES", "Tick", "ParentOrder", "InjectMalfunction", "StopAlgo",
           "ChildOrder", "ChildReject", "VenueOrder", "Ack", "Fill", "Reject", "Decline", "Cancelled",
           "VenueStatus", "ORDER_TEMPLATE_IDS"]

BUY, SELL = 1, 2
VENUES = ("alpha", "beta", "gamma")  # gateway names; venue index = position here

SCHEMA = codec.Schema(7402, name="lockstep.demo")

# desk -> Algo
Tick = SCHEMA.message("Tick", 1, [("tick", "u8")])
ParentOrder = SCHEMA.message("ParentOrder", 2, [
    ("parent_id", "u8"), ("side", "u1"), ("qty", "i8"), ("price", "i8"), ("slice_qty", "i8")])
# admin (sequenced)
InjectMalfunction = SCHEMA.message("InjectMalfunction", 3, [("flood_per_tick", "i4")])
StopAlgo = SCHEMA.message("StopAlgo", 4, [("sent_ns", "i8"), ("reason", "S32")])
# Algo -> SOR
ChildOrder = SCHEMA.message("ChildOrder", 5, [
    ("child_id", "u8"), ("parent_id", "u8"), ("side", "u1"), ("qty", "i8"), ("price", "i8")])
# SOR -> Algo: no venue would take it
ChildReject = SCHEMA.message("ChildReject", 6, [("child_id", "u8"), ("qty", "i8")])
# SOR -> gateway (an execution request)
VenueOrder = SCHEMA.message("VenueOrder", 7, [
    ("order_id", "u8"), ("venue", "u1"), ("side", "u1"), ("qty", "i8"), ("price", "i8")])
# gateway -> everyone (responses of the venue, or the gateway's own)
Ack = SCHEMA.message("Ack", 8, [("order_id", "u8"), ("venue", "u1")])
Fill = SCHEMA.message("Fill", 9, [("order_id", "u8"), ("venue", "u1"), ("qty", "i8"), ("price", "i8"),
                                  ("leaves", "i8")])
Reject = SCHEMA.message("Reject", 10, [("order_id", "u8"), ("venue", "u1"), ("leaves", "i8")])
Decline = SCHEMA.message("Decline", 11, [("order_id", "u8"), ("venue", "u1"), ("leaves", "i8")])
Cancelled = SCHEMA.message("Cancelled", 12, [("order_id", "u8"), ("venue", "u1"), ("leaves", "i8")])
VenueStatus = SCHEMA.message("VenueStatus", 13, [("venue", "u1"), ("up", "u1")])

ORDER_TEMPLATE_IDS = (ChildOrder.template_id, VenueOrder.template_id)
