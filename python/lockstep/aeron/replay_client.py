"""The client of the archive's replay service (`lockstep.archive.ReplayServer`) and its
protocol: a reader on another host than the archive's asks for a recording from a position
and receives it over Aeron with the recording's own positions (Aeron Archive's replay). In the
aeron layer, below `cluster`, so that readers of the sequenced log can fill a gap with it.

    # host 1, the archive's (its driver in dir1):
    with Aeron(dir1) as aeron, ReplayServer(aeron=aeron, control_channel="aeron:udp?endpoint=host1:40102") as server:
        server.run(stop_event)                               # or server.do_work() in your own loop

    # host 2, a late replica's (its driver in dir2):
    with Aeron(dir2) as aeron, ReplayClient(aeron, "aeron:udp?endpoint=host1:40102",
                                            "aeron:udp?endpoint=host2:40103") as client:
        with client.start_replay(100, start_position=p) as replay:   # stop_position=-1: follow
            while not replay.is_done:
                replay.poll(handler, 10)                     # header.position: the original log's

Protocol (`SCHEMA`, `lockstep.codec` schema 7410 "lockstep.archive.replay", version 0), one
message per Aeron message:

| template | message | sent on | fields |
|---|---|---|---|
| 1 | StartReplay | control channel / control stream (default 102) | correlation_id i8, recording_id i8 (-1: the newest recording of stream_id), start_position i8 (-1: the recording's start), stop_position i8 (-1: follow the recording while it grows and the client is there), stream_id i4, control_response_stream_id i4, replay_stream_id i4, response_channel S200 |
| 2 | StopReplay | control channel / control stream | correlation_id i8 (of the StartReplay), replay_session_id i8 (-1: any) |
| 3 | ReplayOk | response channel / control response stream | correlation_id i8, replay_session_id i8, recording_id i8, start_position i8, stop_position i8 (-1: following) |
| 4 | ReplayError | response channel / control response stream | correlation_id i8, code i4 (`ERROR_CODES`), text S200 |

After ReplayOk the server sends the recording's messages on response channel / replay
stream through an exclusive publication created with `term-length`, `mtu`, `init-term-id`,
`term-id`, `term-offset` (from the recording's descriptor and the start position) and
`session-id` (the low 32 bits of the replay session id): its positions are the recording's,
so each message's `header.position` at the client is its position in the original log. The
server checks every offer's resulting position against the recording's and ends the session
with a ReplayError (never renumbering) when they differ. The publication is closed (end of
stream) once the stop position is sent. A ReplayError can also come after ReplayOk (the
session failed); `Replay.poll` raises it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .._closing import Closing
from .. import codec
from ..errors import CodecError, ImageLostError, LockstepError
from ..transport.idle import BackoffIdleStrategy
from .channel import with_params

__all__ = [
    "CONTROL_RESPONSE_STREAM_ID", "CONTROL_STREAM_ID", "ERROR_CODES", "ReplayClient", "ReplayError",
    "ReplayOk", "Replay", "PendingReplay", "SCHEMA", "StartReplay", "StopReplay",
]

CONTROL_STREAM_ID = 102
CONTROL_RESPONSE_STREAM_ID = 103
FIRST_REPLAY_STREAM_ID = 104
MAX_CHANNEL_LENGTH = 200
MAX_TEXT_LENGTH = 200

SCHEMA = codec.Schema(7410, name="lockstep.archive.replay")
StartReplay = SCHEMA.message("StartReplay", 1, [
    ("correlation_id", "i8"),
    ("recording_id", "i8"),
    ("start_position", "i8"),
    ("stop_position", "i8"),
    ("stream_id", "i4"),
    ("control_response_stream_id", "i4"),
    ("replay_stream_id", "i4"),
    ("response_channel", f"S{MAX_CHANNEL_LENGTH}"),
])
StopReplay = SCHEMA.message("StopReplay", 2, [("correlation_id", "i8"), ("replay_session_id", "i8")])
ReplayOk = SCHEMA.message("ReplayOk", 3, [
    ("correlation_id", "i8"),
    ("replay_session_id", "i8"),
    ("recording_id", "i8"),
    ("start_position", "i8"),
    ("stop_position", "i8"),
])
ReplayError = SCHEMA.message("ReplayError", 4, [
    ("correlation_id", "i8"), ("code", "i4"), ("text", f"S{MAX_TEXT_LENGTH}"),
])

NO_RECORDING, BAD_POSITION, MALFORMED, TOO_MANY_SESSIONS, REPLAY_FAILED, STOPPED = 1, 2, 3, 4, 5, 6
ERROR_CODES = {
    NO_RECORDING: "no such recording",
    BAD_POSITION: "bad position",
    MALFORMED: "malformed request",
    TOO_MANY_SESSIONS: "too many sessions",
    REPLAY_FAILED: "replay failed",
    STOPPED: "server stopped",
}

_NOT_CONNECTED, _BACK_PRESSURED, _ADMIN_ACTION, _CLOSED, _MAX_POSITION_EXCEEDED = -1, -2, -3, -4, -5
_ERROR_GRACE_S = 1.0  # a stream ended short of its stop: how long the client waits for the server's reason
# Channel parameters the server sets on a replay publication (a client's own are dropped).
def _text(value: Any) -> str:
    return bytes(value).rstrip(b"\0").decode(errors="replace")


def _clip(text: str, limit: int = MAX_TEXT_LENGTH) -> bytes:
    data = text.encode()
    return data if len(data) <= limit else data[:limit - 3].decode(errors="ignore").encode() + b"..."

# -- the client ---------------------------------------------------------------------------------

class ReplayClient(Closing):
    """Asks the `ReplayServer` listening on `control_channel` / `control_stream_id` for replays,
    which it receives on `response_channel` (an endpoint of this host's driver, e.g.
    `aeron:udp?endpoint=10.42.0.2:40103`): answers on `response_stream_id`, each replay on a
    stream of its own from `first_replay_stream_id` on. `timeout` is start_replay's default."""

    def __init__(self, aeron: Any, control_channel: str, response_channel: str, *,
                 control_stream_id: int = CONTROL_STREAM_ID, response_stream_id: int = CONTROL_RESPONSE_STREAM_ID,
                 first_replay_stream_id: int = FIRST_REPLAY_STREAM_ID, timeout: float = 10.0) -> None:
        if len(response_channel.encode()) > MAX_CHANNEL_LENGTH:
            raise LockstepError(f"response channel {response_channel!r}: expected at most {MAX_CHANNEL_LENGTH} "
                                f"bytes, found {len(response_channel.encode())}")
        self.aeron = aeron
        self.control_channel = control_channel
        self.control_stream_id = control_stream_id
        self.response_channel = response_channel
        self.response_stream_id = response_stream_id
        self.timeout = timeout
        self._next_stream_id = first_replay_stream_id
        self._next_correlation_id = int.from_bytes(os.urandom(6), "little") << 8
        self._responses: dict[int, Any] = {}
        self._waiting: set[int] = set()
        self._responses_sub = aeron.add_subscription(response_channel, response_stream_id)
        try:
            self._control = aeron.add_publication(control_channel, control_stream_id)
        except BaseException:
            self._responses_sub.close()
            raise

    def start_replay(self, stream_id: int = 100, *, recording_id: int = -1, start_position: int = -1,
                     stop_position: int = -1, timeout: float | None = None) -> Replay:
        """Ask for recording `recording_id` (-1: the newest of `stream_id`) from `start_position`
        (-1: its start; else a message boundary) to `stop_position` (-1: follow it while it is
        recorded). Returns the `Replay` once the server accepted; LockstepError when no server is
        connected within `timeout`, no answer comes, or the server refuses (with its text)."""
        pending = self.request_replay(stream_id, recording_id=recording_id, start_position=start_position,
                                      stop_position=stop_position, timeout=timeout)
        idle = BackoffIdleStrategy(max_spins=0, max_yields=1, min_park_ns=50_000)  # (a client call: no busy spin)
        while pending.replay is None:
            idle.idle(pending.advance())
        return pending.replay

    def request_replay(self, stream_id: int = 100, *, recording_id: int = -1, start_position: int = -1,
                       stop_position: int = -1, timeout: float | None = None) -> PendingReplay:
        """start_replay without waiting (for an agent's duty cycle): a `PendingReplay` whose
        `poll` hands over nothing until the server's answer is in, then the replay's messages."""
        timeout = self.timeout if timeout is None else timeout
        correlation_id = self._next_correlation_id
        self._next_correlation_id += 1
        replay_stream_id = self._next_stream_id
        self._next_stream_id += 1
        request = StartReplay.encode(correlation_id=correlation_id, recording_id=recording_id,
                                     start_position=start_position, stop_position=stop_position,
                                     stream_id=stream_id, control_response_stream_id=self.response_stream_id,
                                     replay_stream_id=replay_stream_id, response_channel=self.response_channel.encode())
        self._waiting.add(correlation_id)
        return PendingReplay(self, correlation_id, replay_stream_id, request, time.monotonic() + timeout, timeout)

    def _replay_for(self, answer: Any, replay_stream_id: int) -> Replay:
        """The Replay of an accepted request (subscribed to its stream), or its refusal raised."""
        correlation_id = int(answer.correlation_id)
        if answer.type is ReplayError:
            raise LockstepError(f"replay server at {self.control_channel}: {_text(answer.text)} "
                                f"({ERROR_CODES.get(int(answer.code), 'error')} {int(answer.code)})")
        session_id = int(answer.replay_session_id)  # (in 1..2^31-1: the replay publication's session id)
        channel = with_params(self.response_channel, drop=("session-id",), session_id=session_id)
        subscription = self.aeron.add_subscription(channel, replay_stream_id)
        stop = int(answer.stop_position)
        replay = Replay(self, correlation_id, session_id, int(answer.recording_id), int(answer.start_position),
                        None if stop == -1 else stop, subscription)
        self._waiting.add(correlation_id)  # a later ReplayError (the session failed) goes to the replay
        return replay

    def poll_responses(self, limit: int = 10) -> int:
        """Read the server's answers (start_replay and Replay.poll do this)."""
        return self._responses_sub.poll(self._on_response, limit)

    def _on_response(self, data: memoryview, header: Any) -> None:
        try:
            msg = SCHEMA.decode(data)
        except CodecError:
            return
        if msg.type in (ReplayOk, ReplayError) and int(msg.correlation_id) in self._waiting:
            self._responses[int(msg.correlation_id)] = msg.copy()

    def _stop(self, replay: Replay) -> None:
        self._waiting.discard(replay.correlation_id)
        self._responses.pop(replay.correlation_id, None)
        if not self._closed:
            self._control.offer(StopReplay.encode(correlation_id=replay.correlation_id,
                                                  replay_session_id=replay.replay_session_id))

    def _error_for(self, correlation_id: int) -> str | None:
        answer = self._responses.get(correlation_id)
        if answer is not None and answer.type is ReplayError:
            return f"{_text(answer.text)} ({ERROR_CODES.get(int(answer.code), 'error')} {int(answer.code)})"
        return None

    def _teardown(self) -> None:  # (close())
        self._control.close()
        self._responses_sub.close()


class PendingReplay:
    """A replay asked for and not answered yet (`ReplayClient.request_replay`). `advance()`
    sends the request once the server is connected and reads the answer, never waiting;
    `poll`, `position`, `is_done`, `close` are the `Replay`'s once there is one (`replay`)
    and raise LockstepError when the request fails or times out, as start_replay would."""

    def __init__(self, client: ReplayClient, correlation_id: int, replay_stream_id: int, request: bytes,
                 deadline: float, timeout: float) -> None:
        self.client = client
        self.correlation_id = correlation_id
        self.replay_stream_id = replay_stream_id
        self.replay: Replay | None = None
        self._request: bytes | None = request
        self._deadline = deadline
        self._timeout = timeout
        self._closed = False

    def advance(self) -> int:
        """One step: 1 when something happened (sent, or answered), else 0."""
        client = self.client
        if self.replay is not None or self._closed:
            return 0
        if self._request is not None:
            if not client._control.is_connected:
                self._check_deadline(f"{client.control_channel} stream {client.control_stream_id}: no replay server "
                                     f"connected within {self._timeout} s")
                return 0
            result = client._control.offer(self._request)
            if result < 0:
                if result in (_CLOSED, _MAX_POSITION_EXCEEDED):
                    self._fail(f"{client.control_channel} stream {client.control_stream_id}: cannot send the "
                               f"replay request (offer status {result})")
                self._check_deadline(f"{client.control_channel} stream {client.control_stream_id}: cannot send the "
                                     f"replay request (offer status {result})")
                return 0
            self._request = None
            return 1
        client.poll_responses()
        answer = client._responses.pop(self.correlation_id, None)
        if answer is None:
            self._check_deadline(f"{client.control_channel}: no answer from the replay server on "
                                 f"{client.response_channel} stream {client.response_stream_id} within {self._timeout} s")
            return 0
        client._waiting.discard(self.correlation_id)
        self.replay = client._replay_for(answer, self.replay_stream_id)
        return 1

    def _check_deadline(self, text: str) -> None:
        if time.monotonic() > self._deadline:
            self._fail(text)

    def _fail(self, text: str) -> None:
        self.client._waiting.discard(self.correlation_id)
        self._closed = True
        raise LockstepError(text)

    def poll(self, handler: Callable[[memoryview, Any], Any], limit: int = 10) -> int:
        if self.replay is None:
            self.advance()
            return 0
        return self.replay.poll(handler, limit)

    @property
    def position(self) -> int:
        return self.replay.position if self.replay is not None else -1

    @property
    def is_done(self) -> bool:
        return self.replay is not None and self.replay.is_done

    @property
    def closed(self) -> bool:
        """Closed, or failed (the error was raised): nothing more comes."""
        return self._closed or (self.replay is not None and self.replay.closed)

    def close(self) -> None:
        if self.replay is not None:
            self.replay.close()
        elif not self._closed:
            self._closed = True
            self.client._waiting.discard(self.correlation_id)
            if self._request is None:  # sent: the server may have started it
                self.client._control.offer(StopReplay.encode(correlation_id=self.correlation_id, replay_session_id=-1))


class Replay(Closing):
    """One replay being received: `poll(handler, limit)` hands over messages with `header.position`
    their position in the recording; `is_done` once the stop position (end of stream) is
    reached; `close()` tells the server to stop and unsubscribes."""

    def __init__(self, client: ReplayClient, correlation_id: int, replay_session_id: int, recording_id: int,
                 start_position: int, stop_position: int | None, subscription: Any) -> None:
        self.client = client
        self.correlation_id = correlation_id
        self.replay_session_id = replay_session_id
        self.recording_id = recording_id
        self.start_position = start_position
        self.stop_position = stop_position
        self.subscription = subscription
        self._image: Any = None
        self._position = start_position
        self._lost: tuple[int, int] | None = None
        self._ended = False
        self._ended_early_at: float | None = None
        subscription.on_unavailable_image = self._on_unavailable

    def _on_unavailable(self, image: Any) -> None:
        if image is self._image:
            self._position = image.position
            if image.is_end_of_stream:
                self._ended = True
            else:
                self._lost = (image.position, image.end_of_stream_position)
            self._image = None

    def poll(self, handler: Callable[[memoryview, Any], Any], limit: int = 10) -> int:
        """Up to `limit` messages to `handler(data, header)`; returns how many. Raises the
        server's ReplayError (LockstepError) when the session failed, ImageLostError when the
        stream went away before its end."""
        if self._closed:
            raise LockstepError(f"replay {self.replay_session_id}: closed")
        n = self.subscription.poll(handler, limit)
        if self._image is None and not self._ended:
            images = self.subscription.images if hasattr(self.subscription, "images") else []
            self._image = images[0] if images else None
        if self._image is not None:
            self._position = self._image.position
            if self._image.is_end_of_stream:
                self._ended = True
        if n == 0:
            self.client.poll_responses()
            error = self.client._error_for(self.correlation_id)
            if error is not None:
                raise LockstepError(f"replay {self.replay_session_id} of recording {self.recording_id} at "
                                    f"position {self._position}: {error}")
            if self._lost is not None and not self.is_done:
                raise ImageLostError(self.client.response_channel, self.subscription.stream_id,
                                     self.replay_session_id, self._position,
                                     self.stop_position if self.stop_position is not None else self._position,
                                     "the replay stream went away before its end")
            if self._ended and self.stop_position is not None and self._position < self.stop_position:
                now = time.monotonic()  # (the server's ReplayError, if any, may still be on its way)
                if self._ended_early_at is None:
                    self._ended_early_at = now
                if now - self._ended_early_at < _ERROR_GRACE_S:
                    return 0
                raise LockstepError(f"replay {self.replay_session_id} of recording {self.recording_id}: the server "
                                    f"ended the stream at position {self._position}, before the stop position "
                                    f"{self.stop_position}")
        return n

    @property
    def position(self) -> int:
        """The position in the recording up to which messages have been handed over."""
        if self._image is not None and not self._image.closed:
            self._position = self._image.position
        return self._position

    @property
    def is_done(self) -> bool:
        """The stop position is reached; without one (following), the server ended the stream
        (end of stream: the recording stopped, or the server closed). A stream that ends short
        of the stop position is not done: poll raises."""
        if self.stop_position is not None:
            return self.position >= self.stop_position
        return self._ended

    def close(self) -> None:
        """Tell the server to stop (when not done) and unsubscribe."""
        super().close()

    def _teardown(self) -> None:  # (close())
        try:
            if not self.is_done:
                self.client._stop(self)
            else:
                self.client._waiting.discard(self.correlation_id)
                self.client._responses.pop(self.correlation_id, None)
        finally:
            self.subscription.close()

    def __repr__(self) -> str:
        return (f"Replay(session={self.replay_session_id}, recording={self.recording_id}, position={self.position}, "
                f"stop={self.stop_position}, done={self.is_done})")

