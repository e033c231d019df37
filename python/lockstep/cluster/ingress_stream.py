"""The sequencer host's end of the ingress from other hosts: `IngressReceiver` (run by
`Sequencer(ingress_channel=...)`) takes what `SequencerClient(channel=...)` sends and writes
each command into the local ingress ring, so remote commands join the one total order and
the sequencer's deduplication by (origin, origin sequence) covers them too."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from .._closing import Closing
from ..errors import InvalidArgumentError
from .sequencer_client import DEFAULT_INGRESS_STREAM, REMOTE_INGRESS_HEADER as _REMOTE, SequencerClient

__all__ = ["IngressReceiver"]


class IngressReceiver(Closing):
    """The sequencer host's end: polls the remote ingress stream (through `aeron`) and writes
    each command into the directory's ingress ring. A full ring stops the polling (Aeron's
    flow control then holds the senders back) until the queued commands are in."""

    def __init__(self, dir: str | os.PathLike[str] | None, channel: str, *, aeron: Any,
                 stream_id: int = DEFAULT_INGRESS_STREAM) -> None:
        self.channel = channel
        self.stream_id = stream_id
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

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client): subscribe again (senders resend what they
        had not seen sequenced)."""
        self.subscription.close()
        self.subscription = aeron.add_subscription(self.channel, self.stream_id)

    @property
    def waiting(self) -> int:
        """Commands received, waiting for room in the ingress ring."""
        return len(self._pending)

    def _teardown(self) -> None:  # (close())
        self.subscription.close()
        self._ring.close()
