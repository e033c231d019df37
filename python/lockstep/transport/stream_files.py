"""Where a stream's log buffers live in a lockstep directory, and how they are named:
`<stream>-shared.logbuffer` (one for all shared publishers) and
`<stream>-<session>.logbuffer` (one per exclusive publication)."""

from __future__ import annotations

import operator
import re
from pathlib import Path

from ..errors import FileFormatError, InvalidArgumentError

__all__ = ["shared_log_path", "exclusive_log_path", "stream_logs", "check_stream_id", "check_log_name"]

_NAME = re.compile(r"^(-?\d+)-(shared|-?\d+)\.logbuffer$")


def check_stream_id(stream_id: int, what: str = "stream_id") -> int:
    """An int32 (file names are made from it: nothing else may get into a path)."""
    try:
        value = operator.index(stream_id)
    except TypeError:
        value = None
    if value is None or not -(1 << 31) <= value < 1 << 31:
        raise InvalidArgumentError(f"{what}: expected an int32, found {stream_id!r}")
    return value


def shared_log_path(dir: Path, stream_id: int) -> Path:
    return dir / f"{check_stream_id(stream_id)}-shared.logbuffer"


def exclusive_log_path(dir: Path, stream_id: int, session_id: int) -> Path:
    return dir / f"{check_stream_id(stream_id)}-{check_stream_id(session_id, 'session_id')}.logbuffer"


def stream_logs(dir: Path, stream_id: int) -> list[Path]:
    """The log buffer files of a stream present now."""
    check_stream_id(stream_id)
    found = []
    for entry in dir.glob(f"{stream_id}-*.logbuffer"):
        m = _NAME.match(entry.name)
        if m and int(m.group(1)) == stream_id:
            found.append(entry)
    return sorted(found)


def check_log_name(path: Path, stream_id: int, session_id: int) -> None:
    """A log is accepted only when its header matches its name: the stream, and the session of
    an exclusive log (a copied or planted file must not pass for another stream's)."""
    m = _NAME.match(path.name)
    if m is None:
        raise FileFormatError(path, "name: expected <stream>-shared.logbuffer or <stream>-<session>.logbuffer")
    if int(m.group(1)) != stream_id:
        raise FileFormatError(path, f"header stream id: expected {m.group(1)} (the file's name), found {stream_id}")
    if m.group(2) != "shared" and int(m.group(2)) != session_id:
        raise FileFormatError(path, f"header session id: expected {m.group(2)} (the file's name), found {session_id}")
