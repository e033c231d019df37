"""`DriverConnection`: a client of the media driver of a directory that comes back after the
driver restarts. Aeron's clients do not reconnect (a driver that dies closes them); an agent
that must outlive its driver holds one of these, asks it each housekeeping round
(`check()`), and when it returns a new client re-creates its publications and subscriptions
on it (the parts' `reattach(aeron)`)."""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

from ..errors import LockstepError
from .client import Aeron

__all__ = ["DriverConnection"]


class DriverConnection:
    """The client of the driver in `dir` (or `aeron`, an open one). `check()` is None while it
    is fine, and after it closed (the driver died or timed it out) tries a new client at most
    every `retry_ms`, waiting `attach_timeout_ms` for the driver: the new client once made."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, aeron: Aeron | None = None,
                 retry_ms: int = 250, attach_timeout_ms: int = 20) -> None:
        self.aeron = Aeron(dir) if aeron is None else aeron
        self.dir = self.aeron.dir
        self._owned = [self.aeron] if aeron is None else []
        self.retry_ms = retry_ms
        self.attach_timeout_ms = attach_timeout_ms
        self.reconnects = 0
        self.last_error: str | None = None
        self._next_try_ns = 0

    def check(self) -> Aeron | None:
        """None while the client is open (or no driver is back yet); a new client otherwise."""
        if not self.aeron.is_closed:
            return None
        now = time.monotonic_ns()
        if now < self._next_try_ns:
            return None
        self._next_try_ns = now + self.retry_ms * 1_000_000
        try:
            fresh = Aeron(self.dir, driver_timeout_ms=self.attach_timeout_ms)
        except LockstepError as e:  # no driver (yet): try again later
            self.last_error = str(e)
            return None
        for old in self._owned:
            old.close()
        self._owned = [fresh]
        self.aeron = fresh
        self.reconnects += 1
        return fresh

    def reattach(self, parts: Iterable[Any]) -> bool:
        """check(), and on a new client `part.reattach(aeron)` for each part; True if it did."""
        fresh = self.check()
        if fresh is None:
            return False
        for part in parts:
            if part is not None:
                part.reattach(fresh)
        return True

    @property
    def connected(self) -> bool:
        return not self.aeron.is_closed

    def close(self) -> None:
        for client in self._owned:
            client.close()
        self._owned = []
