"""The cffi extension and the one way errors cross from C to Python."""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar, cast

from ._lockstep_ffi import ffi, lib  # type: ignore[import-not-found]
from ._fastpath import FastMethod
from ..errors import FileFormatError, InvalidArgumentError, LockstepError

__all__ = ["ffi", "lib", "c_error", "raise_c_error", "fast_method"]

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


_F = TypeVar("_F", bound=Callable[..., Any])


def fast_method(attribute: str, function: _F) -> _F:
    """`function` as a method whose calls go to the instance's C object `attribute` (falling
    back to `function` where there is none): the documented method is the fast one."""
    return cast(_F, FastMethod(attribute, function))
