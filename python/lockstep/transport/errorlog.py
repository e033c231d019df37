"""The directory's distinct error log: the error-log section of `cnc.dat`, in Agrona's
`DistinctErrorLog` format (spec/aeron-formats.md §6), written by every agent of every process.

Each distinct error text has one record: observation count, first and last observation
time (ms since the epoch) and the text. Observing the same text again only bumps the count
and the last time. Processes record concurrently: a new record is claimed at the end of the
log by a CAS on its length word (csrc/concurrent/distinct_error_log.c).

    from lockstep.errorlog import record_error, read_errors
    try:
        ...
    except Exception as e:
        record_error(dir, e)
        raise
    for r in read_errors(dir):
        print(r.count, r.text)
"""

from __future__ import annotations

import os
import struct
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from .._closing import Closing
from .._native import c_error, ffi, lib
from .counters import CNC_FILE, Counters
from ..errors import ClosedError, FileFormatError
from .mapped import MappedFile, resolve_dir

__all__ = ["ErrorLog", "ErrorRecord", "record_error", "read_errors", "describe"]

_HEADER = struct.Struct("<iiiiii")  # version, to-driver, to-clients, metadata, values, error log lengths
MAX_TEXT_LENGTH = 16 * 1024  # longer texts are cut (with a marker) so one error cannot fill the log


@dataclass(frozen=True)
class ErrorRecord:
    """One distinct error as read from the log (a snapshot)."""

    offset: int
    count: int
    first_ms: int
    last_ms: int
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def describe(error: BaseException | str) -> str:
    """The text an error is recorded (and told apart) by: qualified type, message and the
    last frame of its traceback, e.g. `ValueError: bad price (at /app/algo.py:42 in on_order)`."""
    if isinstance(error, str):
        return error
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    message = str(error)
    text = f"{name}: {message}" if message else name
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ is not None else []
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def _encode(text: str) -> bytes:
    data = text.encode("ascii", "backslashreplace")
    if len(data) > MAX_TEXT_LENGTH:
        data = data[:MAX_TEXT_LENGTH - 15] + b"... (truncated)"
    return data or b"(empty)"


def _now_ms() -> int:
    return int(time.time() * 1000)


class ErrorLog(Closing):
    """The error log of a directory: `record(error)` and `read()`. With create=True (the
    default) the directory's cnc.dat is created when missing; otherwise a missing one is a
    FileFormatError."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.dir = resolve_dir(dir, create=create)
        self.path: Path = self.dir / CNC_FILE
        if create and not self.path.exists():
            Counters(self.dir).close()  # makes the file (its header reserves the error log)
        try:
            self._file = MappedFile.open(self.path)
        except FileNotFoundError:
            raise FileFormatError(self.path, "no such file (nothing has run in this directory)") from None
        try:
            self._open_section()
        except BaseException:
            self._file.close()
            raise

    def _open_section(self) -> None:
        f = self._file
        if f.length < lib.LS_CNC_HEADER_LENGTH:
            raise FileFormatError(self.path, f"length: expected at least {lib.LS_CNC_HEADER_LENGTH}, found {f.length}")
        version, to_driver, to_clients, meta_len, values_len, error_len = _HEADER.unpack_from(f.memoryview(), 0)
        if version != lib.LS_CNC_VERSION:
            raise FileFormatError(self.path, f"cnc version: expected {lib.LS_CNC_VERSION}, found {version}")
        if min(to_driver, to_clients, meta_len, values_len, error_len) < 0:
            raise FileFormatError(self.path, "section lengths: expected non-negative values")
        self.offset = lib.LS_CNC_HEADER_LENGTH + to_driver + to_clients + meta_len + values_len
        self.length = error_len
        if self.offset + error_len > f.length:
            raise FileFormatError(self.path, f"length: expected at least {self.offset + error_len} for the "
                                  f"sections in the header, found {f.length}")
        if self.offset % 8:
            raise FileFormatError(self.path, f"error log offset: expected a multiple of 8, found {self.offset}")
        self._c = ffi.new("ls_distinct_error_log_t *")
        if lib.ls_distinct_error_log_init(self._c, f.pointer + self.offset, error_len) < 0:
            raise c_error(self.path)

    def record(self, error: BaseException | str, timestamp_ms: int | None = None) -> bool:
        """Record one observation of `error` (an exception, described by `describe`, or a
        text). Returns True when its text is new to the log. Raises LockstepError when the
        log is full or corrupt."""
        data = _encode(describe(error))
        result = lib.ls_distinct_error_log_record(
            self._log(), _now_ms() if timestamp_ms is None else timestamp_ms, data, len(data))
        if result < 0:
            raise c_error(self.path)
        return result == 1

    def read(self) -> list[ErrorRecord]:
        """Every complete record, in log order (the order texts were first seen). A corrupt
        record header raises FileFormatError naming its offset in the error log."""
        out: list[ErrorRecord] = []
        log = self._log()
        offset = ffi.new("int32_t *", 0)
        rec = ffi.new("ls_error_record_t *")
        while True:
            found = lib.ls_distinct_error_log_read(log, offset, rec)
            if found < 0:
                raise c_error(self.path)
            if found == 0:
                return out
            text = ffi.unpack(rec.text, rec.text_length).decode("ascii", "replace")
            out.append(ErrorRecord(rec.offset, rec.observation_count, rec.first_observation_timestamp_ms,
                                   rec.last_observation_timestamp_ms, text))

    def _log(self):
        if self._file.closed:
            raise ClosedError(f"{self.path}: error log is closed")
        return self._c

    def _teardown(self) -> None:  # (close(): unmap; using this object afterwards raises ClosedError)
        self._file.close()


def record_error(dir: str | os.PathLike[str] | None, error: BaseException | str,
                 timestamp_ms: int | None = None) -> bool:
    """Record one observation of `error` in the error log of `dir` (see `ErrorLog.record`)."""
    with ErrorLog(dir) as log:
        return log.record(error, timestamp_ms)


def read_errors(dir: str | os.PathLike[str] | None = None) -> list[ErrorRecord]:
    """The distinct errors recorded in `dir` (see `ErrorLog.read`); FileFormatError when the
    directory has no cnc.dat."""
    with ErrorLog(dir, create=False) as log:
        return log.read()
