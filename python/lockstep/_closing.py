"""`Closing`: the one way every resource here closes — `with obj:`, `obj.closed`, nothing
unmapped under a call still in flight on another thread, and objects a forked child
inherited never acting on the parent's resources."""

from __future__ import annotations

import functools
import os
import sys
import weakref
from typing import Any, Callable, TypeVar

from .errors import ClosedError

__all__ = ["Closing", "guarded"]

T = TypeVar("T", bound="Closing")
F = TypeVar("F", bound=Callable[..., Any])

_objects: "weakref.WeakSet[Closing]" = weakref.WeakSet()  # every live one, for the fork hook


class _InFlight:
    """The token every call in flight holds (a local): once close() arms it, the last call
    to let go of it tears the object down."""

    __slots__ = ("owner",)

    def __init__(self) -> None:
        self.owner: Closing | None = None  # set by close() only while calls are in flight

    def __del__(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner._token_released = True
            owner._finish_close()


class Closing:
    """Mixin for objects with `close()`: `with obj:` closes it on the way out; `closed`.

    close() runs `_detach()` at once (under the GIL: fast paths forget their C state, so
    every later call raises ClosedError or returns CLOSED), then `_teardown()` (unmap, free,
    end the stream) — at once if no call is in flight, else when the last one returns. A
    method whose C call releases the GIL (every cffi call does), or whose Python code keeps
    views of mapped memory across calls, is in flight while it holds the token — the
    `guarded` decorator, or, on hot paths, the same lines inlined (one attribute load):

        token = self._token  # None once closed
        try:
            if token is None:
                raise self._closed_error()  # (or return CLOSED)
            ...
        finally:
            del token  # the last one out of a closed object tears it down

    A C fast object that calls Python handlers keeps its own count (`busy`) and is listed in
    `_c_calls`: the teardown waits for it too, and it calls `_finish_close` when its outermost
    call returns after a close.
    In a child after os.fork() every inherited object is closed and *inherited*: its calls
    raise ClosedError, and its close() only forgets (`_forget`), never ends, frees or
    unlinks what the parent still uses."""

    _closed = False  # close() was called, or the object was inherited across fork
    _c_calls: tuple[Any, ...] = ()  # C objects whose calls in flight (`busy`) count too
    _token_released = False  # no Python call holds the token of the closed object any more
    _torn_down = False
    _inherited = False
    _token: _InFlight | None  # held by calls in flight; None once closed
    _pid: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._token = _InFlight()
        self._pid = os.getpid()  # the process it belongs to
        _objects.add(self)
        return self

    @property
    def closed(self) -> bool:
        """Whether the object is closed (or inherited from the parent across fork)."""
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:  # (subclasses that keep their own flag)
        self._closed = value

    def close(self) -> None:
        """Close: later calls raise ClosedError (or return CLOSED); resources go once no
        call is in flight any more."""
        token = self._token
        if token is None:
            return
        self._closed = True
        self._token = None  # no call starts from now on
        self._detach()
        if sys.getrefcount(token) > 2:  # (ours and the argument's): calls in flight hold it
            token.owner = self  # the last one to let go tears down
            return
        self._token_released = True
        self._finish_close()  # (a busy C object defers it to its return)

    def _finish_close(self) -> None:
        """Tear down, once no call is in flight: no Python call holds the token and no C
        object is `busy` (the last of them calls this again)."""
        if self._torn_down or not self._token_released or any(c.busy for c in self._c_calls):
            return
        self._torn_down = True
        if self._inherited:
            self._forget()
        else:
            self._teardown()

    def _detach(self) -> None:
        """Make every later call fail cleanly (runs at once in close(), and in a forked child)."""

    def _teardown(self) -> None:
        """Release the resources (runs once no call is in flight)."""

    def _forget(self) -> None:
        """close() of an object inherited across fork: the parent's resources stay as they are."""

    def _closed_error(self) -> ClosedError:
        """The error a call on the closed object raises, naming its file and why."""
        where = getattr(self, "path", None) or getattr(self, "dir", None) or "lockstep"
        what = type(self).__name__
        if getattr(self, "stream_id", None) is not None:
            what += f" of stream {self.stream_id}"  # type: ignore[attr-defined]
        if self._inherited:
            return ClosedError(f"{where}: {what} was inherited across fork(); it belongs to the parent "
                               f"process (pid {self._pid}) — open a new one in this process")
        return ClosedError(f"{where}: {what} is closed")

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_RAISE = object()


def guarded(method: F | None = None, *, closed: Any = _RAISE) -> Any:
    """A method of a `Closing` object as a call in flight: once closed it raises ClosedError
    (or returns `closed`, when given), and close() from another thread meanwhile defers the
    teardown until it returns. `@guarded` or `@guarded(closed=VALUE)`."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def call(self: Closing, *args: Any, **kwargs: Any) -> Any:
            token = self._token
            try:
                if token is None:
                    if closed is _RAISE:
                        raise self._closed_error()
                    return closed
                return method(self, *args, **kwargs)
            finally:
                del token

        return call  # type: ignore[return-value]

    return wrap if method is None else wrap(method)


def _after_fork_in_child() -> None:
    """Everything the parent had open is the parent's: close it here, inherited."""
    for obj in list(_objects):
        if obj._closed:
            continue
        obj._inherited = True
        obj._closed = True
        obj._token = None  # (calls the parent's threads had in flight never return here)
        try:
            obj._detach()
        except Exception:  # (a half-built object): it is closed all the same
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
