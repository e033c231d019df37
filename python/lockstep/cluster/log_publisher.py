"""`LogPublisher`: the sequenced log of a directory leaves the host as an Aeron publication,
position for position (the publication starts where the local log is, with its term length,
initial term id and mtu), so a replica on another host keeps the same positions, snapshots
and hashes as one here, and the archive's recording of the local log can fill its gaps.

It reads the local log privately and is an *untethered* subscriber of it (as Aeron's
`tether=false`): its position counter, which makes the log connected for the sequencer even
with no local reader, follows the log's tail, so a slow or cut-off network never holds the
sequencer back. Lapped by the sequencer, it starts a new publication at the log's tail;
remote readers see their image end and catch up the gap from the archive (`LogFollower`)."""

from __future__ import annotations

import os
import time
from typing import Any

from .._closing import Closing
from ..aeron.channel import position_params, with_params
from ..errors import ImageLostError, LockstepError
from ..transport.client import STREAM_KEY, TYPE_SUBSCRIBER_POSITION, client_for
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import resolve_dir
from ..transport.publication import ADMIN_ACTION, BACK_PRESSURED, CLOSED, NOT_CONNECTED, status_name
from ..transport.reader import LogReader
from ..transport.stream_files import stream_logs

__all__ = ["LogPublisher", "TYPE_LOG_PUBLISHER"]

TYPE_LOG_PUBLISHER = 1030  # counters: position, connected (0/1), behind (bytes), restarts, waiting (offer status)
STALL_NS = 2_000_000_000  # taking nothing for this long with messages waiting: not connected (a cut link)
_RETRY = (BACK_PRESSURED, NOT_CONNECTED, ADMIN_ACTION)
_COUNTERS_EVERY_NS = 50_000_000


class LogPublisher(Closing):
    """Publishes the sequenced log (stream `stream_id` of `dir`) on `channel` through `aeron`
    (a `lockstep.aeron.Aeron`), e.g. `aeron:udp?endpoint=host2:40100` (unicast) or a
    multi-destination-cast channel. Drive it with `do_work()` (the sequencer does, with
    `Sequencer(log_channel=...)`). `position` is how far the remote stream has taken the log."""

    def __init__(self, dir: str | os.PathLike[str] | None, channel: str, *, aeron: Any, stream_id: int = 100) -> None:
        self.dir = resolve_dir(dir)
        self.channel = channel
        self.stream_id = stream_id
        self._aeron = aeron
        logs = stream_logs(self.dir, stream_id)
        if not logs:
            raise LockstepError(f"{self.dir}: no sequenced log (stream {stream_id}) to publish: start the sequencer first")
        self._log = LogBuffer.open(logs[-1])
        self._reader: LogReader | None = None
        self._pub: Any = None
        self._pending: bytes | None = None  # read, not yet taken by the publication
        self._pending_position = 0
        self.restarts = 0      # publications started after being lapped
        self.last_status = 0   # the last offer status that made it wait (0: none)
        client = client_for(self.dir)
        counters = client.counters
        self._counters = {k: counters.allocate(TYPE_LOG_PUBLISHER, f"log publisher {channel}: {k}")
                          for k in ("position", "connected", "behind", "restarts", "waiting")}
        registration_id = client.next_registration_id()
        self._untethered = counters.allocate(
            TYPE_SUBSCRIBER_POSITION, f"sub-pos: {registration_id} {stream_id} {self._log.session_id} "
                                      f"@{self._log.tail_position} (log publisher, untethered)",
            key=STREAM_KEY.pack(registration_id, self._log.session_id, stream_id),
            registration_id=registration_id, reference_id=client.heartbeat.id)
        self._untethered.set(self._log.tail_position)
        self._next_counters_ns = 0
        self._progress_ns = time.monotonic_ns()  # when the publication last took a message (or had none)
        self._start(self._log.tail_position)

    def _start(self, position: int) -> None:
        """A new publication whose first message lands at `position` of the local log."""
        if self._pub is not None:
            self._pub.close()
            self._pub = None
        if self._reader is not None:
            self._reader.close()
        self._reader = LogReader(LogBuffer.open(self._log.path), position)
        self._pending = None
        log = self._log
        params = position_params(position, term_length=log.term_length, initial_term_id=log.initial_term_id,
                                 mtu=log.mtu_length)
        # (The driver picks the session id: a lingering predecessor's would clash with ours.)
        self._pub = self._aeron.add_exclusive_publication(with_params(self.channel, (), **params), self.stream_id)
        if self._pub.position != position:
            raise LockstepError(f"{self.channel}: the publication starts at position {self._pub.position}, "
                                f"expected {position} (the local log's)")

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client): a new publication, from the log's tail."""
        self._aeron = aeron
        self.restarts += 1
        self._start(self._log.tail_position)

    @property
    def position(self) -> int:
        """The local log position up to which the remote stream has taken the log."""
        return self._pub.position

    @property
    def is_connected(self) -> bool:
        """The driver's view, and the stream takes what there is: a link cut with the sender
        still sending (the driver may call that connected for long) counts as not connected
        after STALL_NS without progress."""
        if not self._pub.is_connected:
            return False
        return self._pending is None or time.monotonic_ns() - self._progress_ns < STALL_NS

    @property
    def behind(self) -> int:
        """Bytes of the local log the remote stream has not taken yet."""
        return max(0, self._log.tail_position - self._pub.position)

    def do_work(self, limit: int = 4096) -> int:
        """Offer up to `limit` messages of the local log; waits (keeps the message) while the
        publication is back-pressured or not connected."""
        reader = self._reader
        assert reader is not None
        sent = 0
        try:
            while sent < limit:
                if self._pending is None:
                    data = reader.receive()
                    if data is None:
                        self._progress_ns = time.monotonic_ns()  # caught up: nothing to wait for
                        break
                    self._pending, self._pending_position = data, reader.position
                result = self._pub.offer(self._pending)
                if result > 0:
                    if result != self._pending_position:
                        raise LockstepError(f"{self.channel}: message published at position {result}, expected "
                                            f"{self._pending_position} (the local log's): the logs differ in framing")
                    self._pending = None
                    self.last_status = 0
                    sent += 1
                    self._progress_ns = time.monotonic_ns()
                elif result in _RETRY or (result == CLOSED and self._aeron.is_closed):
                    self.last_status = result  # (CLOSED: the driver went; the sequencer reattaches us)
                    break
                else:
                    raise LockstepError(f"{self.channel}: offer failed: {status_name(result)}")
        except ImageLostError:  # lapped by the sequencer: the remote readers catch up from the archive
            self.restarts += 1
            self._start(self._log.tail_position)
            sent += 1
        self._untethered.set(self._log.tail_position)  # (never the one that holds the sequencer back)
        now = time.monotonic_ns()
        if now >= self._next_counters_ns:
            self._next_counters_ns = now + _COUNTERS_EVERY_NS
            c = self._counters
            c["position"].set(self._pub.position)
            c["connected"].set(1 if self.is_connected else 0)
            c["behind"].set(self.behind)
            c["restarts"].set(self.restarts)
            c["waiting"].set(self.last_status)
        return sent

    def __repr__(self) -> str:
        return (f"LogPublisher({self.channel!r}, position={self.position}, behind={self.behind}, "
                f"connected={self.is_connected}, waiting={self.last_status}, restarts={self.restarts})")

    def _teardown(self) -> None:  # (close())
        for counter in (*self._counters.values(), self._untethered):
            counter.free_quietly()
        if self._pub is not None:
            self._pub.close()
        if self._reader is not None:
            self._reader.close()
        self._log.close()
