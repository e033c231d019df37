"""`DriverConnection`: a client of the media driver of a directory that comes back after the
driver restarts. Aeron's clients do not reconnect (a driver that dies closes them); an agent
that must outlive its driver holds one of these, asks it each housekeeping round
(`check()`), and when it returns a new client re-creates its publications and subscriptions
on it (the parts' `reattach(aeron)`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

from .._closing import Closing
from ..errors import LockstepError
from .client import Aeron
from .cnc import CNC_FILE, driver_timeout_ms as env_driver_timeout_ms, read_cnc_header

__all__ = ["DriverConnection"]


class DriverConnection(Closing):
    """The client of the driver in `dir` (or `aeron`, an open one). `check()` is None while it
    is fine, and after it closed (the driver died or timed it out) looks at most every
    `retry_ms` for a live driver (its cnc.dat's heartbeat fresh: no waiting), then attaches a
    new client: that client, once made."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, aeron: Aeron | None = None,
                 retry_ms: int = 250) -> None:
        self.aeron = Aeron(dir) if aeron is None else aeron
        self.dir = self.aeron.dir
        self._owned = [self.aeron] if aeron is None else []
        self.retry_ms = retry_ms
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
        if not self._driver_live():
            self.last_error = f"{self.dir}: no live media driver (yet)"
            return None
        try:
            fresh = Aeron(self.dir)
        except LockstepError as e:  # gone again meanwhile: try again later
            self.last_error = str(e)
            return None
        for old in self._owned:
            old.close()
        self._owned = [fresh]
        self.aeron = fresh
        self.reconnects += 1
        return fresh

    def _driver_live(self) -> bool:
        header = read_cnc_header(Path(self.dir) / CNC_FILE)
        if header is None or header.version == 0 or header.consumer_heartbeat_ms <= 0:
            return False
        return time.time() * 1000 - header.consumer_heartbeat_ms < env_driver_timeout_ms()

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

    def _teardown(self) -> None:  # (close())
        for client in self._owned:
            client.close()
        self._owned = []
