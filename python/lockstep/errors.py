"""lockstep's exceptions: every failure a user can meet derives from `LockstepError`."""

from __future__ import annotations

import os


class LockstepError(Exception):
    """Base of every lockstep error; the message names the file and what is wrong."""

    errno: int | None = None  # the system's error number, when a failed system call is the cause


class FileFormatError(LockstepError):
    """A file's contents are not a valid lockstep/Aeron structure (truncated, corrupt, wrong size)."""

    def __init__(self, path: str | os.PathLike[str] | None, detail: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}" if self.path else detail)


class FileAccessError(LockstepError):
    """A file or directory may not be used: a symlink, another user's, or too open."""


class ImageLostError(LockstepError):
    """A subscription's image of one publisher session went away with messages it never handed
    out (evicted for liveness, lapped): names the stream, the session and the lost range."""

    def __init__(self, path: str | os.PathLike[str] | None, stream_id: int, session_id: int, from_position: int,
                 to_position: int, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.stream_id = stream_id
        self.session_id = session_id
        self.from_position = from_position
        self.to_position = to_position
        self.reason = reason
        missed = (f"the messages from position {from_position} to {to_position} were not received"
                  if to_position > from_position else f"no message was missed (position {from_position})")
        super().__init__(f"{self.path}: stream {stream_id} session {session_id}: image lost, {reason}: {missed}")


class ClosedError(LockstepError):
    """The object was closed and its mapped memory released."""


class InvalidArgumentError(LockstepError, ValueError):
    """An argument is out of range (message too long, bad type id, capacity not a power of two)."""


class CodecError(LockstepError):
    """A message cannot be encoded or decoded: unknown template or schema, short or corrupt
    header, truncated block, or a field value of the wrong type or out of range."""


class NoSpaceError(LockstepError):
    """A filesystem has no room for a file lockstep needs (ENOSPC, EDQUOT): the message names
    the file, the bytes needed and the bytes free, so the caller is told at creation, never
    by a SIGBUS later. `errno` is the system's error number."""


class ResourceLimitError(LockstepError):
    """A process or system limit stopped the call: open files (RLIMIT_NOFILE), address space
    (RLIMIT_AS), file size (RLIMIT_FSIZE); the message names the file and the limit.
    `errno` is the system's error number."""


class DriverError(LockstepError):
    """An Aeron media driver refused a request: Aeron's error `code` (e.g. 1 INVALID_CHANNEL,
    `code_name`) and the driver's own text (`driver_message`), shown, not parsed."""

    def __init__(self, code: int, message: str, request: str | None = None, code_name: str | None = None) -> None:
        self.code = code
        self.code_name = code_name
        self.driver_message = message
        self.request = request
        where = f"{request}: " if request else ""
        name = f" {code_name}" if code_name else ""
        super().__init__(f"{where}driver error {code}{name}: {message.strip()}")
