"""The cffi extension and the one way errors cross from C to Python."""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar, cast

from ._lockstep_ffi import ffi, lib  # (typed by _lockstep_ffi.pyi: cffi's members are Any)
from ._fastpath import FastMethod
from ..errors import FileFormatError, InvalidArgumentError, LockstepError

__all__ = ["ffi", "lib", "c_error", "raise_c_error", "fast_method"]

LS_OK = 0
LS_EINVAL = 1
LS_EFORMAT = 2
LS_ESYS = 4


def c_error(path: str | os.PathLike[str] | None = None) -> LockstepError:
    """Build the exception for the C error left in this thread by the last failing call; its
    C trace (`[function, file:line] ...` per level, as Aeron's) is added as a note."""
    code = lib.ls_errcode()
    if code == LS_OK:  # a C failure that left no reason: say so rather than print nothing
        message = "a C call failed without setting its error message (a lockstep bug: please report it)"
    else:
        message = ffi.string(lib.ls_errmsg()).decode("utf-8", "replace")
    error: LockstepError
    if code == LS_EFORMAT:
        error = FileFormatError(path, message)
    elif code == LS_EINVAL:
        error = InvalidArgumentError(message)
    else:
        error = LockstepError(f"{os.fspath(path)}: {message}" if path else message)
        if code == LS_ESYS:
            error.errno = lib.ls_errno()
    trace = ffi.string(lib.ls_errtrace()).decode("utf-8", "replace")
    add_note = getattr(error, "add_note", None)  # Python 3.11+
    if trace and add_note is not None:
        add_note("C trace:\n" + trace)
    return error


def raise_c_error(path: str | os.PathLike[str] | None = None) -> None:
    """Raise the C error of this thread (see `c_error`)."""
    raise c_error(path)


_F = TypeVar("_F", bound=Callable[..., Any])


def fast_method(attribute: str, function: _F) -> _F:
    """`function` as a method whose calls go to the instance's C object `attribute` (falling
    back to `function` where there is none): the documented method is the fast one."""
    return cast(_F, FastMethod(attribute, function))
