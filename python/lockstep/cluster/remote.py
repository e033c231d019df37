"""What a replica or gateway on another host than the sequencer's holds: a client of its
host's media driver, the sequenced log as a `LogFollower` (live, gaps from the archive's
replay service) and a `SequencerClient` over the ingress stream. One place for both."""

from __future__ import annotations

import os
from typing import Any

from .ingress_stream import DEFAULT_INGRESS_STREAM
from .log_follower import LogFollower
from .sequencer import SEQUENCED_HEADER, SEQUENCED_HEADER_LENGTH, SequencerClient

__all__ = ["RemoteLink"]


class RemoteLink:
    """`channel`: where the sequenced log arrives on this host; `ingress_channel`: where
    commands go (the sequencer host's endpoint); `replay_channel`: the archive replay
    service's control channel on the recording host (replays come back on `channel`'s
    endpoint); `aeron` a client, or `aeron_dir` this host's driver directory."""

    def __init__(self, *, channel: str, stream_id: int, position: int, ingress_channel: str | None,
                 replay_channel: str | None, aeron: Any = None, aeron_dir: str | os.PathLike[str] | None = None,
                 origin_id: int | None = None, send: bool = True,
                 ingress_stream_id: int = DEFAULT_INGRESS_STREAM, dir: Any = None, name: str = "") -> None:
        from ..aeron import Aeron

        self.own_aeron = aeron is None
        self.aeron = Aeron(aeron_dir) if aeron is None else aeron
        self.follower: LogFollower | None = None
        self.client: SequencerClient | None = None
        self._replays: Any = None
        try:
            start_replay: Any = None
            if replay_channel is not None:
                from ..aeron.replay_client import ReplayClient

                self._replays = ReplayClient(self.aeron, replay_channel, channel)
                replays = self._replays

                def replay_gap(from_position: int, to_position: int) -> Any:
                    return replays.start_replay(stream_id, start_position=from_position, stop_position=to_position)

                start_replay = replay_gap

            if send:
                if ingress_channel is None:
                    raise ValueError("ingress_channel: a process on another host sends through the sequencer "
                                     "host's ingress channel; give it (or send_outputs=False)")
                self.client = SequencerClient(channel=ingress_channel, aeron=self.aeron, origin_id=origin_id,
                                              stream_id=ingress_stream_id)
                self.client.tracking = True  # kept until seen in the log (resent after a disconnection)
            client = self.client
            self.follower = LogFollower(
                self.aeron, channel, stream_id, position, start_replay=start_replay, counters_dir=dir, name=name,
                observer=None if client is None else self._observe,
                before_poll=None if client is None else client.maintain)
        except BaseException:
            self.close()
            raise

    def _observe(self, data: memoryview) -> None:
        """Each message of the log: acknowledges our client's commands it carries."""
        client = self.client
        if client is not None and client.unacknowledged and len(data) >= SEQUENCED_HEADER_LENGTH:
            _, _, origin_sequence, origin_id, _ = SEQUENCED_HEADER.unpack_from(data)
            client.acknowledge(origin_id, origin_sequence)

    def close(self) -> None:
        for part in (self.client, self.follower, self._replays):
            if part is not None:
                part.close()
        if self.own_aeron:
            self.aeron.close()
