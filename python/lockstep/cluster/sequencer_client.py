"""Senders of commands to the sequencer: `SequencerClient` writes them into the directory's
many-to-one ingress ring (any number of processes), or, with `channel=`, over an Aeron stream
to the sequencer of another host (`RemoteSequencerClient`, taken in by the sequencer's
`IngressReceiver`). Each remote message: origin sequence (int64), origin id (int32), 4
reserved bytes, then the command."""

from __future__ import annotations

import os
import random
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from .._closing import Closing
from .._native._fastpath import Send
from .._native import c_error, fast_method, ffi, lib
from ..errors import ClosedError, InvalidArgumentError, LockstepError
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import resolve_dir
from ..transport.publication import ADMIN_ACTION, BACK_PRESSURED, CLOSED, NOT_CONNECTED, status_name
from ..transport.ring import ManyToOneRing
from ..transport.stream_files import stream_logs
from .sequenced import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH

__all__ = ["SequencerClient", "RemoteSequencerClient", "DEFAULT_INGRESS_STREAM", "INGRESS_FILE",
           "DEFAULT_INGRESS_CAPACITY", "REMOTE_INGRESS_HEADER"]

INGRESS_FILE = "ingress.ring"
DEFAULT_INGRESS_CAPACITY = 1 << 22
DEFAULT_INGRESS_STREAM = 101
REMOTE_INGRESS_HEADER = _REMOTE = struct.Struct("<qi4x")  # origin sequence, origin id
_NOT_NOW = (BACK_PRESSURED, NOT_CONNECTED, ADMIN_ACTION)
_LOG_MAX_MESSAGE = (1 << 24) // 8  # the default sequenced log's longest message (term length / 8)


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
            cls = RemoteSequencerClient
        return super().__new__(cls)

    __slots__ = ("_fast_send", "_fast_send_batch")  # slots: send/send_batch read them without a lookup
    dir: Path | None  # (None for a client of another host's sequencer)

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, origin_id: int | None = None,
                 ingress_capacity: int = DEFAULT_INGRESS_CAPACITY, channel: str | None = None,
                 aeron: Any = None, aeron_dir: str | os.PathLike[str] | None = None,
                 stream_id: int = DEFAULT_INGRESS_STREAM) -> None:
        """`channel` (with `aeron_dir=` or `aeron=`, and the ingress `stream_id`): send to the
        sequencer of another host over that Aeron stream instead (a `RemoteSequencerClient`)."""
        directory = resolve_dir(dir)
        self.dir = directory
        self.ring = _ingress(directory, ingress_capacity)
        self.origin_id = random.SystemRandom().randint(1, (1 << 31) - 1) if origin_id is None else origin_id
        if not -(1 << 31) <= self.origin_id < 1 << 31:
            raise InvalidArgumentError(f"origin_id: expected an int32, found {self.origin_id}")
        # send(): one vectorcall into C per command (the class's `send` is a FastMethod handing
        # calls to it); it keeps the origin sequence. Errors and odd arguments go to the Python `send` below.
        fast = Send(ffi.buffer(self.ring.handle), self.origin_id, time.time_ns(), SequencerClient.send.__get__(self),
                    max_length=-1)
        self._fast_send, self._fast_send_batch = fast, fast.batch
        self.ring.add_dependent(fast)  # detached before the ring is unmapped
        self._log_path: Path | None = None
        self._dir_changed_ns = -1
        self.max_command_length = self.ring.max_message_length - lib.LS_INGRESS_HEADER_LENGTH
        self._learn_log_limit()

    def _learn_log_limit(self) -> None:
        """Learn the longest command the sequenced log carries (its max message length less
        the sequenced header) from the log's file; until a sequencer has made it, every send
        takes the checked Python path, which looks again whenever the directory changed."""
        if self._log_path is not None or self.dir is None:
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

    def send(self, command: Any) -> bool:
        """Send one command (bytes-like). False when the ingress ring is full: the sequencer
        is behind (or back-pressured by its log); nothing was sent, try again later."""
        sent = self.send_as(self.origin_id, self.next_origin_sequence, command)
        if sent:
            self.next_origin_sequence += 1
        return sent

    send = fast_method("_fast_send", send)

    def send_batch(self, commands: Sequence[Any]) -> int:
        """Send several commands in one call (one C entry for all, numbered in order): how many
        of the first ones were sent; fewer than all means the ingress ring is full, send the
        rest later. Errors as `send` (the commands before the failing one were sent)."""
        sent = 0
        for command in commands:
            if not self.send(command):
                break
            sent += 1
        return sent

    send_batch = fast_method("_fast_send_batch", send_batch)

    def send_as(self, origin_id: int, origin_sequence: int, command: Any) -> bool:
        """Send with an explicit origin and origin sequence (replicated machines' outputs:
        every replica sends the same pair, the sequencer keeps the first). A command longer
        than the sequenced log carries is refused (InvalidArgumentError), never dropped later."""
        rb = self.ring.handle  # (ClosedError once the ring is closed)
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


class RemoteSequencerClient(SequencerClient):
    """What `SequencerClient(channel=..., aeron_dir=... | aeron=...)` makes: `send`, `send_as`
    and `next_origin_sequence` as the local client, over an Aeron publication on `channel` (the
    sequencer host's ingress endpoint, e.g. `aeron:udp?endpoint=host1:40101`). `send` is False
    ("not now") while the stream is back-pressured or not yet connected.

    A command the driver took can still be lost when the link is cut for longer than the
    drivers' timeouts (the sequencer host's new image starts at the sender's position). So a
    client that reads the log (a replica's or gateway's, through `RemoteLink`) keeps each
    command until it sees it sequenced (`acknowledge`), and after the stream was disconnected
    sends the unacknowledged ones again, in order, before anything new: the sequencer drops
    the copies it already has (same origin and origin sequence)."""

    next_origin_sequence: int = 0  # (a plain attribute here: no C sender keeps it)

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, channel: str, aeron: Any = None,
                 aeron_dir: str | os.PathLike[str] | None = None, stream_id: int = DEFAULT_INGRESS_STREAM,
                 origin_id: int | None = None, **_: Any) -> None:
        from ..aeron import Aeron

        self.dir = resolve_dir(dir) if dir is not None else None
        self.channel = channel
        self.stream_id = stream_id
        self.origin_id = random.SystemRandom().randint(1, (1 << 31) - 1) if origin_id is None else origin_id
        if not -(1 << 31) <= self.origin_id < 1 << 31:
            raise InvalidArgumentError(f"origin_id: expected an int32, found {self.origin_id}")
        self.next_origin_sequence = time.time_ns()
        self._own_aeron = aeron is None
        self._aeron = Aeron(aeron_dir) if aeron is None else aeron
        try:
            self.publication = self._aeron.add_publication(channel, stream_id)
        except BaseException:
            if self._own_aeron:
                self._aeron.close()
            raise
        self.max_command_length = min(self.publication.max_message_length - _REMOTE.size,
                                      _LOG_MAX_MESSAGE - SEQUENCED_HEADER_LENGTH)
        self.tracking = False  # set by a reader of the log that calls acknowledge()
        self._unacked: deque[tuple[int, int, bytes]] = deque()  # (origin, origin sequence, message)
        self._resend = -1  # index into _unacked of the next to send again (-1: none to resend)
        self._connected = False
        self.resent = 0

    def send_as(self, origin_id: int, origin_sequence: int, command: Any) -> bool:
        data = command if isinstance(command, bytes) else bytes(memoryview(command))
        if len(data) > self.max_command_length:
            raise InvalidArgumentError(f"{self.channel}: command length: expected at most {self.max_command_length} "
                                       f"bytes, found {len(data)}")
        if self.tracking and not self.maintain():
            return False  # the unacknowledged ones go first
        message = _REMOTE.pack(origin_sequence, origin_id) + data
        if not self._offer(message):
            return False
        if self.tracking:
            self._unacked.append((origin_id, origin_sequence, message))
        return True

    def _offer(self, message: bytes) -> bool:
        result = self.publication.offer(message)
        if result > 0:
            self._connected = True
            return True
        if result in _NOT_NOW:
            if result == NOT_CONNECTED and self._connected:
                self._disconnected()
            return False
        if result == CLOSED:
            if not self.closed and self._aeron.is_closed:  # the driver went: not now (RemoteLink reattaches)
                self._disconnected()
                return False
            raise ClosedError(f"sequencer client of {self.channel} is closed")
        raise LockstepError(f"{self.channel}: offer failed: {status_name(result)}")

    def _disconnected(self) -> None:
        """The stream went (or a new one replaces it): what it may have lost goes again first."""
        self._connected = False
        if self._unacked:
            self._resend = 0

    def maintain(self) -> bool:
        """After a disconnection, send the unacknowledged commands again (in order); True
        when none is left to resend. (Called before each send, and by RemoteLink each poll.)"""
        if self._connected and not self.publication.is_connected:
            self._disconnected()
        unacked = self._unacked
        while 0 <= self._resend < len(unacked):
            if not self._offer(unacked[self._resend][2]):
                return False
            self._resend += 1
            self.resent += 1
        self._resend = -1
        return True

    def acknowledge(self, origin_id: int, origin_sequence: int) -> None:
        """A sequenced message of (origin, origin sequence) was read: forget what it covers."""
        unacked = self._unacked
        while unacked and unacked[0][0] == origin_id and unacked[0][1] <= origin_sequence:
            unacked.popleft()
            if self._resend > 0:
                self._resend -= 1

    @property
    def unacknowledged(self) -> int:
        """Commands sent, not seen sequenced yet (when tracking)."""
        return len(self._unacked)

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client): a new publication; what was not seen
        sequenced goes again first."""
        self.publication.close()
        if self._own_aeron:
            self._aeron.close()
        self._aeron, self._own_aeron = aeron, False
        self.publication = aeron.add_publication(self.channel, self.stream_id)
        self._disconnected()

    @property
    def is_connected(self) -> bool:
        """Whether the sequencer host's receiver is there (sends can succeed)."""
        return bool(self.publication.is_connected)

    def _learn_log_limit(self) -> None:
        pass

    def _teardown(self) -> None:  # (close())
        self.publication.close()
        if self._own_aeron:
            self._aeron.close()

    def __repr__(self) -> str:
        return f"SequencerClient(channel={self.channel!r}, origin_id={self.origin_id})"
