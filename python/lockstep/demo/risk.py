"""The risk monitor: watches the Algo's order rate in the sequenced log and, over a limit,
pulls the kill switch: the halt on every gateway's priority side channel (it takes effect
at once, ahead of any backlog in the log), then `StopAlgo` through the sequencer (so every
Algo replica stops sending at the same point of the total order).

It reads the log in batches (numpy over the term buffer, no Python call per message), so
it keeps up with a flood that the gateways cannot. The rate is child orders per second of
the sequencer's clock over a sliding window. With `auto_halt=False` it only watches; once
it sees every venue reported down (gateways halted by someone else, e.g. `lockstep halt`)
it sends `StopAlgo` itself.
"""

from __future__ import annotations

from typing import Any

import time
from collections import deque

import numpy as np

from lockstep.cluster.gateway import halt
from lockstep.cluster.priority_stream import PrioritySender, read_deployment
from lockstep.cluster.sequencer import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH, SequencerClient
from lockstep.transport.idle import BACK_PRESSURE_RETRY_NS
from lockstep.transport.subscription import Subscription

from .messages import SCHEMA, VENUES, ChildOrder, StopAlgo, VenueStatus

__all__ = ["RiskMonitor", "RISK_ORIGIN"]

RISK_ORIGIN = 3000
_BUCKET_NS = 10_000_000
_H = SEQUENCED_HEADER_LENGTH


class RiskMonitor:
    def __init__(self, dir: Any, *, limit_per_s: float = 3000.0, window_ms: int = 1000, auto_halt: bool = True,
                 stream_id: int = DEFAULT_LOG_STREAM) -> None:
        self.dir = dir
        self.limit_per_s = limit_per_s
        self.window_buckets = max(1, window_ms * 1_000_000 // _BUCKET_NS)
        self.auto_halt = auto_halt
        self.sub = Subscription(stream_id, dir, start="earliest", join="earliest")
        self.client = SequencerClient(dir, origin_id=RISK_ORIGIN)
        self._buckets: deque[list[int]] = deque()  # [bucket, count], oldest first
        self._in_window = 0
        self.orders_seen = 0
        self.max_rate = 0.0
        self.halt: dict | None = None
        self.rate_at_halt = 0.0
        self.stop_algo_sent = False
        self._stop_algo_pending: bytes | None = None
        self.venues_up = [1] * len(VENUES)
        self.position = 0
        # Gateways on other hosts: their priority streams, connected now so the halt need not wait.
        deployment = read_deployment(dir)
        self._sender = PrioritySender(deployment) if deployment is not None and deployment.hosts else None

    def _on_batch(self, batch: Any) -> None:
        buf, offs = batch.buffer, batch.offsets.astype(np.int64) + _H
        self.position = int(batch.positions[-1])
        template = buf[offs + 2].astype(np.int32) | (buf[offs + 3].astype(np.int32) << 8)
        schema = buf[offs + 4].astype(np.int32) | (buf[offs + 5].astype(np.int32) << 8)
        ours = schema == SCHEMA.schema_id
        orders = ours & (template == ChildOrder.template_id)
        n = int(orders.sum())
        if n:
            ts_offs = (offs[orders] - _H + 8)[:, None] + np.arange(8)
            stamps = buf[ts_offs].copy().view("<i8").ravel()
            for bucket, count in zip(*np.unique(stamps // _BUCKET_NS, return_counts=True)):
                self._add(int(bucket), int(count))
            self.orders_seen += n
        status = np.flatnonzero(ours & (template == VenueStatus.template_id))
        for i in status:
            m = VenueStatus.decode(batch[int(i)][_H:])
            if m.venue < len(self.venues_up):
                self.venues_up[m.venue] = m.up

    def _add(self, bucket: int, count: int) -> None:
        b = self._buckets
        if b and b[-1][0] == bucket:
            b[-1][1] += count
        elif not b or bucket > b[-1][0]:
            b.append([bucket, count])
        else:  # stamps are ordered by the sequencer; never older than the newest bucket
            b[-1][1] += count
        self._in_window += count
        while b and b[0][0] <= b[-1][0] - self.window_buckets:
            self._in_window -= b.popleft()[1]

    @property
    def rate(self) -> float:
        """Child orders per second over the window (the sequencer's clock)."""
        return self._in_window / (self.window_buckets * _BUCKET_NS / 1e9)

    def do_work(self) -> int:
        work = self.sub.poll_batch(self._on_batch, 4096)
        if work:
            rate = self.rate
            self.max_rate = max(self.max_rate, rate)
            if self.auto_halt and self.halt is None and rate > self.limit_per_s:
                self.pull_kill_switch(rate)
            elif not self.auto_halt and not self.stop_algo_sent and not any(self.venues_up):
                self._stop_algo_pending = StopAlgo.encode(sent_ns=time.monotonic_ns(),
                                                          reason=b"risk: every gateway halted")
                self.stop_algo_sent = True
        if self._stop_algo_pending is not None and self.client.send(self._stop_algo_pending):
            self._stop_algo_pending = None
            work += 1
        return work

    @property
    def stop_pending(self) -> bool:
        """A StopAlgo is waiting for room in the ingress."""
        return self._stop_algo_pending is not None

    def doorbells(self, rings: list, images: list) -> None:
        """What an idle risk monitor sleeps on: the sequenced log."""
        self.sub.doorbells(rings, images)

    def next_timer_ns(self) -> int | None:
        """A StopAlgo waiting for room in the ingress: look again soon."""
        return time.monotonic_ns() + BACK_PRESSURE_RETRY_NS if self._stop_algo_pending is not None else None

    def pull_kill_switch(self, rate: float) -> None:
        # The position the sequencer has reached now: where a sequenced halt would queue.
        images = self.sub.images
        position = images[0].log.tail_position if images else -1
        self.halt = halt(self.dir, all=True, reason="risk: order rate", log_position=position, sender=self._sender)
        self.rate_at_halt = rate
        self._stop_algo_pending = StopAlgo.encode(sent_ns=self.halt["sent_ns"], reason=b"risk: order rate")
        self.stop_algo_sent = True

    def report(self) -> dict:
        return {"orders_seen": self.orders_seen, "max_rate_per_s": self.max_rate, "limit_per_s": self.limit_per_s,
                "halt": self.halt, "rate_at_halt_per_s": self.rate_at_halt, "stop_algo_sent": self.stop_algo_sent,
                "position": self.position}

    def close(self) -> None:
        self.sub.close()
        self.client.close()
        if self._sender is not None:
            self._sender.close()
