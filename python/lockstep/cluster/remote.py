"""What a replica or gateway on another host than the sequencer's holds: a client of its
host's media driver (that comes back after a driver restart), the sequenced log as a
`LogFollower` (live, gaps from the archive's replay service) and a `SequencerClient` over the
ingress stream. One place for both."""

from __future__ import annotations

import os
import time
from typing import Any

from .._closing import Closing
from ..aeron.channel import channel_param
from ..aeron.reconnect import DriverConnection
from ..errors import InvalidArgumentError
from .log_follower import LogFollower
from .sequenced import SEQUENCED_HEADER, SEQUENCED_HEADER_LENGTH
from .sequencer_client import DEFAULT_INGRESS_STREAM, RemoteSequencerClient

__all__ = ["RemoteLink"]

_CHECK_DRIVER_NS = 100_000_000


def _response_channel(log_channel: str, given: str | None) -> str:
    """Where replays come to this host: `given`, else the log channel itself (its endpoint,
    shared). A multi-destination-cast log channel cannot serve (the server's publications on it
    would bind the control address the log's publication holds): it needs one given."""
    if given is not None:
        return given
    if channel_param(log_channel, "control-mode") is not None or channel_param(log_channel, "control") is not None:
        raise InvalidArgumentError(f"replay_response_channel: the log channel {log_channel!r} is multi-destination "
                                   f"cast; give a unicast endpoint of this host for the archive's replays, e.g. "
                                   f"'aeron:udp?endpoint=host:port'")
    return log_channel


class RemoteLink(Closing):
    """`channel`: where the sequenced log arrives on this host; `ingress_channel`: where
    commands go (the sequencer host's endpoint); `replay_channel`: the archive replay
    service's control channel on the recording host (replays come back on `channel`'s
    endpoint, or on `replay_response_channel`: needed with a multi-destination-cast log
    channel); `aeron` a client, or `aeron_dir` this host's driver directory. Other parts on
    the same driver (a gateway's priority stream) join with `attach(part)`."""

    def __init__(self, *, channel: str, stream_id: int, position: int, ingress_channel: str | None,
                 replay_channel: str | None, aeron: Any = None, aeron_dir: str | os.PathLike[str] | None = None,
                 origin_id: int | None = None, send: bool = True,
                 ingress_stream_id: int = DEFAULT_INGRESS_STREAM, dir: Any = None, name: str = "",
                 replay_response_channel: str | None = None) -> None:
        self.connection = DriverConnection(aeron_dir, aeron=aeron)
        self.channel = channel
        self.replay_channel = replay_channel
        self.response_channel = _response_channel(channel, replay_response_channel) if replay_channel else None
        self.stream_id = stream_id
        self.follower: LogFollower | None = None
        self.client: Any = None
        self._replays: Any = None
        self._parts: list[Any] = []
        self._next_check_ns = 0
        try:
            self._replays = self._replay_client(self.aeron)
            if send:
                if ingress_channel is None:
                    raise ValueError("ingress_channel: a process on another host sends through the sequencer "
                                     "host's ingress channel; give it (or send_outputs=False)")
                self.client = RemoteSequencerClient(channel=ingress_channel, aeron=self.aeron, origin_id=origin_id,
                                                    stream_id=ingress_stream_id)
                self.client.tracking = True  # kept until seen in the log (resent after a disconnection)
            self.follower = LogFollower(
                self.aeron, channel, stream_id, position,
                start_replay=self._replay_gap if replay_channel is not None else None, counters_dir=dir, name=name,
                observer=self._observe if self.client is not None else None, before_poll=self.maintain)
            self._parts = [self.client, self.follower]
        except BaseException:
            self.close()
            raise

    @property
    def aeron(self) -> Any:
        return self.connection.aeron

    def _replay_client(self, aeron: Any) -> Any:
        if self.replay_channel is None:
            return None
        from ..aeron.replay_client import ReplayClient

        assert self.response_channel is not None
        return ReplayClient(aeron, self.replay_channel, self.response_channel)

    def _replay_gap(self, from_position: int, to_position: int) -> Any:
        """The archive's recording from `from_position`, following it (the follower stops it
        once past `to_position`: no stop position that could fall in a term's end padding);
        asked for without waiting, so the duty cycle goes on meanwhile."""
        return self._replays.request_replay(self.stream_id, start_position=from_position, stop_position=-1)

    def attach(self, part: Any) -> None:
        """`part.reattach(aeron)` too when the driver comes back."""
        self._parts.append(part)

    def maintain(self) -> None:
        """Before each poll: resend what a disconnection may have lost; now and then, whether
        the driver is gone and back (then every part is re-created on the new client)."""
        if self.client is not None:
            self.client.maintain()
        now = time.monotonic_ns()
        if now >= self._next_check_ns:
            self._next_check_ns = now + _CHECK_DRIVER_NS
            fresh = self.connection.check()
            if fresh is not None:
                if self._replays is not None:
                    self._replays.close()
                self._replays = self._replay_client(fresh)
                for part in self._parts:
                    if part is not None:
                        part.reattach(fresh)

    def _observe(self, data: memoryview) -> None:
        """Each message of the log: acknowledges our client's commands it carries."""
        client = self.client
        if client is not None and client.unacknowledged and len(data) >= SEQUENCED_HEADER_LENGTH:
            _, _, origin_sequence, origin_id, _ = SEQUENCED_HEADER.unpack_from(data)
            client.acknowledge(origin_id, origin_sequence)

    def _teardown(self) -> None:  # (close())
        for part in (self.client, self.follower, self._replays):
            if part is not None:
                part.close()
        self.connection.close()
