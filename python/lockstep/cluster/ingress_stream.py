"""Ingress from other hosts: `SequencerClient(channel=...)` sends commands over an Aeron
stream to the sequencer's host, where an `IngressReceiver` (run by `Sequencer(ingress_channel=
...)`) writes each into the local ingress ring, so remote commands join the one total order
and the sequencer's deduplication by (origin, origin sequence) covers them too.

Each message: origin sequence (int64), origin id (int32), 4 reserved bytes, then the command."""

from __future__ import annotations

import os
import random
import struct
import time
from collections import deque
from typing import Any

from ..errors import ClosedError, InvalidArgumentError, LockstepError
from ..transport.mapped import resolve_dir
from ..transport.publication import ADMIN_ACTION, BACK_PRESSURED, CLOSED, NOT_CONNECTED, status_name
from .sequencer import SEQUENCED_HEADER_LENGTH, SequencerClient

__all__ = ["RemoteSequencerClient", "IngressReceiver", "DEFAULT_INGRESS_STREAM"]

DEFAULT_INGRESS_STREAM = 101
_REMOTE = struct.Struct("<qi4x")  # origin sequence, origin id
_NOT_NOW = (BACK_PRESSURED, NOT_CONNECTED, ADMIN_ACTION)
_LOG_MAX_MESSAGE = (1 << 24) // 8  # the default sequenced log's longest message (term length / 8)


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
                self._connected = False
                if self._unacked:
                    self._resend = 0
            return False
        if result == CLOSED:
            raise ClosedError(f"sequencer client of {self.channel} is closed")
        raise LockstepError(f"{self.channel}: offer failed: {status_name(result)}")

    def maintain(self) -> bool:
        """After a disconnection, send the unacknowledged commands again (in order); True
        when none is left to resend. (Called before each send, and by RemoteLink each poll.)"""
        if self._connected and not self.publication.is_connected:
            self._connected = False
            if self._unacked:
                self._resend = 0
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


class IngressReceiver:
    """The sequencer host's end: polls the remote ingress stream (through `aeron`) and writes
    each command into the directory's ingress ring. A full ring stops the polling (Aeron's
    flow control then holds the senders back) until the queued commands are in."""

    def __init__(self, dir: str | os.PathLike[str] | None, channel: str, *, aeron: Any,
                 stream_id: int = DEFAULT_INGRESS_STREAM) -> None:
        self.channel = channel
        self.subscription = aeron.add_subscription(channel, stream_id)
        self._ring = SequencerClient(dir)
        self._pending: deque[tuple[int, int, bytes]] = deque()
        self.received = 0
        self.rejected = 0  # malformed, or longer than the sequenced log carries

    def do_work(self, limit: int = 256) -> int:
        work = self._flush()
        if not self._pending:
            work += self.subscription.poll(self._on_fragment, limit)
        return work

    def _on_fragment(self, data: memoryview, header: Any) -> None:
        if len(data) < _REMOTE.size:
            self.rejected += 1
            return
        origin_sequence, origin_id = _REMOTE.unpack_from(data)
        self._pending.append((origin_id, origin_sequence, bytes(data[_REMOTE.size:])))
        self.received += 1
        self._flush()

    def _flush(self) -> int:
        sent = 0
        pending = self._pending
        while pending:
            origin_id, origin_sequence, command = pending[0]
            try:
                if not self._ring.send_as(origin_id, origin_sequence, command):
                    break
            except InvalidArgumentError:
                self.rejected += 1
            pending.popleft()
            sent += 1
        return sent

    @property
    def waiting(self) -> int:
        """Commands received, waiting for room in the ingress ring."""
        return len(self._pending)

    def close(self) -> None:
        self.subscription.close()
        self._ring.close()
