"""`Aeron`: a client of a running Aeron media driver. It attaches to the driver's cnc.dat,
sends commands on the to-driver ring, reads the broadcast responses, keeps its heartbeat
counter fresh from a daemon thread, and hands out lockstep publications and subscriptions
over the driver's log buffers."""

from __future__ import annotations

import atexit
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._closing import Closing
from .._native import c_error, lib
from ..errors import ClosedError, DriverError, LockstepError
from ..transport.counters import pid_alive
from . import protocol as p
from .broadcast import BroadcastReceiver, Lapped
from .cnc import Cnc, default_aeron_dir, driver_timeout_ms as env_driver_timeout_ms
from .publication import AeronPublication
from .subscription import AeronSubscription

__all__ = ["Aeron"]

TYPE_CLIENT_HEARTBEAT = 11
KEEPALIVE_INTERVAL_MS = 500
_CONDUCTOR_IDLE_S = 0.01          # the daemon thread's duty cycle: image events reach subscriptions this fast
_CONDUCTOR_IDLE_QUIET_S = 0.05    # ... and without subscriptions (heartbeat, liveness, pending requests)
_RING_ATTEMPTS = 10               # as the C client: then "failed to send command"
_DEAD_PID_GRACE_MS = 1_500        # a vanished driver pid with a heartbeat this old is dead


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Pending:
    """A request waiting for its response."""

    what: str
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class Aeron(Closing):
    """A client of the Aeron media driver in `dir` (default $AERON_DIR, else /dev/shm/aeron-$USER).

    `add_publication` / `add_exclusive_publication` / `add_subscription` return objects with
    the API of `lockstep.Publication` / `lockstep.Subscription` over the driver's log buffers,
    for any Aeron channel. A driver error raises `DriverError` (code and the driver's text);
    no driver within `driver_timeout_ms` (default $AERON_DRIVER_TIMEOUT, else 10 s) raises a
    `LockstepError` naming the directory. If the driver dies or drops this client,
    publications return CLOSED, subscriptions lose their images, and requests raise.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, driver_timeout_ms: int | None = None,
                 keepalive_interval_ms: int = KEEPALIVE_INTERVAL_MS) -> None:
        self.dir = Path(dir) if dir is not None else default_aeron_dir()
        self.driver_timeout_ms = env_driver_timeout_ms() if driver_timeout_ms is None else int(driver_timeout_ms)
        self._cnc = Cnc.attach(self.dir, self.driver_timeout_ms)
        self.counters = self._cnc.counters
        liveness_ms = self._cnc.header.client_liveness_timeout_ns // 1_000_000
        self.keepalive_interval_ms = max(1, min(keepalive_interval_ms, liveness_ms // 4 or 1))
        try:
            self._view = self._cnc.file.memoryview()
            self._broadcast = BroadcastReceiver(self._view, self._cnc.broadcast_offset, self._cnc.broadcast_capacity)
        except BaseException:
            self._cnc.close()
            raise
        self.client_id = self._cnc.next_correlation_id()
        self._known_to_driver = False  # after our first ADD_*: the driver has a heartbeat counter for us
        self._lock = threading.RLock()
        self._pending: dict[int, _Pending] = {}
        self._subscriptions: dict[int, Any] = {}   # registration id -> AeronSubscription
        self._publications: dict[int, Any] = {}    # our correlation id -> AeronPublication
        self.heartbeat_counter_id = -1
        self._next_keepalive_ms = 0
        self._closed_reason: str | None = None
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"aeron-conductor {self.dir}", daemon=True)
        self._thread.start()
        _open_clients.add(self)

    # -- public API -------------------------------------------------------------------------

    def add_publication(self, channel: str, stream_id: int) -> Any:
        """A concurrent (shared) publication on `channel`/`stream_id`, with Publication's API."""
        return self._add_publication(channel, stream_id, exclusive=False)

    def add_exclusive_publication(self, channel: str, stream_id: int) -> Any:
        """An exclusive publication (one writer, its own session): the faster appender."""
        return self._add_publication(channel, stream_id, exclusive=True)

    def add_subscription(self, channel: str, stream_id: int, *,
                         on_available_image: Callable[[Any], Any] | None = None,
                         on_unavailable_image: Callable[[Any], Any] | None = None) -> Any:
        """A subscription with Subscription's API; the image callbacks run on the polling thread
        (in poll/receive), before any message of a new image and after the last of a gone one."""
        data = p.channel_bytes(channel)
        p.check_stream_id(stream_id)
        with self._lock:
            self._check_open()
            corr = self._cnc.next_correlation_id()
            sub = AeronSubscription(self, channel, stream_id, corr, on_available_image, on_unavailable_image)
            self._subscriptions[corr] = sub  # before the command: its images follow the READY at once
            try:
                self._request(corr, p.ADD_SUBSCRIPTION, p.add_subscription(self.client_id, corr, stream_id, data),
                              f"add_subscription({channel!r}, {stream_id})")
            except BaseException:
                self._subscriptions.pop(corr, None)
                raise
        try:
            self._await(corr)
        except BaseException:
            with self._lock:
                self._subscriptions.pop(corr, None)
            raise
        return sub

    def close(self) -> None:
        """Remove every publication and subscription, say goodbye to the driver, detach."""
        if self._closed:
            return
        for sub in list(self._subscriptions.values()):
            sub.close()
        for pub in list(self._publications.values()):
            pub.close()
        with self._lock:
            if self._closed_reason is None:
                try:
                    self._send(p.CLIENT_CLOSE, p.correlated(self.client_id, -1))
                except LockstepError:
                    pass
                self._closed_reason = "client closed"
            self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._broadcast.release()
            self._view.release()
            self._cnc.close()

    @property
    def is_closed(self) -> bool:
        """Closed by close(), or because the driver died or timed this client out."""
        return self._closed_reason is not None

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    def terminate_driver(self, token: bytes = b"") -> None:
        """Ask the driver to exit (obeyed only if it runs with AERON_DRIVER_TERMINATION_VALIDATOR=allow)."""
        with self._lock:
            self._check_open()
            self._send(p.TERMINATE_DRIVER, p.terminate_driver(self.client_id, self._cnc.next_correlation_id(), token))

    def __repr__(self) -> str:
        state = self._closed_reason or "open"
        return f"Aeron(dir={str(self.dir)!r}, client_id={self.client_id}, {state})"

    # -- requests ---------------------------------------------------------------------------

    def _add_publication(self, channel: str, stream_id: int, *, exclusive: bool) -> Any:
        data = p.channel_bytes(channel)
        p.check_stream_id(stream_id)
        kind = "add_exclusive_publication" if exclusive else "add_publication"
        with self._lock:
            self._check_open()
            corr = self._cnc.next_correlation_id()
            self._request(corr, p.ADD_EXCLUSIVE_PUBLICATION if exclusive else p.ADD_PUBLICATION,
                          p.add_publication(self.client_id, corr, stream_id, data), f"{kind}({channel!r}, {stream_id})")
        ready: p.PublicationReady = self._await(corr)
        try:
            pub = AeronPublication(self, channel, stream_id, ready, exclusive)
        except BaseException:
            self._remove(p.REMOVE_PUBLICATION, lambda c: p.remove_publication(self.client_id, c, corr), wait=False)
            raise
        with self._lock:
            self._publications[corr] = pub
            if self._closed_reason is not None:  # the driver went while we mapped it
                pub._driver_gone()
        return pub

    def _destination(self, msg_type: int, registration_id: int, channel: str, what: str) -> None:
        """ADD/REMOVE_(RCV_)DESTINATION for `registration_id`; waits for the driver's answer."""
        data = p.channel_bytes(channel)
        with self._lock:
            self._check_open()
            corr = self._cnc.next_correlation_id()
            self._request(corr, msg_type, p.destination(self.client_id, corr, registration_id, data),
                          f"{what}({channel!r})")
        self._await(corr)

    def _release_publication(self, pub: Any) -> None:
        """REMOVE_PUBLICATION for a closing publication (with our own correlation id)."""
        with self._lock:
            self._publications.pop(pub.correlation_id, None)
        self._remove(p.REMOVE_PUBLICATION, lambda corr: p.remove_publication(self.client_id, corr, pub.correlation_id))

    def _release_subscription(self, sub: Any) -> None:
        """REMOVE_SUBSCRIPTION for a closing subscription."""
        with self._lock:
            self._subscriptions.pop(sub.registration_id, None)
        self._remove(p.REMOVE_SUBSCRIPTION, lambda corr: p.remove(self.client_id, corr, sub.registration_id))

    def _remove(self, msg_type: int, encode: Callable[[int], bytes], *, wait: bool = True) -> None:
        """Send a REMOVE_* and wait for its answer (so a close is done when it returns); a
        closed client or a driver error leaves nothing to remove: quietly."""
        try:
            with self._lock:
                if self._closed_reason is not None:
                    return
                corr = self._cnc.next_correlation_id()
                if not wait:
                    self._send(msg_type, encode(corr))
                    return
                self._request(corr, msg_type, encode(corr), "remove")
            self._await(corr)
        except LockstepError:
            pass

    def _request(self, corr: int, msg_type: int, payload: bytes, what: str) -> None:
        with self._lock:
            self._pending[corr] = _Pending(what)
            try:
                self._send(msg_type, payload)
            except BaseException:
                self._pending.pop(corr, None)
                raise
            if msg_type in (p.ADD_PUBLICATION, p.ADD_EXCLUSIVE_PUBLICATION, p.ADD_SUBSCRIPTION):
                self._known_to_driver = True

    def _send(self, msg_type: int, payload: bytes) -> None:
        """Put one command on the to-driver ring (retrying briefly when it is full)."""
        ring = self._cnc.to_driver
        for attempt in range(_RING_ATTEMPTS):
            rc = lib.ls_rb_write(ring, msg_type, payload, len(payload))
            if rc == 0:
                return
            if rc != lib.LS_RB_FULL:
                raise c_error(f"{self._cnc.path} (to-driver ring)")
            time.sleep(0.001 * attempt)
        raise LockstepError(f"{self._cnc.path}: the to-driver ring is full (is the driver stuck?): failed to send command")

    def _await(self, corr: int) -> Any:
        """Run the conductor until the response to `corr` arrives (or the driver timeout passes)."""
        deadline = time.monotonic() + self.driver_timeout_ms / 1000
        sleep = 0.0
        while True:
            with self._lock:
                self._do_work()
                pending = self._pending.get(corr)
                if pending is None:
                    raise LockstepError(f"request {corr}: no longer pending")
                if pending.done:
                    del self._pending[corr]
                    if pending.error is not None:
                        raise pending.error
                    return pending.result
                if time.monotonic() >= deadline:
                    del self._pending[corr]
                    raise LockstepError(f"{self.dir}: no response from the driver to {pending.what} within "
                                        f"{self.driver_timeout_ms} ms")
            time.sleep(sleep)
            sleep = min(sleep * 2 if sleep else 0.0001, 0.002)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.dir}: Aeron client is closed")
        if self._closed_reason is not None:
            raise LockstepError(f"{self.dir}: Aeron client is closed: {self._closed_reason}")

    # -- the conductor ------------------------------------------------------------------------

    def _run(self) -> None:
        """The daemon thread: responses, image events, heartbeat, driver liveness."""
        while not self._stop.wait(_CONDUCTOR_IDLE_S if self._subscriptions else _CONDUCTOR_IDLE_QUIET_S):
            try:
                with self._lock:
                    if self._closed:
                        return
                    self._do_work()
            except Exception as e:  # never die silently: close the client with the reason
                with self._lock:
                    self._force_close(f"conductor failed: {e!r}")
                return

    def _do_work(self) -> int:
        """One duty cycle (caller holds the lock): read the broadcast, keep alive. Returns work done."""
        if self._closed or self._closed_reason is not None:
            return 0
        work = 0
        for _ in range(64):
            try:
                record = self._broadcast.receive()
            except Lapped as e:
                self._fail_pending(LockstepError(f"{self.dir}: {e}; request lost, retry it"))
                continue
            if record is None:
                break
            self._dispatch(*record)
            work += 1
        now = _now_ms()
        if now >= self._next_keepalive_ms:
            self._next_keepalive_ms = now + self.keepalive_interval_ms
            self._keepalive(now)
        return work

    def _keepalive(self, now_ms: int) -> None:
        why = self._cnc.driver_alive(self.driver_timeout_ms)
        if why is None and 0 < self._cnc.header.pid and not pid_alive(self._cnc.header.pid):
            age = now_ms - self._cnc.consumer_heartbeat_ms()
            if age > _DEAD_PID_GRACE_MS:
                why = f"MediaDriver pid {self._cnc.header.pid} is gone (heartbeat {age} ms old)"
        if why is not None:
            self._force_close(why)
            return
        cid = self.heartbeat_counter_id
        if cid < 0 and self._known_to_driver:
            cid = self.heartbeat_counter_id = _find_heartbeat(self.counters, self.client_id)  # announcement missed
        if cid < 0:
            return
        counters = self.counters
        if not (lib.ls_counters_state(counters.handle, cid) == 1 and _heartbeat_matches(counters, cid, self.client_id)):
            self._force_close(f"heartbeat counter {cid} is no longer this client's (the driver dropped it)")
            return
        lib.ls_counters_set(counters.handle, cid, now_ms)

    def _dispatch(self, msg_type: int, data: bytes) -> None:
        try:
            if msg_type in (p.ON_PUBLICATION_READY, p.ON_EXCLUSIVE_PUBLICATION_READY):
                ready = p.decode_publication_ready(data)
                self._complete(ready.correlation_id, ready)
            elif msg_type == p.ON_SUBSCRIPTION_READY:
                corr, status_id = p.decode_id_counter(data)
                self._complete(corr, status_id)
            elif msg_type == p.ON_OPERATION_SUCCESS:
                self._complete(p.decode_id(data), None)
            elif msg_type == p.ON_ERROR:
                err = p.decode_error(data)
                pending = self._pending.get(err.offending_correlation_id)
                if pending is not None and not pending.done:
                    pending.done = True
                    pending.error = DriverError(err.error_code, err.message, pending.what, p.ERROR_CODES.get(err.error_code))
            elif msg_type == p.ON_AVAILABLE_IMAGE:
                image = p.decode_available_image(data)
                sub = self._subscriptions.get(image.subscription_registration_id)
                if sub is not None:
                    sub._events.append(("available", image))
            elif msg_type == p.ON_UNAVAILABLE_IMAGE:
                gone = p.decode_unavailable_image(data)
                sub = self._subscriptions.get(gone.subscription_registration_id)
                if sub is not None:
                    sub._events.append(("unavailable", gone.correlation_id))
            elif msg_type == p.ON_COUNTER_READY:
                corr, counter_id = p.decode_id_counter(data)
                if corr == self.client_id:
                    self.heartbeat_counter_id = counter_id
                    lib.ls_counters_set(self.counters.handle, counter_id, _now_ms())
            elif msg_type == p.ON_UNAVAILABLE_COUNTER:
                corr, counter_id = p.decode_id_counter(data)
                if corr == self.client_id and counter_id == self.heartbeat_counter_id:
                    self._force_close("the driver removed this client's heartbeat counter")
            elif msg_type == p.ON_CLIENT_TIMEOUT:
                if p.decode_id(data) == self.client_id:
                    self._force_close("the driver timed this client out (no heartbeat within its liveness timeout)")
            elif msg_type == p.ON_PUBLICATION_ERROR:
                err = p.decode_publication_error(data)
                for pub in self._publications.values():
                    if pub.registration_id == err.offending_correlation_id:
                        pub.last_error = DriverError(err.error_code, err.message, "publication", p.ERROR_CODES.get(err.error_code))
        except p.MalformedResponse:
            pass  # not from a correct driver: nothing of ours can be in it

    def _complete(self, corr: int, result: Any) -> None:
        pending = self._pending.get(corr)
        if pending is not None and not pending.done:
            pending.done = True
            pending.result = result

    def _fail_pending(self, error: BaseException) -> None:
        for pending in self._pending.values():
            if not pending.done:
                pending.done = True
                pending.error = error

    def _force_close(self, reason: str) -> None:
        """The driver is gone (or dropped us): publications CLOSED, images go, requests fail."""
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        self._fail_pending(LockstepError(f"{self.dir}: {reason}"))
        for pub in self._publications.values():
            pub._driver_gone()
        for sub in self._subscriptions.values():
            sub._events.append(("driver_gone", reason))


_KEY_CLIENT_ID = struct.Struct("<q")
_open_clients: "weakref.WeakSet[Aeron]" = weakref.WeakSet()


@atexit.register
def _close_clients() -> None:
    """At exit, say goodbye to the driver (it would otherwise time each client out later)."""
    for client in list(_open_clients):
        try:
            client.close()
        except Exception:
            pass


def _find_heartbeat(counters: Any, client_id: int) -> int:
    """Our heartbeat counter's id by scanning the counters (as the C client does), or -1."""
    for info in counters:
        if info.type_id == TYPE_CLIENT_HEARTBEAT and _KEY_CLIENT_ID.unpack_from(info.key, 0)[0] == client_id:
            return info.id
    return -1


def _heartbeat_matches(counters: Any, counter_id: int, client_id: int) -> bool:
    """The record is still a heartbeat counter keyed by our client id (ids are reused)."""
    info = counters.info(counter_id)
    return info.type_id == TYPE_CLIENT_HEARTBEAT and len(info.key) >= _KEY_CLIENT_ID.size and \
        _KEY_CLIENT_ID.unpack_from(info.key, 0)[0] == client_id
