"""Segment files of a recording: `<recording_id>-<segment_base_position>.rec`, each
`segment_length` bytes, holding the frames exactly as they were in the term at file offset
`position - segment_base_position` (Aeron Archive's layout). Here: naming, position
arithmetic, frame-header validation, and read-only mapping of segments."""

from __future__ import annotations

import mmap
import os
import re
import struct
from typing import Any, Literal, overload
from pathlib import Path

from .._native import ffi, lib
from ..errors import FileFormatError
from ..transport.mapped import open_regular, os_error
from .catalog import RecordingDescriptor

__all__ = [
    "DATA",
    "FRAME_HEADER",
    "PAD",
    "SegmentMaps",
    "align",
    "frame_problem",
    "recorded_term",
    "term_error",
    "parse_segment_name",
    "segment_base",
    "segment_name",
]

FRAME_HEADER = struct.Struct("<iBBhiiiiq")  # length, version, flags, type, term offset, session, stream, term id, reserved
HEADER_LENGTH = 32
PAD, DATA = 0, 1
BEGIN, END = 0x80, 0x40
_NAME = re.compile(r"^(\d+)-(\d+)\.rec$")


def align(n: int) -> int:
    return (n + 31) & ~31


def segment_name(recording_id: int, base: int) -> str:
    return f"{recording_id}-{base}.rec"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(recording id, segment base position) of a segment file name, or None."""
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def segment_base(start_position: int, position: int, term_length: int, segment_length: int) -> int:
    """Base position of the segment holding the frame at `position` (Aeron's rule: segments
    count from the base of the recording's first term)."""
    start_term_base = start_position - (start_position & (term_length - 1))
    return start_term_base + ((position - start_term_base) // segment_length) * segment_length


def term_id_at(desc: RecordingDescriptor, position: int) -> int:
    shift = desc.term_length.bit_length() - 1
    t = (desc.initial_term_id + (position >> shift)) & 0xFFFFFFFF
    return t - (1 << 32) if t >= 1 << 31 else t


def recorded_term(desc: RecordingDescriptor) -> Any:
    """The C term reader's descriptor (`ls_term_t *`) for the terms of a recording: its term
    length, mtu, session and stream (one session of one stream); buffer, begin position and
    term id are set per term read."""
    term = ffi.new("ls_term_t *")
    term.term_length, term.mtu_length = desc.term_length, desc.mtu
    term.recorded = True
    term.session_id, term.stream_id = desc.session_id, desc.stream_id
    return term


def term_error() -> str:
    """What the C term reader found wrong (its message less the "frame at term T offset O: "
    it starts with: the callers name the file offset and position instead)."""
    return ffi.string(lib.ls_errmsg()).decode("utf-8", "replace").split(": ", 1)[-1]


def frame_problem(desc: RecordingDescriptor, position: int, view: memoryview, offset: int) -> str | None:
    """What is wrong with the frame at `offset` of a segment's `view` (stream `position`) as a
    frame of this recording (the C term reader's check), or None. A zero length is "unwritten"."""
    length = int.from_bytes(view[offset:offset + 4], "little", signed=True)
    if length == 0:
        return "unwritten (length 0)"
    term = recorded_term(desc)
    term.term_id = term_id_at(desc, position)
    with ffi.from_buffer(view[offset:offset + HEADER_LENGTH]) as header:
        if lib.ls_term_check_frame(term, header, length, position & (desc.term_length - 1)) == 0:
            return None
    return term_error()


class SegmentMaps:
    """Read-only maps of one recording's segments, opened as positions need them (the most
    recent few are kept). Sizes are checked: a short segment is a FileFormatError."""

    def __init__(self, dir: Path, desc: RecordingDescriptor) -> None:
        self.dir = dir
        self.desc = desc
        self._maps: dict[int, tuple[Path, mmap.mmap, memoryview]] = {}

    def base(self, position: int) -> int:
        d = self.desc
        return segment_base(d.start_position, position, d.term_length, d.segment_length)

    def path(self, base: int) -> Path:
        return self.dir / segment_name(self.desc.recording_id, base)

    @overload
    def get(self, position: int, *, missing_ok: Literal[False] = False) -> tuple[Path, memoryview, int]: ...
    @overload
    def get(self, position: int, *, missing_ok: bool) -> tuple[Path, memoryview, int] | None: ...

    def get(self, position: int, *, missing_ok: bool = False) -> tuple[Path, memoryview, int] | None:
        """(segment path, view of the whole segment, file offset of `position`); with
        missing_ok, None when the segment is missing or not yet its full length (recovery)."""
        base = self.base(position)
        entry = self._maps.get(base)
        if entry is None:
            path = self.path(base)
            try:
                fd = open_regular(path, os.O_RDONLY)
            except FileNotFoundError:
                if missing_ok:
                    return None
                raise FileFormatError(path, f"missing: recording {self.desc.recording_id} needs this segment for "
                                            f"position {position}") from None
            try:
                size = os.fstat(fd).st_size
                if size != self.desc.segment_length and missing_ok:
                    return None
                if size != self.desc.segment_length:
                    raise FileFormatError(path, f"length: expected {self.desc.segment_length} bytes (the segment "
                                                f"length), found {size}: truncated at offset {size}"
                                          if size < self.desc.segment_length else
                                          f"length: expected {self.desc.segment_length} bytes, found {size}")
                try:
                    m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
                except OSError as e:
                    raise os_error(path, e, f"map {size} bytes of", needed=size) from e
            finally:
                os.close(fd)
            if len(self._maps) >= 2:
                self._drop(next(iter(self._maps)))
            entry = self._maps[base] = (path, m, memoryview(m))
        return entry[0], entry[2], position - base

    def _drop(self, base: int) -> None:
        path, m, view = self._maps.pop(base)
        view.release()
        try:
            m.close()
        except BufferError:
            pass  # a caller still holds a view: the map goes with it

    def close(self) -> None:
        for base in list(self._maps):
            self._drop(base)
