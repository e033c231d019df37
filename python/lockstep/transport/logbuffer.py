"""Aeron-format log buffer files: 3 term partitions + metadata. Opening validates the file
(ours or one written by a real Aeron media driver) in C before anything trusts it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .._closing import Closing, guarded
from .._native import c_error, ffi, lib
from ..errors import FileFormatError
from .mapped import MappedFile

__all__ = ["LogBuffer", "Frame", "FRAME_TYPES"]

DEFAULT_TERM_LENGTH = 1 << 20
DEFAULT_MTU_LENGTH = 1408
DEFAULT_PAGE_SIZE = 4096

FRAME_TYPES = {0: "PAD", 1: "DATA", 2: "NAK", 3: "SM", 4: "ERR", 5: "SETUP", 6: "RTTM", 7: "RES",
               8: "ATS_DATA", 9: "ATS_SETUP", 10: "ATS_SM", 11: "RSP_SETUP", -1: "EXT"}
_HEADER = struct.Struct("<iBBhiiiiq")  # length, version, flags, type, term offset, session, stream, term id, reserved
_HEADER_LENGTH = 32
_ALIGNMENT = 32
_INT32 = 1 << 32


def _term_count(term_id: int, initial_term_id: int) -> int:
    """term_id - initial_term_id with int32 wrap-around."""
    d = (term_id - initial_term_id) & (_INT32 - 1)
    return d - _INT32 if d >= 1 << 31 else d


@dataclass(frozen=True)
class Frame:
    """One frame as it lies in a term partition (what `lockstep dump` prints)."""

    partition: int
    offset: int
    position: int
    frame_length: int  # negative: claimed, not yet committed
    version: int
    flags: int
    type: int
    term_offset: int
    session_id: int
    stream_id: int
    term_id: int
    reserved_value: int
    payload: bytes  # a prefix of the payload (or all of it)

    @property
    def type_name(self) -> str:
        return FRAME_TYPES.get(self.type, str(self.type))


class LogBuffer(Closing):
    """A mapped log buffer file with its validated C descriptor."""

    def __init__(self, mapped: MappedFile, *, tailed: bool = True) -> None:
        """`tailed=False` for a media driver's image log, which keeps no tail counters."""
        self.file = mapped
        self.path = mapped.path
        self.tailed = tailed
        self._log = ffi.new("ls_logbuffer_t *")
        init = lib.ls_logbuffer_init if tailed else lib.ls_logbuffer_init_untailed
        if init(self._log, mapped.pointer, mapped.length) < 0:
            error = c_error(self.path)
            mapped.close()
            raise error

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> "LogBuffer":
        """Open and validate an existing log buffer (read-only, copy-on-write by default)."""
        return cls(MappedFile.open(Path(path), writable=writable))

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        term_length: int = DEFAULT_TERM_LENGTH,
        mtu_length: int = DEFAULT_MTU_LENGTH,
        session_id: int,
        stream_id: int,
        initial_term_id: int = 0,
        active_term_id: int | None = None,
        term_offset: int = 0,
        page_size: int = DEFAULT_PAGE_SIZE,
        correlation_id: int = 0,
    ) -> tuple["LogBuffer", bool]:
        """Create a fresh log at `path` (or open the one another process made first).
        Returns the log and whether this call created it."""
        length = lib.ls_logbuffer_file_length(term_length, page_size)
        if length < 0:
            raise c_error()

        def init(buf: np.ndarray) -> None:
            if lib.ls_logbuffer_format(
                ffi.from_buffer(buf), length, term_length, page_size, mtu_length, initial_term_id,
                initial_term_id if active_term_id is None else active_term_id, term_offset,
                session_id, stream_id, correlation_id,
            ) < 0:
                raise c_error(path)

        mapped, created = MappedFile.create_or_open(Path(path), length, init)
        return cls(mapped), created

    # -- descriptor ---------------------------------------------------------------------

    @property
    def c(self):
        """The `ls_logbuffer_t *` for the C core."""
        return self._log

    term_length = property(lambda self: self._log.term_length)
    mtu_length = property(lambda self: self._log.mtu_length)
    initial_term_id = property(lambda self: self._log.initial_term_id)
    session_id = property(lambda self: self._log.session_id)
    stream_id = property(lambda self: self._log.stream_id)
    max_payload_length = property(lambda self: self._log.max_payload_length)
    max_message_length = property(lambda self: self._log.max_message_length)

    @property
    @guarded
    def tail_position(self) -> int:
        """Where the next frame will be written."""
        return lib.ls_logbuffer_tail_position(self._log)

    @property
    @guarded
    def end_of_stream_position(self) -> int:
        """The position the publisher closed at (2**63 - 1 while open)."""
        return lib.ls_logbuffer_end_of_stream_position(self._log)

    @property
    @guarded
    def retained_start_position(self) -> int:
        """The earliest position whose frames are still intact."""
        return lib.ls_logbuffer_retained_start_position(self._log)

    def position(self, term_id: int, term_offset: int) -> int:
        return lib.ls_logbuffer_position(self._log, term_id, term_offset)

    # -- inspection ---------------------------------------------------------------------

    def frames(self, payload_prefix: int = 16) -> Iterator[Frame]:
        """Every frame in the written terms, oldest term first; zeroed gaps are skipped.
        A frame whose header cannot be right raises FileFormatError naming its offset."""
        view = self.file.memoryview()
        term_length = self.term_length
        terms = []
        for partition in range(3):
            raw_tail = lib.ls_logbuffer_raw_tail(self._log, partition)
            term_id = ((raw_tail >> 32) + (1 << 31)) % _INT32 - (1 << 31)
            count = _term_count(term_id, self.initial_term_id)
            if count >= 0:
                terms.append((count, partition, term_id, min(raw_tail & (_INT32 - 1), term_length)))
        try:
            for count, partition, term_id, tail in sorted(terms):
                base = partition * term_length
                offset = 0
                while offset < tail:
                    (length, version, flags, ftype, term_offset, session_id, stream_id, frame_term_id,
                     reserved) = _HEADER.unpack_from(view, base + offset)
                    if length == 0:
                        offset += _ALIGNMENT  # not written (or before a mid-term start)
                        continue
                    in_progress = length < 0  # claimed, not yet committed: -length bytes
                    length = -length if in_progress else length
                    where = f"frame at term {term_id} (partition {partition}) offset {offset}"
                    if length < _HEADER_LENGTH or offset + length > term_length:
                        raise FileFormatError(
                            self.path, f"{where}: length: expected {_HEADER_LENGTH}..{term_length - offset}, found {length}")
                    if ftype not in FRAME_TYPES:
                        raise FileFormatError(self.path, f"{where}: type: expected one of -1..11, found {ftype}")
                    # As the C reader checks: a DATA frame fits the mtu, and every frame
                    # knows where it is (else the walk would go on inside some payload).
                    if ftype == 1 and length > self.mtu_length:
                        raise FileFormatError(
                            self.path, f"{where}: DATA length: expected at most mtu {self.mtu_length}, found {length}")
                    if term_offset != offset:
                        raise FileFormatError(self.path, f"{where}: term offset field: expected {offset}, found {term_offset}")
                    payload_end = base + offset + length if ftype != 0 else base + offset + _HEADER_LENGTH
                    start = base + offset + _HEADER_LENGTH
                    yield Frame(
                        partition=partition, offset=offset,
                        position=(count * term_length) + offset,
                        frame_length=-length if in_progress else length, version=version, flags=flags, type=ftype,
                        term_offset=term_offset, session_id=session_id, stream_id=stream_id,
                        term_id=frame_term_id, reserved_value=reserved,
                        payload=bytes(view[start:min(payload_end, start + payload_prefix)]),
                    )
                    offset += (length + _ALIGNMENT - 1) & ~(_ALIGNMENT - 1)
        finally:
            view.release()

    def _teardown(self) -> None:
        self.file.close()

