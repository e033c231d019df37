"""The sequencer: many senders, one total order. Commands arrive on a many-to-one ingress
ring; the C loop stamps each with a gap-free sequence, a timestamp and its origin, drops
ones already sequenced, and appends them to the sequenced log (an exclusive publication)."""

from __future__ import annotations

import os
import random
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._closing import Closing
from .._native._fastpath import Send
from .._native import c_error, ffi, lib
from ..transport.client import client_for
from ..errors import InvalidArgumentError, LockstepError
from ..transport.idle import REMOTE_POLL_NS, IdleStrategy, run_agent
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import resolve_dir, take_pid_lock
from ..transport.publication import Publication
from ..transport.reader import LogReader
from ..transport.ring import ManyToOneRing
from ..transport.stream_files import stream_logs
from .log_publisher import LogPublisher

__all__ = ["Sequencer", "SequencerClient", "SequencedMessage", "decode_sequenced", "DEFAULT_LOG_STREAM",
           "SEQUENCED_HEADER", "SEQUENCED_HEADER_LENGTH"]

DEFAULT_LOG_STREAM = 100
INGRESS_FILE = "ingress.ring"
LOCK_FILE = "sequencer.lock"
DEFAULT_INGRESS_CAPACITY = 1 << 22
DEFAULT_TERM_LENGTH = 1 << 24
TYPE_SEQUENCER = 1010  # counters: last sequence, sequenced, duplicates, rejected, back-pressure
_HOUSEKEEPING_NS = 100_000_000
_UNBLOCK_AFTER_NS = 5_000_000_000

# Each sequenced-log message starts with: sequence, timestamp ns, origin sequence, origin id, reserved.
SEQUENCED_HEADER = _SEQUENCED = struct.Struct("<qqqii")
SEQUENCED_HEADER_LENGTH: int = lib.LS_SEQUENCED_HEADER_LENGTH


@dataclass(frozen=True)
class SequencedMessage:
    """One message of the sequenced log, header decoded, command copied."""

    sequence: int
    timestamp_ns: int
    origin_id: int
    origin_sequence: int
    command: bytes
    position: int = 0


def decode_sequenced(data, position: int = 0) -> SequencedMessage:
    """Decode one sequenced-log payload (a LockstepError if it is too short)."""
    if len(data) < SEQUENCED_HEADER_LENGTH:
        raise LockstepError(f"sequenced message: expected at least {SEQUENCED_HEADER_LENGTH} bytes, found {len(data)}")
    sequence, timestamp, origin_sequence, origin_id, _ = _SEQUENCED.unpack_from(data)
    return SequencedMessage(sequence, timestamp, origin_id, origin_sequence, bytes(data[SEQUENCED_HEADER_LENGTH:]),
                            position)


def _ingress(dir: Path, capacity: int) -> ManyToOneRing:
    """The directory's ingress ring: opened as it is, or created with `capacity`."""
    path = dir / INGRESS_FILE
    return ManyToOneRing(path) if path.exists() else ManyToOneRing(path, capacity)


class SequencerClient(Closing):
    """Sends commands to the sequencer from any process (and any number of them).

    Each client has an origin id and numbers its commands; the sequencer drops a command
    whose origin sequence is not above the last it sequenced for that origin. By default
    the origin id is random and the numbering starts at the current time in ns, so a
    restarted client never collides with its former self."""

    def __new__(cls, *args: Any, channel: str | None = None, **kwargs: Any) -> Any:
        if channel is not None and cls is SequencerClient:  # over an Aeron stream to another host
            from .ingress_stream import RemoteSequencerClient
            cls = RemoteSequencerClient
        return super().__new__(cls)

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, origin_id: int | None = None,
                 ingress_capacity: int = DEFAULT_INGRESS_CAPACITY, channel: None = None) -> None:
        """`channel` (with `aeron_dir=` or `aeron=`): send to the sequencer of another host over
        that Aeron stream instead (see `ingress_stream.RemoteSequencerClient`)."""
        self.dir = resolve_dir(dir)
        self.ring = _ingress(self.dir, ingress_capacity)
        self.origin_id = random.SystemRandom().randint(1, (1 << 31) - 1) if origin_id is None else origin_id
        if not -(1 << 31) <= self.origin_id < 1 << 31:
            raise InvalidArgumentError(f"origin_id: expected an int32, found {self.origin_id}")
        # send(): one vectorcall into C per command (an instance attribute: no method binding);
        # it keeps the origin sequence. Errors and odd arguments go to the Python `send` below.
        self.send = self._fast_send = Send(int(ffi.cast("uintptr_t", self.ring._rb)), self.origin_id, time.time_ns(),
                                           self.ring, SequencerClient.send.__get__(self), max_length=-1)
        self.ring._dependents.append(self._fast_send)  # detached if the ring is closed
        self._log_path: Path | None = None
        self._dir_changed_ns = -1
        self.max_command_length = self.ring.max_message_length - lib.LS_INGRESS_HEADER_LENGTH
        self._learn_log_limit()

    def _learn_log_limit(self) -> None:
        """Learn the longest command the sequenced log carries (its max message length less
        the sequenced header) from the log's file; until a sequencer has made it, every send
        takes the checked Python path, which looks again whenever the directory changed."""
        if self._log_path is not None:
            return
        changed = os.stat(self.dir).st_mtime_ns
        if changed == self._dir_changed_ns:
            return
        logs = stream_logs(self.dir, DEFAULT_LOG_STREAM)
        if not logs:
            self._dir_changed_ns = changed
            return
        try:
            with LogBuffer.open(logs[-1]) as log:
                carried = log.max_message_length - SEQUENCED_HEADER_LENGTH
        except (LockstepError, FileNotFoundError):
            return  # being made, or not a log: the sequencer refuses it too; look again next time
        self._log_path = logs[-1]
        self.max_command_length = min(self.max_command_length, carried)
        self._fast_send.max_length = self.max_command_length

    @property
    def next_origin_sequence(self) -> int:
        """The origin sequence the next `send` goes with."""
        return self._fast_send.next_origin_sequence

    @next_origin_sequence.setter
    def next_origin_sequence(self, value: int) -> None:
        self._fast_send.next_origin_sequence = value

    def send(self, command) -> bool:  # (the instance's `send` is the C object; this is its fallback)
        """Send one command (bytes-like). False when the ingress ring is full: the sequencer
        is behind (or back-pressured by its log); nothing was sent, try again later."""
        sent = self.send_as(self.origin_id, self.next_origin_sequence, command)
        if sent:
            self.next_origin_sequence += 1
        return sent

    def send_as(self, origin_id: int, origin_sequence: int, command) -> bool:
        """Send with an explicit origin and origin sequence (replicated machines' outputs:
        every replica sends the same pair, the sequencer keeps the first). A command longer
        than the sequenced log carries is refused (InvalidArgumentError), never dropped later."""
        rb = self.ring._rb  # (ClosedError once the ring is closed)
        self._learn_log_limit()
        try:
            length = len(command) if isinstance(command, bytes) else memoryview(command).nbytes
        except TypeError:
            length = -1  # not a buffer: ls_sequencer_send's binding says what is wrong
        if length > self.max_command_length:
            where = self._log_path or self.ring.path
            raise InvalidArgumentError(
                f"{where}: command length: expected at most {self.max_command_length} bytes (the longest the "
                f"sequenced log carries), found {length}")
        try:
            rc = lib.ls_sequencer_send(rb, origin_id, origin_sequence, command, len(command))
        except TypeError:
            rc = lib.ls_sequencer_send(rb, origin_id, origin_sequence, ffi.from_buffer(command),
                                       memoryview(command).nbytes)
        if rc == 0:
            return True
        if rc == lib.LS_RB_FULL:
            return False
        raise c_error(self.ring.path)

    def _teardown(self) -> None:  # (close())
        self.ring.close()  # (detaches the fast send first)


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
            if lib.ls_sequencer_init(self._seq, self.ingress._rb, self.log._pub, next_sequence) < 0:
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
        self._aeron, self._own_aeron = aeron, False
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
        from ..aeron import Aeron
        from .ingress_stream import IngressReceiver

        if self._aeron is None:
            self._aeron, self._own_aeron = Aeron(aeron_dir), True
        if ingress_channel is not None:
            self.ingress_receiver = IngressReceiver(self.dir, ingress_channel, aeron=self._aeron)
        if log_channel is not None:
            self.log_publisher = LogPublisher(self.dir, log_channel, aeron=self._aeron, stream_id=self.stream_id)

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
                if not lib.ls_image_unblock(reader._image):  # a dead predecessor's claim is padded; else:
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

    def _next_timer_ns(self) -> int | None:
        """Streams of a media driver ring no doorbell here: look at them again soon."""
        if self._aeron is None:
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
            self.log._refresh()
        # A sender that died between claim and commit blocks the ring: skip its record.
        head = self.ingress.consumer_position
        if self.ingress.size() == 0 or head != self._stuck_head[0]:
            self._stuck_head = (head, now)
        elif now - self._stuck_head[1] > _UNBLOCK_AFTER_NS and not seq.last_status:
            self.ingress.unblock()
            self._stuck_head = (-1, now)

    def _doorbells(self, rings: list, images: list) -> None:
        """What an idle sequencer sleeps on: its ingress (a sender's commit wakes it)."""
        self.ingress._doorbells(rings, images)

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
        if self._own_aeron:
            self._aeron.close()
        for counter in self._counters.values():
            counter.free_quietly()
        self.log.close(end_of_stream=False)
        self.ingress.close()
        self._lock.close()

