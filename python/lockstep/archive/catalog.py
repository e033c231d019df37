"""The archive's catalog: `archive.catalog`, a header then one fixed-size descriptor per
recording (recording id = index), each with a crc32, updated in place.

Layout (little endian). Header, 64 bytes: magic ``LSARCAT1``, int32 version (1), int32
header length (64), int32 descriptor length (128), zero padding. Descriptor, 128 bytes:

| offset | field | type |
|---|---|---|
| 0 | recording id | int64 |
| 8 | start position | int64 |
| 16 | stop position (end of the last complete frame recorded) | int64 |
| 24 | start timestamp (ns since the epoch) | int64 |
| 32 | stop timestamp (ns since the epoch, when the stop position was last written) | int64 |
| 40 | stream id, session id, initial term id, term length, segment length, mtu | int32 ×6 |
| 64 | state: 1 active (being recorded), 2 stopped, 3 invalid | int32 |
| 68 | reserved | int32 |
| 72 | channel (UTF-8, NUL padded: the recorded log file's name) | 48 bytes |
| 120 | reserved | uint32 |
| 124 | crc32 of bytes 0..123 | uint32 |

A new descriptor is appended under an exclusive `flock` of the catalog; afterwards only the
recorder of that recording (holding its stream's recorder lock) rewrites it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._closing import Closing
from ..errors import FileAccessError, FileFormatError, LockstepError
from ..transport.mapped import os_error

__all__ = ["ACTIVE", "CATALOG_FILE", "INVALID", "STOPPED", "Catalog", "RecordingDescriptor"]

CATALOG_FILE = "archive.catalog"
_MAGIC = b"LSARCAT1"
_VERSION = 1
_HEADER = struct.Struct("<8siii44s")
_HEADER_LENGTH = 64
_DESCRIPTOR = struct.Struct("<qqqqqiiiiiiii48sII")
_DESCRIPTOR_LENGTH = 128
assert _HEADER.size == _HEADER_LENGTH and _DESCRIPTOR.size == _DESCRIPTOR_LENGTH

ACTIVE, STOPPED, INVALID = 1, 2, 3
RecordingState = Literal["active", "stopped", "invalid"]  # a recording's state, by name
_STATE_NAMES: dict[int, RecordingState] = {ACTIVE: "active", STOPPED: "stopped", INVALID: "invalid"}
_STATE_CODES = {v: k for k, v in _STATE_NAMES.items()}
_MIN_TERM, _MAX_TERM = 1 << 16, 1 << 30
# What a NoSpaceError in the archive (catalog or segments) suggests.
SPACE_HINT = "free space there, or record into a larger filesystem (archive_dir=, --archive-dir)"


if TYPE_CHECKING:
    from typing_extensions import NotRequired, TypedDict, Unpack

    class NewRecording(TypedDict):
        """What Catalog.append takes: a RecordingDescriptor's fields but its id (the catalog's next)."""
        stream_id: int
        session_id: int
        start_position: int
        stop_position: int
        start_timestamp: int
        stop_timestamp: int
        term_length: int
        segment_length: int
        mtu: int
        initial_term_id: int
        state: RecordingState
        channel: NotRequired[str]


@dataclass(frozen=True)
class RecordingDescriptor:
    """One recording as the catalog describes it. Positions are stream positions; the
    recording holds the frames in [start_position, stop_position). Timestamps are ns since
    the epoch; `state` is "active" (a recorder is, or was until it died, writing it),
    "stopped" or "invalid"."""

    recording_id: int
    stream_id: int
    session_id: int
    start_position: int
    stop_position: int
    start_timestamp: int
    stop_timestamp: int
    term_length: int
    segment_length: int
    mtu: int
    initial_term_id: int
    state: RecordingState
    channel: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _pack(self) -> bytes:
        body = _DESCRIPTOR.pack(
            self.recording_id, self.start_position, self.stop_position, self.start_timestamp, self.stop_timestamp,
            self.stream_id, self.session_id, self.initial_term_id, self.term_length, self.segment_length, self.mtu,
            _STATE_CODES[self.state], 0, self.channel.encode()[:48], 0, 0)
        return body[:124] + struct.pack("<I", zlib.crc32(body[:124]))


def _unpack(path: Path, raw: bytes, offset: int, index: int) -> RecordingDescriptor:
    (recording_id, start, stop, start_ts, stop_ts, stream_id, session_id, initial_term_id, term_length,
     segment_length, mtu, state, _, channel, _, crc) = _DESCRIPTOR.unpack_from(raw, offset)
    where = f"descriptor {index} at offset {offset}"
    if zlib.crc32(raw[offset:offset + 124]) != crc:
        raise FileFormatError(path, f"{where}: crc32: expected {crc:08x}, found {zlib.crc32(raw[offset:offset + 124]):08x}")
    if recording_id != index:
        raise FileFormatError(path, f"{where}: recording id: expected {index}, found {recording_id}")
    if state not in _STATE_NAMES:
        raise FileFormatError(path, f"{where}: state: expected 1..3, found {state}")
    if not (_MIN_TERM <= term_length <= _MAX_TERM and term_length & (term_length - 1) == 0):
        raise FileFormatError(path, f"{where}: term length: expected a power of two in [64 KiB, 1 GiB], "
                                    f"found {term_length}")
    if segment_length < term_length or segment_length % term_length:
        raise FileFormatError(path, f"{where}: segment length: expected a multiple of the term length "
                                    f"{term_length}, found {segment_length}")
    if not (0 <= start <= stop) or start % 32 or stop % 32:
        raise FileFormatError(path, f"{where}: positions: expected 0 <= start <= stop, both multiples of 32, "
                                    f"found start {start} stop {stop}")
    if mtu < 64 or mtu % 32:
        raise FileFormatError(path, f"{where}: mtu: expected a multiple of 32 of at least 64, found {mtu}")
    return RecordingDescriptor(recording_id, stream_id, session_id, start, stop, start_ts, stop_ts, term_length,
                               segment_length, mtu, initial_term_id, _STATE_NAMES[state],
                               channel.rstrip(b"\0").decode(errors="replace"))


class Catalog(Closing):
    """The catalog file of an archive directory (read, validated; append and update)."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.path = dir / CATALOG_FILE
        self._fd: int | None = None

    # -- reading ----------------------------------------------------------------------------

    def read(self) -> list[RecordingDescriptor]:
        """Every descriptor, validated (FileFormatError naming the file and offset)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise os_error(self.path, e, "open") from e
        try:
            raw = b""
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                raw += chunk
        finally:
            os.close(fd)
        return self._parse(raw)

    def _parse(self, raw: bytes) -> list[RecordingDescriptor]:
        if len(raw) < _HEADER_LENGTH:
            raise FileFormatError(self.path, f"header at offset 0: truncated: expected {_HEADER_LENGTH} bytes, "
                                             f"found {len(raw)}")
        magic, version, header_length, descriptor_length, _ = _HEADER.unpack_from(raw)
        if magic != _MAGIC:
            raise FileFormatError(self.path, f"magic at offset 0: expected {_MAGIC!r}, found {magic!r}")
        if version != _VERSION or header_length != _HEADER_LENGTH or descriptor_length != _DESCRIPTOR_LENGTH:
            raise FileFormatError(self.path, f"header at offset 8: expected version {_VERSION}, lengths "
                                             f"{_HEADER_LENGTH}/{_DESCRIPTOR_LENGTH}, found {version}, "
                                             f"{header_length}/{descriptor_length}")
        body = len(raw) - _HEADER_LENGTH
        if body % _DESCRIPTOR_LENGTH:
            offset = _HEADER_LENGTH + body - body % _DESCRIPTOR_LENGTH
            raise FileFormatError(self.path, f"descriptor at offset {offset}: truncated: expected "
                                             f"{_DESCRIPTOR_LENGTH} bytes, found {body % _DESCRIPTOR_LENGTH}")
        return [_unpack(self.path, raw, _HEADER_LENGTH + i * _DESCRIPTOR_LENGTH, i)
                for i in range(body // _DESCRIPTOR_LENGTH)]

    def get(self, recording_id: int) -> RecordingDescriptor:
        for d in self.read():
            if d.recording_id == recording_id:
                return d
        raise LockstepError(f"{self.path}: no recording {recording_id}")

    # -- writing ----------------------------------------------------------------------------

    def _open_for_write(self) -> int:
        if self._fd is None:
            if not self.path.exists():
                try:
                    self._create()
                except OSError as e:
                    raise os_error(self.path, e, "create", needed=_HEADER_LENGTH, hint=SPACE_HINT) from e
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as e:
                raise os_error(self.path, e, "open for writing") from e
            st = os.fstat(self._fd)
            if st.st_uid != os.geteuid():
                os.close(self._fd)
                self._fd = None
                raise FileAccessError(f"{self.path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
        return self._fd

    def _create(self) -> None:
        """Write the header under a temporary name and link it: never seen half-made."""
        tmp = self.path.with_name(f".{CATALOG_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, _HEADER.pack(_MAGIC, _VERSION, _HEADER_LENGTH, _DESCRIPTOR_LENGTH, b""))
            os.fsync(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another recorder made it first
        finally:
            os.close(fd)
            os.unlink(tmp)

    def _pwrite(self, fd: int, data: bytes, offset: int, *, sync: bool = False) -> None:
        """pwrite (and fsync) one descriptor; a full filesystem is a NoSpaceError naming the catalog."""
        try:
            os.pwrite(fd, data, offset)
            if sync:
                os.fsync(fd)
        except OSError as e:
            raise os_error(self.path, e, "write", needed=len(data), hint=SPACE_HINT) from e

    def append(self, **fields: Unpack[NewRecording]) -> RecordingDescriptor:
        """Add a recording (its id is the next index) and return its descriptor."""
        fd = self._open_for_write()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, size, 0)
            self._parse(raw)  # never append after a damaged catalog
            recording_id = (size - _HEADER_LENGTH) // _DESCRIPTOR_LENGTH
            desc = RecordingDescriptor(recording_id=recording_id, **fields)
            self._pwrite(fd, desc._pack(), size)
            return desc
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def update(self, desc: RecordingDescriptor, *, sync: bool = False) -> None:
        """Rewrite a descriptor in place (one 128-byte write)."""
        fd = self._open_for_write()
        self._pwrite(fd, desc._pack(), _HEADER_LENGTH + desc.recording_id * _DESCRIPTOR_LENGTH, sync=sync)

    def _teardown(self) -> None:  # (close())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def now_ns() -> int:
    return time.time_ns()
