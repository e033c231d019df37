"""The cffi extension and the one way errors cross from C to Python."""

from __future__ import annotations

import os

from ._lockstep_ffi import ffi, lib  # type: ignore[import-not-found]
from ..errors import FileFormatError, InvalidArgumentError, LockstepError

__all__ = ["ffi", "lib", "c_error", "raise_c_error"]

LS_EINVAL = 1
LS_EFORMAT = 2


def c_error(path: str | os.PathLike[str] | None = None) -> LockstepError:
    """Build the exception for the C error left in this thread by the last failing call."""
    message = ffi.string(lib.ls_errmsg()).decode("utf-8", "replace")
    code = lib.ls_errcode()
    if code == LS_EFORMAT:
        return FileFormatError(path, message)
    if code == LS_EINVAL:
        return InvalidArgumentError(message)
    return LockstepError(f"{os.fspath(path)}: {message}" if path else message)


def raise_c_error(path: str | os.PathLike[str] | None = None) -> None:
    """Raise the C error of this thread (see `c_error`)."""
    raise c_error(path)
