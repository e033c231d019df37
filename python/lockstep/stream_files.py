"""Where a stream's log buffers live in a lockstep directory, and how they are named:
`<stream>-shared.logbuffer` (one for all shared publishers) and
`<stream>-<session>.logbuffer` (one per exclusive publication)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["shared_log_path", "exclusive_log_path", "stream_logs"]

_NAME = re.compile(r"^(-?\d+)-(shared|-?\d+)\.logbuffer$")


def shared_log_path(dir: Path, stream_id: int) -> Path:
    return dir / f"{stream_id}-shared.logbuffer"


def exclusive_log_path(dir: Path, stream_id: int, session_id: int) -> Path:
    return dir / f"{stream_id}-{session_id}.logbuffer"


def stream_logs(dir: Path, stream_id: int) -> list[Path]:
    """The log buffer files of a stream present now."""
    found = []
    for entry in dir.glob(f"{stream_id}-*.logbuffer"):
        m = _NAME.match(entry.name)
        if m and int(m.group(1)) == stream_id:
            found.append(entry)
    return sorted(found)
