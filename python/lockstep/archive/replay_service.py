"""The archive's replay service over Aeron: a `ReplayServer` on the archive's host serves
recordings to `ReplayClient`s on other hosts (the manner of Aeron Archive's replay).

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

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import codec
from ..errors import CodecError, ImageLostError, LockstepError
from ..transport.idle import IdleStrategy, run_agent
from .archive import Archive
from .catalog import RecordingDescriptor
from .reader import RecordingReader
from .segments import BEGIN, END, FRAME_HEADER, PAD, SegmentMaps, align, frame_problem

__all__ = [
    "CONTROL_RESPONSE_STREAM_ID", "CONTROL_STREAM_ID", "ERROR_CODES", "ReplayClient", "ReplayError",
    "ReplayOk", "Replay", "ReplayServer", "SCHEMA", "StartReplay", "StopReplay",
]

log = logging.getLogger("lockstep.archive.replay_service")

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
_POSITION_PARAMS = ("term-length", "mtu", "init-term-id", "term-id", "term-offset", "session-id")


# -- channel URIs -----------------------------------------------------------------------------

def channel_with(channel: str, drop: tuple[str, ...] = (), **params: Any) -> str:
    """`channel` with `params` set (keys with '_' written as '-'), first dropping `drop` keys."""
    base, sep, query = channel.partition("?")
    items = [kv for kv in query.split("|") if kv] if sep else []
    names = {k.replace("_", "-") for k in params} | set(drop)
    kept = [kv for kv in items if kv.partition("=")[0] not in names]
    kept += [f"{k.replace('_', '-')}={v}" for k, v in params.items()]
    return f"{base}?{'|'.join(kept)}" if kept else base


def replay_channel_params(desc: RecordingDescriptor, position: int, session_id: int) -> dict[str, int]:
    """The channel parameters of an exclusive publication whose next message starts at
    stream position `position` of recording `desc` (as Aeron Archive's replay computes them)."""
    shift = desc.term_length.bit_length() - 1
    term_id = (desc.initial_term_id + (position >> shift)) & 0xFFFFFFFF
    return {
        "term_length": desc.term_length,
        "mtu": desc.mtu,
        "init_term_id": desc.initial_term_id,
        "term_id": term_id - (1 << 32) if term_id >= 1 << 31 else term_id,
        "term_offset": position & (desc.term_length - 1),
        "session_id": session_id,
    }


def message_boundary_problem(archive_dir: Path, desc: RecordingDescriptor, position: int) -> str | None:
    """Why `position` is not where a message starts in the recording's retained frames (walked
    frame by frame from the start of its term, or of the recording), or None when it is."""
    if not desc.start_position <= position <= desc.stop_position:
        return (f"start position {position} is outside recording {desc.recording_id}'s retained range "
                f"[{desc.start_position}, {desc.stop_position}]")
    if position % 32:
        return f"start position {position} is not a frame boundary (a multiple of 32)"
    mask = desc.term_length - 1
    walk = max(desc.start_position, position - (position & mask))
    maps = SegmentMaps(archive_dir, desc)
    previous_flags: int | None = None  # of the frame before `position` (None: none in this term)
    try:
        while walk < position:
            path, view, offset = maps.get(walk)  # type: ignore[misc]
            h = FRAME_HEADER.unpack_from(view, offset)
            problem = frame_problem(desc, walk, h)
            if problem:
                return f"recording {desc.recording_id}: frame at position {walk}: {problem}"
            previous_flags = 0xC0 if h[3] == PAD else h[2]
            walk += align(h[0])
        if walk != position:
            return (f"start position {position} is inside a frame of recording {desc.recording_id} "
                    f"(the frame from {walk - align(h[0])} to {walk})")
        if position < desc.stop_position:
            path, view, offset = maps.get(position)  # type: ignore[misc]
            h = FRAME_HEADER.unpack_from(view, offset)
            problem = frame_problem(desc, position, h)
            if problem:
                return f"recording {desc.recording_id}: frame at position {position}: {problem}"
            if h[3] != PAD and not h[2] & BEGIN:
                return (f"start position {position} is inside a fragmented message of recording "
                        f"{desc.recording_id} (not its first fragment)")
        elif previous_flags is not None and not previous_flags & END:
            return (f"start position {position} is inside a fragmented message of recording "
                    f"{desc.recording_id} (after a fragment that is not the last)")
    finally:
        maps.close()
    return None


def _text(value: Any) -> str:
    return bytes(value).rstrip(b"\0").decode(errors="replace")


def _clip(text: str, limit: int = MAX_TEXT_LENGTH) -> bytes:
    data = text.encode()
    return data if len(data) <= limit else data[:limit - 3].decode(errors="ignore").encode() + b"..."


# -- the server -------------------------------------------------------------------------------

class _RequestError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class _Session:
    """One replay: answer on the response publication, then the recording's messages on the
    replay publication, from `position` up to `stop` (None: following)."""

    replay_session_id: int
    correlation_id: int
    response_channel: str
    response_stream_id: int
    replay_stream_id: int
    response: Any
    created: float
    reply: bytes = b""
    state: str = "answering"     # answering -> connecting -> replaying -> done; or failing -> done
    recording_id: int = -1
    desc: RecordingDescriptor | None = None
    reader: RecordingReader | None = None
    publication: Any = None
    stop: int | None = None
    position: int = 0
    deadline: float = 0.0
    disconnected_since: float | None = None
    pending: collections.deque = field(default_factory=collections.deque)
    next_refresh: float = 0.0
    messages: int = 0
    reason: str = ""


class ReplayServer:
    """Serves replays of the recordings in `archive_dir` (an `Archive` directory; default
    `default_archive_dir()`) to clients that send StartReplay/StopReplay on `control_channel`
    / `control_stream_id`, through `aeron` (a `lockstep.aeron.Aeron` client).

    An agent: `do_work()` (one duty cycle, returns the work done) or `run(stop, idle)`.
    Sessions are serviced round-robin, at most `batch` messages each per cycle; back-pressure
    is retried on the next cycle. A session ends when its stop position is sent, on
    StopReplay, or when its client is gone: a publication not connected within
    `connect_timeout_s`, or disconnected for longer than `disconnect_timeout_s`. At most
    `max_sessions` at once (more: ReplayError TOO_MANY_SESSIONS). A following session (stop
    -1 of an active recording) checks for new data every `follow_interval_s` once caught up
    (the recorder publishes its progress in the catalog every 100 ms by default). One
    session's failure is logged (`lockstep.archive.replay_service`), answered with a
    ReplayError when possible, and never stops the others or the server."""

    def __init__(self, archive_dir: str | os.PathLike[str] | None = None, *, aeron: Any, control_channel: str,
                 control_stream_id: int = CONTROL_STREAM_ID, max_sessions: int = 16,
                 connect_timeout_s: float = 5.0, disconnect_timeout_s: float = 2.0,
                 follow_interval_s: float = 0.005, batch: int = 64) -> None:
        if max_sessions < 1 or batch < 1 or connect_timeout_s <= 0 or disconnect_timeout_s < 0:
            raise LockstepError(f"ReplayServer: expected max_sessions >= 1, batch >= 1, connect_timeout_s > 0, "
                                f"disconnect_timeout_s >= 0; found {max_sessions}, {batch}, {connect_timeout_s}, "
                                f"{disconnect_timeout_s}")
        self.archive = Archive(archive_dir)
        self.aeron = aeron
        self.control_channel = control_channel
        self.control_stream_id = control_stream_id
        self.max_sessions = max_sessions
        self.connect_timeout_s = connect_timeout_s
        self.disconnect_timeout_s = disconnect_timeout_s
        self.follow_interval_s = follow_interval_s
        self.batch = batch
        self.sessions: dict[int, _Session] = {}
        self.ended: collections.deque[tuple[int, str]] = collections.deque(maxlen=256)  # (session id, why)
        self.stats = collections.Counter[str]()
        self._next_session_id = int.from_bytes(os.urandom(3), "little") + 1
        self._order: collections.deque[int] = collections.deque()
        self._closed = False
        self._control = aeron.add_subscription(control_channel, control_stream_id)

    # -- the duty cycle ------------------------------------------------------------------------

    def do_work(self) -> int:
        """Read requests, then give every session a turn. Returns the work done."""
        if self._closed:
            return 0
        work = self._control.poll(self._on_request, 10)
        for _ in range(len(self._order)):
            sid = self._order[0]
            self._order.rotate(-1)
            session = self.sessions.get(sid)
            if session is None:
                continue
            try:
                work += self._service(session)
            except Exception as e:  # this session only
                self._fail(session, REPLAY_FAILED, f"replay session {sid}: {e}", error=e)
            if session.state == "done":
                self._end(session)
        return work

    def run(self, stop: threading.Event | Callable[[], bool] | None = None, idle: IdleStrategy | None = None) -> None:
        """Call do_work until `stop`, idling with `idle` (default: a backoff) between idle cycles."""
        run_agent(self.do_work, stop, idle)

    # -- requests --------------------------------------------------------------------------------

    def _on_request(self, data: memoryview, header: Any) -> None:
        try:
            msg = SCHEMA.decode(data)
        except CodecError as e:
            self.stats["malformed"] += 1
            log.warning("replay server %s: dropped a message that is not a request: %s", self.control_channel, e)
            return
        if msg.type is StartReplay:
            self._start(msg)
        elif msg.type is StopReplay:
            self._stop_request(int(msg.correlation_id), int(msg.replay_session_id))
        else:
            self.stats["malformed"] += 1
            log.warning("replay server %s: dropped a %s (not a request)", self.control_channel, msg.type.name)

    def _start(self, msg: Any) -> None:
        correlation_id = int(msg.correlation_id)
        try:
            channel = _text(msg.response_channel)
        except Exception:
            channel = ""
        self.stats["requests"] += 1
        response_stream_id = int(msg.control_response_stream_id)
        if not channel.startswith("aeron:"):
            self.stats["malformed"] += 1
            log.warning("replay server: request %d: response channel %r is not an Aeron channel: dropped",
                        correlation_id, channel)
            return
        try:
            response = self.aeron.add_publication(channel, response_stream_id)
        except Exception as e:
            self.stats["malformed"] += 1
            log.warning("replay server: request %d: cannot answer on %s stream %d: %s", correlation_id, channel,
                        response_stream_id, e)
            return
        sid = self._next_session_id
        self._next_session_id = (self._next_session_id + 1) & 0x7FFFFFFF or 1
        session = _Session(sid, correlation_id, channel, response_stream_id, int(msg.replay_stream_id), response,
                           time.monotonic())
        session.deadline = session.created + self.connect_timeout_s
        self.sessions[sid] = session
        self._order.append(sid)
        try:
            self._open(session, msg)
        except _RequestError as e:
            self._refuse(session, e.code, e.text)
        except Exception as e:
            self._refuse(session, REPLAY_FAILED, f"{type(e).__name__}: {e}")

    def _open(self, session: _Session, msg: Any) -> None:
        """Validate the request, open the reader and the replay publication; ReplayOk to send."""
        active = sum(1 for s in self.sessions.values() if s.state not in ("failing", "done") and s is not session)
        if active >= self.max_sessions:
            raise _RequestError(TOO_MANY_SESSIONS, f"too many replay sessions ({self.max_sessions} at most): "
                                                   f"retry later")
        stream_id, recording_id = int(msg.stream_id), int(msg.recording_id)
        start, stop = int(msg.start_position), int(msg.stop_position)
        if session.replay_stream_id <= 0 or session.replay_stream_id == session.response_stream_id:
            raise _RequestError(MALFORMED, f"replay stream id {session.replay_stream_id}: expected > 0 and not the "
                                           f"control response stream {session.response_stream_id}")
        if start < -1 or stop < -1:
            raise _RequestError(MALFORMED, f"positions: expected -1 or >= 0, found start {start} stop {stop}")
        recordings = self.archive.recordings()
        if recording_id == -1:
            mine = [d for d in recordings if d.stream_id == stream_id and d.state != "invalid"]
            if not mine:
                raise _RequestError(NO_RECORDING, f"no recording of stream {stream_id} in {self.archive.dir}")
            desc = mine[-1]
        else:
            found = [d for d in recordings if d.recording_id == recording_id]
            if not found or found[0].state == "invalid":
                raise _RequestError(NO_RECORDING, f"no recording {recording_id} in {self.archive.dir}")
            desc = found[0]
        start = desc.start_position if start == -1 else start
        problem = message_boundary_problem(self.archive.dir, desc, start)
        if problem:
            raise _RequestError(BAD_POSITION, f"{problem}: expected a message boundary")
        if stop != -1 and stop < start:
            raise _RequestError(BAD_POSITION, f"stop position {stop} is before the start position {start}")
        if stop != -1 and desc.state != "active" and stop > desc.stop_position:
            raise _RequestError(BAD_POSITION, f"stop position {stop} is beyond recording {desc.recording_id}'s "
                                              f"stop position {desc.stop_position}")
        if stop == -1 and desc.state != "active":
            stop = desc.stop_position  # nothing more will come: replay to the end
        session.desc, session.recording_id, session.position = desc, desc.recording_id, start
        session.stop = None if stop == -1 else stop
        session.reader = self.archive.reader(desc.recording_id, start, session.stop)
        params = replay_channel_params(desc, start, session.replay_session_id)
        channel = channel_with(session.response_channel, _POSITION_PARAMS, **params)
        session.publication = self.aeron.add_exclusive_publication(channel, session.replay_stream_id)
        if session.publication.position != start:
            raise _RequestError(REPLAY_FAILED, f"the replay publication starts at position "
                                               f"{session.publication.position}, expected {start}")
        session.reply = ReplayOk.encode(correlation_id=session.correlation_id,
                                        replay_session_id=session.replay_session_id,
                                        recording_id=desc.recording_id, start_position=start,
                                        stop_position=-1 if session.stop is None else session.stop)
        log.info("replay session %d: recording %d from %d to %s on %s stream %d", session.replay_session_id,
                 desc.recording_id, start, session.stop if session.stop is not None else "live",
                 session.response_channel, session.replay_stream_id)

    def _refuse(self, session: _Session, code: int, text: str) -> None:
        self.stats["refused"] += 1
        log.info("replay request %d refused: %s", session.correlation_id, text)
        self._answer_error(session, code, text)

    def _answer_error(self, session: _Session, code: int, text: str) -> None:
        """Send ReplayError, then end the session (its replay publication, if any, closes only
        after the error is sent, so the client tends to see the reason before the end of stream)."""
        session.reply = ReplayError.encode(correlation_id=session.correlation_id, code=code, text=_clip(text))
        session.state = "failing"
        session.reason = text
        session.deadline = time.monotonic() + self.connect_timeout_s

    def _stop_request(self, correlation_id: int, replay_session_id: int) -> None:
        for session in self.sessions.values():
            if session.correlation_id == correlation_id and replay_session_id in (-1, session.replay_session_id):
                session.reason = "stopped by the client"
                session.state = "done"

    # -- sessions ----------------------------------------------------------------------------------

    def _service(self, session: _Session) -> int:
        now = time.monotonic()
        if session.state in ("answering", "failing"):
            if not session.response.is_connected:
                if now > session.deadline:
                    session.reason = f"the client's response channel did not connect within {self.connect_timeout_s} s"
                    session.state = "done"
                return 0
            result = session.response.offer(session.reply)
            if result < 0:
                if result in (_CLOSED, _MAX_POSITION_EXCEEDED):
                    session.reason = f"response publication: offer status {result}"
                    session.state = "done"
                return 0
            if session.state == "failing":
                session.state = "done"
            else:
                session.state = "connecting"
                session.deadline = now + self.connect_timeout_s
            return 1
        if session.state == "connecting":
            if session.publication.is_connected:
                session.state = "replaying"
                return 1
            if now > session.deadline:
                session.reason = f"the client did not subscribe to the replay within {self.connect_timeout_s} s"
                session.state = "done"
            return 0
        if session.state == "replaying":
            return self._replay(session, now)
        return 0

    def _replay(self, session: _Session, now: float) -> int:
        pub = session.publication
        if not pub.is_connected:
            if session.disconnected_since is None:
                session.disconnected_since = now
            elif now - session.disconnected_since > self.disconnect_timeout_s:
                session.reason = f"the client went away (disconnected for over {self.disconnect_timeout_s} s)"
                session.state = "done"
            return 0
        session.disconnected_since = None
        work = 0
        pending = session.pending
        while pending:  # messages read earlier that met back-pressure
            data, reserved, position = pending[0]
            if not self._offer(session, data, reserved, position):
                return work
            pending.popleft()
            work += 1
        reader = session.reader
        assert reader is not None
        caught_up = reader.position >= reader.limit
        if caught_up and reader.following and now < session.next_refresh:
            return work

        def handler(data: memoryview, header: Any) -> None:
            if pending or not self._offer(session, data, header.reserved_value, header.position):
                pending.append((bytes(data), header.reserved_value, header.position))

        before = reader.position
        n = reader.poll(handler, self.batch)
        work += n
        if n == 0 and reader.position == before:
            if not pending and not reader.following:
                session.reason = "stop position reached"
                session.state = "done"
            else:
                session.next_refresh = now + self.follow_interval_s
        return work

    def _offer(self, session: _Session, data: Any, reserved_value: int, position: int) -> bool:
        """Offer one message; True when sent (at exactly its recorded position), False on
        back-pressure; raises when the publication is closed or the position differs."""
        result = session.publication.offer(data, reserved_value)
        if result > 0:
            if result != position:
                raise LockstepError(f"replayed message of recording {session.recording_id} went to position "
                                    f"{result}, expected its recorded position {position}: replay stopped")
            session.position = result
            session.messages += 1
            return True
        if result in (_BACK_PRESSURED, _ADMIN_ACTION, _NOT_CONNECTED):
            return False
        raise LockstepError(f"replay publication of session {session.replay_session_id}: offer status {result} "
                            f"at position {session.position}")

    def _fail(self, session: _Session, code: int, text: str, error: BaseException | None = None) -> None:
        self.stats["failed"] += 1
        log.warning("%s", text, exc_info=None if isinstance(error, LockstepError) else error)
        if session.state in ("answering", "failing", "done"):
            session.state = "done"
            session.reason = text
            return
        self._answer_error(session, code, text)  # answered on the response channel, then ended

    def _release_replay(self, session: _Session) -> None:
        if session.reader is not None:
            session.reader.close()
            session.reader = None
        if session.publication is not None:
            pub, session.publication = session.publication, None
            try:
                pub.close()  # end of stream for the client
            except Exception as e:
                log.warning("replay session %d: closing its publication: %s", session.replay_session_id, e)

    def _end(self, session: _Session) -> None:
        self._release_replay(session)
        try:
            session.response.close()
        except Exception as e:
            log.warning("replay session %d: closing its response publication: %s", session.replay_session_id, e)
        self.stats["ended"] += 1
        self.ended.append((session.replay_session_id, session.reason))
        try:
            self._order.remove(session.replay_session_id)
        except ValueError:
            pass
        self.sessions.pop(session.replay_session_id, None)  # last: `sessions` empty means all ended
        log.info("replay session %d ended at position %d (%d messages): %s", session.replay_session_id,
                 session.position, session.messages, session.reason)

    # -- life cycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """End every session (their publications close: end of stream) and unsubscribe."""
        if self._closed:
            return
        self._closed = True
        for session in list(self.sessions.values()):
            session.reason = session.reason or "server closed"
            self._end(session)
        self._control.close()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ReplayServer({str(self.archive.dir)!r}, control_channel={self.control_channel!r}, "
                f"sessions={len(self.sessions)})")


# -- the client ---------------------------------------------------------------------------------

class ReplayClient:
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
        self._closed = False
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
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        idle = _Backoff()
        while not self._control.is_connected:
            if time.monotonic() > deadline:
                raise LockstepError(f"{self.control_channel} stream {self.control_stream_id}: no replay server "
                                    f"connected within {timeout} s")
            idle()
        correlation_id = self._next_correlation_id
        self._next_correlation_id += 1
        replay_stream_id = self._next_stream_id
        self._next_stream_id += 1
        request = StartReplay.encode(correlation_id=correlation_id, recording_id=recording_id,
                                     start_position=start_position, stop_position=stop_position,
                                     stream_id=stream_id, control_response_stream_id=self.response_stream_id,
                                     replay_stream_id=replay_stream_id, response_channel=self.response_channel.encode())
        self._waiting.add(correlation_id)
        try:
            idle = _Backoff()
            while (result := self._control.offer(request)) < 0:
                if result in (_CLOSED, _MAX_POSITION_EXCEEDED) or time.monotonic() > deadline:
                    raise LockstepError(f"{self.control_channel} stream {self.control_stream_id}: cannot send the "
                                        f"replay request (offer status {result})")
                idle()
            idle = _Backoff()
            while correlation_id not in self._responses:
                if time.monotonic() > deadline:
                    raise LockstepError(f"{self.control_channel}: no answer from the replay server on "
                                        f"{self.response_channel} stream {self.response_stream_id} within {timeout} s")
                idle(self.poll_responses())
            answer = self._responses.pop(correlation_id)
        finally:
            self._waiting.discard(correlation_id)
        if answer.type is ReplayError:
            raise LockstepError(f"replay server at {self.control_channel}: {_text(answer.text)} "
                                f"({ERROR_CODES.get(int(answer.code), 'error')} {int(answer.code)})")
        session_id = int(answer.replay_session_id)  # (in 1..2^31-1: the replay publication's session id)
        channel = channel_with(self.response_channel, ("session-id",), session_id=session_id)
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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._control.close()
        self._responses_sub.close()

    def __enter__(self) -> ReplayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Replay:
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
        self._closed = False
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
        if self._closed:
            return
        self._closed = True
        try:
            if not self.is_done:
                self.client._stop(self)
            else:
                self.client._waiting.discard(self.correlation_id)
                self.client._responses.pop(self.correlation_id, None)
        finally:
            self.subscription.close()

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Replay(session={self.replay_session_id}, recording={self.recording_id}, position={self.position}, "
                f"stop={self.stop_position}, done={self.is_done})")


class _Backoff:
    """Waiting in a client call: yield, then sleeps doubling to 1 ms (never a busy spin)."""

    def __init__(self) -> None:
        self.sleep = 0.0

    def __call__(self, work: int = 0) -> None:
        if work:
            self.sleep = 0.0
            return
        time.sleep(self.sleep)
        self.sleep = min(self.sleep * 2 if self.sleep else 0.00005, 0.001)
