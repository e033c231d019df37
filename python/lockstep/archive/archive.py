"""`Archive`: an archive directory (catalog + segment files + snapshots) seen by readers:
list recordings, read one as a subscription from any position to any position, replay one
onto a live stream, and repair recordings whose recorder died."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Protocol

from ..errors import LockstepError
from ..transport.idle import BackoffIdleStrategy, IdleStrategy
from ..transport.mapped import open_regular, resolve_dir, try_lock
from ..transport.stream_files import check_stream_id
from .catalog import Catalog, RecordingDescriptor, RecordingState, now_ns
from .reader import RecordingReader
from .segments import (
    SegmentMaps,
    align,
    frame_problem,
    parse_segment_name,
)

__all__ = ["ARCHIVE_SUBDIR", "Archive", "default_archive_dir", "recorder_lock_path"]

ARCHIVE_SUBDIR = "archive"


def default_archive_dir() -> Path:
    """`$LOCKSTEP_ARCHIVE_DIR`, else `$XDG_DATA_HOME/lockstep/archive`, else
    `~/.local/share/lockstep/archive`: on disk, so recordings outlast a reboot and cost no RAM."""
    env = os.environ.get("LOCKSTEP_ARCHIVE_DIR")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "lockstep" / ARCHIVE_SUBDIR


def recorder_lock_path(dir: Path, stream_id: int) -> Path:
    return dir / f"recorder-{check_stream_id(stream_id)}.lock"


class Offering(Protocol):
    """What `Archive.replay_onto` publishes on: a `Publication` (or an Aeron one)."""

    path: Path

    def offer(self, data: bytes, reserved_value: int = 0) -> int: ...


class Archive:
    """The recordings in `archive_dir` (by default `default_archive_dir()`, on disk)."""

    def __init__(self, archive_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(archive_dir) if archive_dir is not None else default_archive_dir()
        self.catalog = Catalog(self.dir)

    @classmethod
    def for_dir(cls, dir: str | os.PathLike[str] | None = None) -> Archive:
        """The archive kept inside a lockstep directory, `<dir>/archive` (`$LOCKSTEP_DIR` when
        None): for recordings made with `Recorder(dir, archive_dir=<dir>/archive)`."""
        return cls(resolve_dir(dir) / ARCHIVE_SUBDIR)

    # -- reading ----------------------------------------------------------------------------

    def recordings(self) -> list[RecordingDescriptor]:
        """Every recording in the catalog, oldest first ([] when there is no catalog yet)."""
        if self.dir.exists():
            resolve_dir(self.dir, create=False)  # ours, not a link, not world-writable
        return self.catalog.read()

    def recording(self, recording_id: int) -> RecordingDescriptor:
        """One recording's descriptor (LockstepError naming the catalog when unknown)."""
        for d in self.recordings():
            if d.recording_id == recording_id:
                return d
        raise LockstepError(f"{self.catalog.path}: no recording {recording_id}")

    def reader(self, recording_id: int, start: int | None = None, stop: int | None = None) -> RecordingReader:
        """Read a recording like a subscription: `.poll(handler, limit)`, `.messages()`,
        `.frames()`, from `start` (a frame boundary) up to `stop`."""
        return RecordingReader(self.dir, self.recording(recording_id), start, stop, catalog=self.catalog)

    def segment_files(self, recording_id: int) -> list[Path]:
        """The recording's segment files, by base position."""
        return [p for _, p in self._segments(recording_id)]

    def _segments(self, recording_id: int) -> list[tuple[int, Path]]:
        """(base position, file) of each of the recording's segments, by base position."""
        found = []
        for entry in self.dir.glob(f"{recording_id}-*.rec"):
            parsed = parse_segment_name(entry.name)
            if parsed and parsed[0] == recording_id:
                found.append((parsed[1], entry))
        return sorted(found)

    # -- replay onto a live stream ----------------------------------------------------------

    def replay_onto(self, recording_id: int, publication: Offering, start: int | None = None,
                    stop: int | None = None, *, idle: IdleStrategy | None = None, stall_timeout_s: float = 10.0) -> int:
        """Publish the recording's messages (start..stop) on a live `Publication`, waiting
        out back-pressure. Returns how many were published; LockstepError when the stream
        accepts nothing for `stall_timeout_s` (no subscriber, or one that stopped reading)."""
        idle = idle or BackoffIdleStrategy()
        count = 0
        with self.reader(recording_id, start, stop) as reader:
            for payload, header in reader.messages():
                deadline = None
                while True:
                    result = publication.offer(payload, header["reserved_value"])
                    if result > 0:
                        break
                    if result == -4:  # CLOSED
                        raise LockstepError(f"{publication.path}: publication closed during replay of recording "
                                            f"{recording_id} at position {header['position']}")
                    now = time.monotonic()
                    deadline = deadline or now + stall_timeout_s
                    if now > deadline:
                        raise LockstepError(
                            f"{publication.path}: replay of recording {recording_id} stalled at position "
                            f"{header['position']} (offer status {result} for {stall_timeout_s} s)")
                    idle.idle(0)
                idle.reset()
                count += 1
        return count

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, stream_id: int | None = None) -> list[RecordingDescriptor]:
        """Repair active recordings whose recorder is gone (its stream's lock is free): the stop
        position becomes the end of the last complete, valid frame in the segments; anything
        after it is zeroed; the recording is marked stopped. Returns the repaired ones."""
        repaired = []
        for desc in self.recordings():
            if desc.state != "active" or (stream_id is not None and desc.stream_id != stream_id):
                continue
            lock = try_lock(recorder_lock_path(self.dir, desc.stream_id))
            if lock is None:
                continue  # a recorder is running on that stream
            try:
                repaired.append(self.repair(desc))
            finally:
                os.close(lock)
        return repaired

    def repair(self, desc: RecordingDescriptor, *, state: RecordingState = "stopped") -> RecordingDescriptor:
        """Scan forward from the catalog's stop position (the caller holds the recorder lock)."""
        maps = SegmentMaps(self.dir, desc)
        position = desc.stop_position
        last_write_ns = desc.stop_timestamp
        try:
            while True:
                found = maps.get(position, missing_ok=True)
                if found is None:
                    break
                path, view, offset = found
                if frame_problem(desc, position, view, offset):
                    break  # unwritten, or a torn/garbled frame: the recording ends here
                position += align(int.from_bytes(view[offset:offset + 4], "little"))
                last_write_ns = max(last_write_ns, os.stat(path).st_mtime_ns)
        finally:
            maps.close()
        self._truncate_after(desc, position)
        fixed = dataclasses.replace(desc, stop_position=position, stop_timestamp=last_write_ns or now_ns(), state=state)
        self.catalog.update(fixed, sync=True)
        return fixed

    def _truncate_after(self, desc: RecordingDescriptor, position: int) -> None:
        """Zero the segment holding `position` from there on, and remove later segments, so
        nothing a dead recorder half wrote can be read as frames later."""
        maps = SegmentMaps(self.dir, desc)
        base = maps.base(position)
        for tmp in self.dir.glob(f".{desc.recording_id}-*.rec.*.tmp"):
            tmp.unlink(missing_ok=True)  # a segment a dead recorder was making
        for seg_base, path in self._segments(desc.recording_id):
            if seg_base > base:
                path.unlink()
            elif seg_base == base:
                fd = open_regular(path, os.O_RDWR)
                try:
                    os.ftruncate(fd, position - base)
                    os.ftruncate(fd, desc.segment_length)
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def __repr__(self) -> str:
        return f"Archive({str(self.dir)!r})"

