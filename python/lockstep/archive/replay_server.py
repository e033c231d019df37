"""The archive's replay service over Aeron: a `ReplayServer` on the archive's host serves
recordings to `lockstep.aeron.replay_client.ReplayClient`s on other hosts (the manner of Aeron
Archive's replay); the protocol is described there.

    # host 1, the archive's (its driver in dir1):
    with Aeron(dir1) as aeron, ReplayServer(aeron=aeron, control_channel="aeron:udp?endpoint=host1:40102") as server:
        server.run(stop_event)                               # or server.do_work() in your own loop
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

from .._closing import Closing
from ..aeron.channel import position_params, with_params
from ..aeron.replay_client import (BAD_POSITION, CONTROL_STREAM_ID, MALFORMED, NO_RECORDING, REPLAY_FAILED, SCHEMA,
                                   TOO_MANY_SESSIONS, ReplayError, ReplayOk, StartReplay, StopReplay, _clip, _text)
from ..errors import CodecError, LockstepError
from ..transport.idle import IdleStrategy, run_agent
from .archive import Archive
from .catalog import RecordingDescriptor
from .reader import RecordingReader
from .segments import BEGIN, END, FRAME_HEADER, PAD, SegmentMaps, align, frame_problem

__all__ = ["ReplayServer", "message_boundary_problem", "replay_channel_params"]

log = logging.getLogger("lockstep.archive.replay_server")

_NOT_CONNECTED, _BACK_PRESSURED, _ADMIN_ACTION, _CLOSED, _MAX_POSITION_EXCEEDED = -1, -2, -3, -4, -5
_POSITION_PARAMS = ("term-length", "mtu", "init-term-id", "term-id", "term-offset", "session-id")



def replay_channel_params(desc: RecordingDescriptor, position: int, session_id: int) -> dict[str, int]:
    """The channel parameters of an exclusive publication whose next message starts at
    stream position `position` of recording `desc` (as Aeron Archive's replay computes them)."""
    return {**position_params(position, term_length=desc.term_length, initial_term_id=desc.initial_term_id,
                              mtu=desc.mtu), "session_id": session_id}


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
            path, view, offset = maps.get(walk)
            h = FRAME_HEADER.unpack_from(view, offset)
            problem = frame_problem(desc, walk, view, offset)
            if problem:
                return f"recording {desc.recording_id}: frame at position {walk}: {problem}"
            previous_flags = 0xC0 if h[3] == PAD else h[2]
            walk += align(h[0])
        if walk != position:
            return (f"start position {position} is inside a frame of recording {desc.recording_id} "
                    f"(the frame from {walk - align(h[0])} to {walk})")
        if position < desc.stop_position:
            path, view, offset = maps.get(position)
            h = FRAME_HEADER.unpack_from(view, offset)
            problem = frame_problem(desc, position, view, offset)
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

# -- the server -------------------------------------------------------------------------------

class _NotRecordedYet(Exception):
    """The start position is past what the active recording holds yet: wait for the recorder."""


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
    state: str = "answering"     # [waiting ->] answering -> connecting -> replaying -> done; or failing -> done
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
    request: Any = None          # a StartReplay waiting for the recording to reach its start


class ReplayServer(Closing):
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
    session's failure is logged (`lockstep.archive.replay_server`), answered with a
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
        self._try_open(session, msg)

    def _try_open(self, session: _Session, msg: Any) -> None:
        try:
            self._open(session, msg)
        except _NotRecordedYet:
            if session.request is None:
                session.request, session.state = msg, "waiting"
                session.deadline = time.monotonic() + self.connect_timeout_s
            elif time.monotonic() > session.deadline:
                session.request = None
                self._refuse(session, BAD_POSITION, f"start position {int(msg.start_position)} was not recorded within "
                                                    f"{self.connect_timeout_s} s")
            return
        except _RequestError as e:
            session.request = None
            self._refuse(session, e.code, e.text)
            return
        except Exception as e:
            session.request = None
            self._refuse(session, REPLAY_FAILED, f"{type(e).__name__}: {e}")
            return
        if session.request is not None:
            session.request, session.state = None, "answering"
            session.deadline = time.monotonic() + self.connect_timeout_s

    def _open(self, session: _Session, msg: Any) -> None:
        """Validate the request, open the reader and the replay publication; ReplayOk to send."""
        active = sum(1 for s in self.sessions.values() if s.state not in ("failing", "done") and s is not session)
        if session.request is not None:
            active = 0  # (counted when it first came)
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
        if desc.state == "active" and start > desc.stop_position:
            raise _NotRecordedYet()  # (a reader that has live data the recorder is still writing)
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
        channel = with_params(session.response_channel, drop=_POSITION_PARAMS, **params)
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
        if session.state == "waiting":  # for the recording to reach the start position
            if now >= session.next_refresh:
                session.next_refresh = now + self.follow_interval_s
                self._try_open(session, session.request)
            return 0
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

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client, `DriverConnection`): every session ends (its
        streams went with the old driver; clients ask again) and requests are read anew."""
        for session in list(self.sessions.values()):
            session.reason = session.reason or "the media driver restarted"
            self._end(session)
        self._control.close()
        self.aeron = aeron
        self._control = aeron.add_subscription(self.control_channel, self.control_stream_id)

    # -- life cycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """End every session (their publications close: end of stream) and unsubscribe."""
        super().close()

    def _teardown(self) -> None:  # (close())
        for session in list(self.sessions.values()):
            session.reason = session.reason or "server closed"
            self._end(session)
        self._control.close()

    def __repr__(self) -> str:
        return (f"ReplayServer({str(self.archive.dir)!r}, control_channel={self.control_channel!r}, "
                f"sessions={len(self.sessions)})")


