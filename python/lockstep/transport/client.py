"""A process's presence in a lockstep directory: its counters and a heartbeat counter kept
fresh by a daemon thread, so peers can tell a live process (slow or stalled) from a dead one."""

from __future__ import annotations

import atexit
import os
import struct
import threading
import time
from pathlib import Path

from ..errors import InvalidArgumentError
from .counters import Counter, CounterInfo, Counters, pid_alive

__all__ = ["Client", "client_for", "is_alive", "TYPE_CLIENT_HEARTBEAT"]

# Aeron's counter type ids, used with the same meaning (spec §4).
TYPE_PUBLISHER_LIMIT = 1
TYPE_SUBSCRIBER_POSITION = 4
TYPE_CLIENT_HEARTBEAT = 11
# lockstep's own (above 1000).
TYPE_UNBLOCKS = 1003
TYPE_EVICTIONS = 1004

HEARTBEAT_INTERVAL_S = 0.1
DEFAULT_LIVENESS_TIMEOUT_MS = 10_000

STREAM_KEY = struct.Struct("<qii")  # registration id, session id, stream id


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_timeout_ms(name: str, value: object) -> int:
    """A timeout in ms as an int > 0; anything else (e.g. "x", 1.5, True) is an InvalidArgumentError."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgumentError(f"{name}: expected an int > 0 (milliseconds), found {value!r}")
    return value


class Client:
    """One per process and directory: owns the counters mapping and the heartbeat."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.pid = os.getpid()
        self.counters = Counters(dir)
        self.heartbeat: Counter = self.counters.allocate(TYPE_CLIENT_HEARTBEAT, f"client-heartbeat: pid {self.pid}")
        self.heartbeat.set(_now_ms())
        self._registration = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lockstep-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self.heartbeat.set(_now_ms())
            except Exception:  # mapping closed at interpreter exit
                return

    def next_registration_id(self) -> int:
        """A directory-unique id: pid in the high bits, a per-process sequence below."""
        self._registration += 1
        return (self.pid << 24) | self._registration

    def is_alive(self, info: CounterInfo, timeout_ms: int = DEFAULT_LIVENESS_TIMEOUT_MS) -> bool:
        """A counter's owner is alive: its pid exists and its heartbeat (reference id) is fresh."""
        return is_alive(self.counters, info, timeout_ms)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        try:
            self.heartbeat.free(0)
        finally:
            self.counters.close()


def is_alive(counters: Counters, info: CounterInfo, timeout_ms: int = DEFAULT_LIVENESS_TIMEOUT_MS) -> bool:
    """Whether the owner of `info` is alive: pid present and, when the counter names a client
    heartbeat (reference id), that heartbeat is newer than `timeout_ms`."""
    if not pid_alive(info.owner_id):
        return False
    if info.type_id == TYPE_CLIENT_HEARTBEAT:
        return _now_ms() - info.value <= timeout_ms
    ref = counters.info(info.reference_id) if 0 <= info.reference_id < counters.max_counters else None
    if ref is None or ref.state != "allocated" or ref.type_id != TYPE_CLIENT_HEARTBEAT or ref.owner_id != info.owner_id:
        return True  # no heartbeat to judge by: the pid decides
    return _now_ms() - ref.value <= timeout_ms


_clients: dict[Path, Client] = {}
_lock = threading.Lock()


@atexit.register
def _close_clients() -> None:
    """At exit, free each client's heartbeat counter (a killed process's is reclaimed by
    whoever next finds the counters full)."""
    for client in list(_clients.values()):
        if client.pid == os.getpid():
            try:
                client.close()
            except Exception:
                pass


def client_for(dir: Path) -> Client:
    """The process's client for a directory (made anew after a fork)."""
    key = dir.resolve()
    with _lock:
        client = _clients.get(key)
        if client is None or client.pid != os.getpid():
            client = _clients[key] = Client(dir)
        return client
