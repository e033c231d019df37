"""lockstep's exceptions: every failure a user can meet derives from `LockstepError`."""

from __future__ import annotations

import os


class LockstepError(Exception):
    """Base of every lockstep error; the message names the file and what is wrong."""


class FileFormatError(LockstepError):
    """A file's contents are not a valid lockstep/Aeron structure (truncated, corrupt, wrong size)."""

    def __init__(self, path: str | os.PathLike[str] | None, detail: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}" if self.path else detail)


class FileAccessError(LockstepError):
    """A file or directory may not be used: a symlink, another user's, or too open."""


class ClosedError(LockstepError):
    """The object was closed and its mapped memory released."""


class InvalidArgumentError(LockstepError, ValueError):
    """An argument is out of range (message too long, bad type id, capacity not a power of two)."""


class CodecError(LockstepError):
    """A message cannot be encoded or decoded: unknown template or schema, short or corrupt
    header, truncated block, or a field value of the wrong type or out of range."""



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
