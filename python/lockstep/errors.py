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


class NoSpaceError(LockstepError):
    """A filesystem has no room for a file lockstep needs (ENOSPC, EDQUOT): the message names
    the file, the bytes needed and the bytes free, so the caller is told at creation, never
    by a SIGBUS later. `errno` is the system's error number."""

    errno: int | None = None


class ResourceLimitError(LockstepError):
    """A process or system limit stopped the call: open files (RLIMIT_NOFILE), address space
    (RLIMIT_AS), file size (RLIMIT_FSIZE); the message names the file and the limit.
    `errno` is the system's error number."""

    errno: int | None = None
