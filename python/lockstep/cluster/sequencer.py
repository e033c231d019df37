"""The sequencer: many senders, one total order. Commands arrive on a many-to-one ingress
ring (from `SequencerClient`s; from other hosts through its `IngressReceiver`); the C loop
stamps each with a gap-free sequence, a timestamp and its origin, drops ones already
sequenced, and appends them to the sequenced log (an exclusive publication), which its
`LogPublisher` may also send to other hosts."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from .._closing import Closing
from .._native import c_error, ffi, lib
from ..transport.client import client_for
from ..errors import LockstepError
from ..transport.idle import REMOTE_POLL_NS, IdleStrategy, run_agent
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import resolve_dir, take_pid_lock
from ..transport.publication import Publication
from ..transport.reader import LogReader
from ..transport.stream_files import stream_logs
from .ingress_stream import IngressReceiver
from .log_publisher import LogPublisher
from .sequenced import (DEFAULT_LOG_STREAM, SEQUENCED_HEADER, SEQUENCED_HEADER_LENGTH, SequencedMessage,
                        decode_sequenced)
from .sequencer_client import DEFAULT_INGRESS_CAPACITY, INGRESS_FILE, SequencerClient, _ingress

# (SequencerClient and the log format live in sequencer_client and sequenced; exported here too.)
__all__ = ["Sequencer", "SequencerClient", "SequencedMessage", "decode_sequenced", "DEFAULT_LOG_STREAM",
           "SEQUENCED_HEADER", "SEQUENCED_HEADER_LENGTH", "INGRESS_FILE", "DEFAULT_INGRESS_CAPACITY"]

LOCK_FILE = "sequencer.lock"
DEFAULT_TERM_LENGTH = 1 << 24
TYPE_SEQUENCER = 1010  # counters: last sequence, sequenced, duplicates, rejected, back-pressure
_HOUSEKEEPING_NS = 100_000_000
_UNBLOCK_AFTER_NS = 5_000_000_000



class Sequencer(Closing):
    """Runs the sequencer of a directory: one per directory (a lock file says so).

    On start it reopens its log if one exists, pads anything a dead predecessor left half
    written, and continues from the last sequence in it: no gap, no repeat. Drive it with
    `run()` (in a thread or its own process) or call `do_work()` from your own loop."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, stream_id: int = DEFAULT_LOG_STREAM,
                 term_length: int = DEFAULT_TERM_LENGTH, ingress_capacity: int = DEFAULT_INGRESS_CAPACITY,
                 log_channel: str | None = None, ingress_channel: str | None = None,
                 aeron_dir: str | os.PathLike[str] | None = None, aeron: Any = None) -> None:
        """Across hosts (through the Aeron media driver of `aeron_dir`, or the client `aeron`):
        `log_channel` publishes the sequenced log there too, position for position (`LogPublisher`);
        `ingress_channel` takes commands from other hosts' `SequencerClient(channel=...)`."""
        self.dir = resolve_dir(dir)
        self.stream_id = stream_id
        self._lock = take_pid_lock(self.dir / LOCK_FILE, "sequencer")
        try:
            self.ingress = _ingress(self.dir, ingress_capacity)
            self.ingress.recover()  # a predecessor killed mid-read leaves half-zeroed records
            session_id, next_sequence, origins = self._recover(term_length)
            self.log = Publication(stream_id, self.dir, exclusive=True, term_length=term_length, session_id=session_id)
            self._seq = ffi.new("ls_sequencer_t *")
            if lib.ls_sequencer_init(self._seq, self.ingress.handle, self.log.handle, next_sequence) < 0:
                raise c_error(self.log.path)
            for origin_id, origin_sequence in origins.items():
                lib.ls_sequencer_note_origin(self._seq, origin_id, origin_sequence)
        except BaseException:
            self._lock.close()
            raise
        counters = client_for(self.dir).counters
        self._counters = {name: counters.allocate(TYPE_SEQUENCER, f"sequencer: {name}")
                          for name in ("last sequence", "sequenced", "duplicates", "rejected", "back-pressured")}
        self._back_pressured = 0
        self._next_housekeeping_ns = 0
        self._stuck_head = (-1, 0)
        self._closed = False
        self._connection: Any = None  # DriverConnection, across hosts
        self._aeron = aeron
        self.log_publisher: LogPublisher | None = None
        self.ingress_receiver: Any = None
        if log_channel is not None or ingress_channel is not None:
            try:
                self._connect(log_channel, ingress_channel, aeron_dir)
            except BaseException:
                self.close()
                raise
        self._housekeeping(time.monotonic_ns())

    def _connect(self, log_channel: str | None, ingress_channel: str | None,
                 aeron_dir: str | os.PathLike[str] | None) -> None:
        from ..aeron.reconnect import DriverConnection

        self._connection = DriverConnection(aeron_dir, aeron=self._aeron)
        aeron = self._connection.aeron
        if ingress_channel is not None:
            self.ingress_receiver = IngressReceiver(self.dir, ingress_channel, aeron=aeron)
        if log_channel is not None:
            self.log_publisher = LogPublisher(self.dir, log_channel, aeron=aeron, stream_id=self.stream_id)

    def _recover(self, term_length: int) -> tuple[int | None, int, dict[int, int]]:
        """(session to resume or None, next sequence, last origin sequence per origin) from
        the existing log; half-written frames of a dead predecessor are padded."""
        logs = stream_logs(self.dir, self.stream_id)
        if not logs:
            return None, 1, {}
        if len(logs) > 1:
            raise LockstepError(f"{self.dir}: several logs for sequenced stream {self.stream_id}: "
                                f"{', '.join(p.name for p in logs)}")
        log = LogBuffer.open(logs[0], writable=True)
        session_id = log.session_id
        last_sequence = 0
        origins: dict[int, int] = {}
        with LogReader(log) as reader:
            while True:
                for payload, _ in reader.messages():
                    m = decode_sequenced(payload)
                    last_sequence = m.sequence
                    if m.origin_sequence > origins.get(m.origin_id, -1):
                        origins[m.origin_id] = m.origin_sequence
                if reader.position >= log.tail_position:
                    break
                if not reader.unblock():  # a dead predecessor's claim is padded; else:
                    raise LockstepError(f"{logs[0]}: cannot read past position {reader.position} to the log's "
                                        f"tail {log.tail_position}: the frame there is corrupt")
        if last_sequence == 0 and reader.position > 0:
            raise LockstepError(f"{logs[0]}: the log's retained part holds no sequenced message to continue from "
                                f"(position {reader.position}); recover from a recording")
        return session_id, last_sequence + 1, origins

    # -- work ---------------------------------------------------------------------------

    def do_work(self, limit: int = 4096) -> int:
        """One duty cycle: sequence up to `limit` commands (and, across hosts, take remote
        commands first and publish the log after). Returns how much work was done."""
        work = self.ingress_receiver.do_work() if self.ingress_receiver is not None else 0
        n = lib.ls_sequencer_do_work(self._seq, limit)
        if n < 0:
            raise c_error(self.ingress.path)
        if self.log_publisher is not None:
            work += self.log_publisher.do_work()
        if self._seq.last_status:
            self._back_pressured += 1
        now = time.monotonic_ns()
        if now >= self._next_housekeeping_ns:
            self._housekeeping(now)
        return n + work

    def next_timer_ns(self) -> int | None:
        """Streams of a media driver ring no doorbell here: look at them again soon."""
        if self._connection is None:
            return None
        return time.monotonic_ns() + REMOTE_POLL_NS

    def _housekeeping(self, now: int) -> None:
        self._next_housekeeping_ns = now + _HOUSEKEEPING_NS
        self.ingress.heartbeat()
        seq = self._seq
        c = self._counters
        c["last sequence"].set(seq.next_sequence - 1)
        c["sequenced"].set(seq.sequenced)
        c["duplicates"].set(seq.duplicates)
        c["rejected"].set(seq.rejected)
        c["back-pressured"].set(self._back_pressured)
        if seq.last_status:
            # The C loop only reads subscriber positions: let the publication evict dead
            # subscribers (a killed replica), or their stale positions hold the log forever.
            self.log.refresh()
        if self._connection is not None:  # a restarted driver: the remote parts again, on a new client
            self._connection.reattach((self.ingress_receiver, self.log_publisher))
        # A sender that died between claim and commit blocks the ring: skip its record.
        head = self.ingress.consumer_position
        if self.ingress.size() == 0 or head != self._stuck_head[0]:
            self._stuck_head = (head, now)
        elif now - self._stuck_head[1] > _UNBLOCK_AFTER_NS and not seq.last_status:
            self.ingress.unblock()
            self._stuck_head = (-1, now)

    def doorbells(self, rings: list, images: list) -> None:
        """What an idle sequencer sleeps on: its ingress (a sender's commit wakes it)."""
        self.ingress.doorbells(rings, images)

    def run(self, stop: threading.Event | Callable[[], bool] | None = None,
            idle: IdleStrategy | None = None) -> None:
        """Sequence until `stop` is set (an Event or a callable returning True). An error
        in a duty cycle is recorded in the directory's error log and re-raised. For Ctrl-C /
        SIGTERM: `with lockstep.idle.stop_on_signals() as stop: sequencer.run(stop)`, then
        `close()` (the log stays consistent for the next sequencer). Idle by default: asleep
        on the ingress's doorbell (`default_idle`)."""
        run_agent(self.do_work, stop, idle, error_dir=self.dir)

    # -- state --------------------------------------------------------------------------

    @property
    def last_sequence(self) -> int:
        return self._seq.next_sequence - 1

    @property
    def sequenced(self) -> int:
        """Commands sequenced by this instance."""
        return self._seq.sequenced

    @property
    def duplicates(self) -> int:
        """Commands dropped because their (origin, origin sequence) was already sequenced."""
        return self._seq.duplicates

    @property
    def rejected(self) -> int:
        """Malformed ingress records dropped."""
        return self._seq.rejected

    @property
    def position(self) -> int:
        """Log position after the last message sequenced."""
        return self._seq.last_position

    @property
    def session_id(self) -> int:
        return self.log.session_id

    def close(self) -> None:
        """Stop: the log stays open (not ended) for the next sequencer to continue."""
        if self._closed:
            return
        self._closed = True
        self._housekeeping(time.monotonic_ns())
        lib.ls_sequencer_close(self._seq)
        for part in (self.ingress_receiver, self.log_publisher):
            if part is not None:
                part.close()
        if self._connection is not None:
            self._connection.close()
        for counter in self._counters.values():
            counter.free_quietly()
        self.log.close(end_of_stream=False)
        self.ingress.close()
        self._lock.close()

