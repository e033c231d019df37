"""`AeronSubscription`: lockstep's `Subscription` over the images a media driver announces —
the same C reader, fragment assembler and receive fast path, reading each image log from
the subscriber-position counter the driver allocated (image logs keep no tail counters) and
advancing that counter, which is all a subscriber writes."""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

from .._native import c_error, fast_method, ffi, lib
from .._native._fastpath import PollAny, ReceiveAny
from ..errors import ClosedError, FileFormatError
from ..transport.idle import BackoffIdleStrategy
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import MappedFile
from ..transport.reader import Batch, Header, LogReader, _controlled
from ..transport.subscription import Subscription
from .protocol import ADD_RCV_DESTINATION, REMOVE_RCV_DESTINATION, AvailableImage

__all__ = ["AeronSubscription", "AeronImage"]

TYPE_SUBSCRIBER_POSITION = 4


class AeronImage(LogReader):
    """One publisher session as the driver delivers it to one subscription."""

    _deferred_commit = True  # (the C poll stores the position after the handlers: see below)

    def __init__(self, subscription: "AeronSubscription", info: AvailableImage) -> None:
        counters = subscription._aeron.counters
        cid = info.subscriber_position_id
        record = counters.info(cid)
        if (record.state != "allocated" or record.type_id != TYPE_SUBSCRIBER_POSITION
                or record.registration_id != subscription.registration_id):
            raise FileFormatError(counters.path, f"counter {cid}: expected the subscriber position of subscription "
                                  f"{subscription.registration_id}, found {record}")
        self.subscription = subscription
        self.correlation_id = info.correlation_id
        self.subscriber_position_id = cid
        self.source_identity = info.source_identity
        self.join_position = lib.ls_counters_get(counters.handle, cid)
        log = LogBuffer(MappedFile.open(info.log_file), tailed=False)
        if log.session_id != info.session_id or log.stream_id != info.stream_id:
            log.close()
            raise FileFormatError(info.log_file, f"session/stream: expected {info.session_id}/{info.stream_id}, "
                                  f"found {log.session_id}/{log.stream_id}")
        super().__init__(log, self.join_position, lib.ls_counters_value_addr(counters.handle, cid))
        self._pending: int | None = None

    # The driver zeroes a log behind the subscriber position as soon as it moves (IPC: up to
    # the slowest subscriber; images: behind the receiver), so the position may move only
    # after the handlers are done with the bytes they were handed. The C poll (`_fast_poll`,
    # made `deferred`) stores it once after its handlers, into the driver's subscriber-position
    # counter, as Aeron's image poll does; the Python paths' scans here do not commit
    # (`_scan`, `_next_view` keep the position reached in `_pending`) and LogReader's poll and
    # poll_batch store it afterwards with `_commit`.

    def _scan(self, limit: int) -> int:
        scan = self._scan_out
        n = lib.ls_image_scan_deferred(self._image, scan, limit)  # (commits by itself when n == 0)
        if n < 0:
            raise c_error(self.path)
        if n:
            self._pending = scan.end_position
        self._rx.peek = scan.end_length_index
        return n

    def _commit(self) -> None:
        """After the handlers of a poll / poll_batch: store the position the scan reached."""
        if self._pending is not None:
            lib.ls_image_set_position(self._image, self._pending)
            self._pending = None

    def _rewind_to(self, position: int) -> None:
        self._pending = None
        super()._rewind_to(position)

    def _next_view(self) -> memoryview | None:
        """As LogReader's (poll(handler, 1)), the position stored by `_commit` after the handler."""
        scan = self._scan_out
        r = lib.ls_image_poll_one_deferred(self._image, scan)
        self._rx.peek = scan.end_length_index
        if r > 0:
            self._pending = scan.end_position
        return self._found_view(r)

    def _failed(self, status: int) -> None:
        """Any failed read of a driver's log is the C error (the driver, not lockstep, owns its
        subscriber positions: no lockstep loss to tell)."""
        raise c_error(self.path)

    def _poll_batch(self, handler: Callable[[Batch], Any], limit: int = 1024) -> int:
        """As LogReader._poll_batch, the position stored once the handler is done (inside the
        close guard of LogReader.poll_batch)."""
        self._pending = None
        try:
            return super()._poll_batch(handler, limit)
        finally:
            self._commit()

    def _receive_slow(self) -> bytes | None:
        """receive() beyond the C fast path (padding, fragments): copy, then move the position."""
        if self.closed:
            raise ClosedError(f"{self.path}: image closed")
        out: list[bytes] = []
        self.poll(lambda data, header: out.append(bytes(data)), 1)
        return out[0] if out else None

    @property
    def end_of_stream_position(self) -> int:
        """Where the stream ended (INT64_MAX while it goes on); the driver writes it."""
        return self.log.end_of_stream_position

    @property
    def is_end_of_stream(self) -> bool:
        return self.position >= self.log.end_of_stream_position

    def __repr__(self) -> str:
        return (f"AeronImage(session_id={self.session_id}, stream_id={self.stream_id}, "
                f"source={self.source_identity!r}, position={self.position if not self.closed else 'closed'})")


class AeronSubscription(Subscription[AeronImage]):
    """A subscription of the media driver (made by `Aeron.add_subscription`).

    `poll`, `receive`, `poll_batch`, `images`, `is_connected`, `close` as `Subscription`.
    Image changes the driver announces are applied on the polling thread, at the start of
    poll/poll_batch and in receive's housekeeping: `on_available_image(image)` before the
    image's first message, `on_unavailable_image(image)` once it is gone.
    """

    def __init__(self, aeron: Any, channel: str, stream_id: int, registration_id: int,
                 on_available_image: Callable[[AeronImage], Any] | None,
                 on_unavailable_image: Callable[[AeronImage], Any] | None) -> None:
        # (Subscription.__init__ discovers lockstep's own log files: here the driver announces images.)
        self._aeron = aeron
        self.channel = channel
        self.stream_id = stream_id
        self.registration_id = registration_id
        self.dir = aeron.dir
        self.on_available_image = on_available_image
        self.on_unavailable_image = on_unavailable_image
        self._events: collections.deque[tuple[str, Any]] = collections.deque()  # from the conductor thread
        self._by_correlation_id: dict[int, AeronImage] = {}  # the images
        self._image_list = []
        self._rx = ReceiveAny(self._housekeeping, self._receive_blocking)  # (Subscription's `receive` hands calls to it)
        # poll(): one vectorcall into C (the images' C polls in turn); announced image changes
        # are applied first whenever there are any (`_events` not empty), as the Python poll does.
        self._poll_any = PollAny(self._housekeeping, AeronSubscription.poll.__get__(self), self._events)
        self._controlled_any = PollAny(self._housekeeping, AeronSubscription.controlled_poll.__get__(self),
                                       self._events, controlled=True)
        self._next_image = 0
        self._next_housekeeping_ns = 0
        self._polls = 0
        self._closed = False
        self.image_errors: list[Exception] = []  # images announced but not mappable

    # -- reading: apply the driver's image events first ---------------------------------------

    def poll(self, handler: Callable[[memoryview, Header], Any], fragment_limit: int = 10) -> int:
        """As Subscription.poll (images take turns); images announced meanwhile join first.
        (No periodic housekeeping: the driver announces what changes.)"""
        if self._events:
            self._apply_events()
        return self._poll_images(handler, fragment_limit)

    poll = fast_method("_poll_any", poll)

    def controlled_poll(self, handler: Callable[[memoryview, Header], Any], fragment_limit: int = 10) -> int:
        """As Subscription.controlled_poll; images announced meanwhile join first."""
        if self._events:
            self._apply_events()
        if self._closed:
            raise self._closed_error()
        return _controlled(self._controlled_any, handler, fragment_limit)

    controlled_poll = fast_method("_controlled_any", controlled_poll)

    def poll_batch(self, handler: Callable[[Batch], Any], fragment_limit: int = 1024) -> int:
        """As Subscription.poll_batch; images announced meanwhile join first."""
        if self._events:
            self._apply_events()
        if self._closed:
            raise self._closed_error()
        total = self._poll_batch_images(handler, fragment_limit)
        self._polls += 1  # (and events again now and then, as Subscription.poll_batch's housekeeping)
        if not self._polls & (1023 if total else 63):
            self._housekeeping()
        return total

    def _receive_blocking(self, timeout: float | None) -> bytes | None:
        """Nothing signals a driver's log: wait with a backoff idle (spin, yield, park <= 1 ms)."""
        if self._closed:
            raise ClosedError(f"subscription to {self.channel} stream {self.stream_id} is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        idle = BackoffIdleStrategy()
        while True:
            data = self._rx()
            if data is not None:
                return data
            if self._events:
                self._apply_events()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            idle.idle(0)

    def _housekeeping(self) -> None:
        if self._events:
            self._apply_events()

    def discover(self) -> int:
        """Apply image changes announced so far; returns the image count."""
        self._apply_events()
        return len(self._image_list)

    @property
    def is_connected(self) -> bool:
        """Whether at least one image (publisher session) is available."""
        if self._events:
            self._apply_events()
        return bool(self._image_list)

    # -- images ---------------------------------------------------------------------------

    def _apply_events(self) -> None:
        if self._closed:
            self._events.clear()
            return
        changed = False
        while self._events:
            kind, value = self._events.popleft()
            if kind == "available":
                if value.correlation_id in self._by_correlation_id:
                    continue
                try:
                    image = AeronImage(self, value)
                except (OSError, FileFormatError) as e:  # e.g. the log already gone again
                    self.image_errors.append(e)
                    continue
                self._by_correlation_id[value.correlation_id] = image
                self._set_images()
                changed = True
                if self.on_available_image is not None:
                    self.on_available_image(image)
            elif kind == "unavailable":
                gone = self._by_correlation_id.pop(value) if value in self._by_correlation_id else None
                if gone is not None:
                    image = gone
                    self._retire(image)
                    changed = True
            elif kind == "driver_gone":
                for image in list(self._by_correlation_id.values()):
                    self._by_correlation_id.pop(image.correlation_id)
                    self._retire(image)
                    changed = True
        if changed:
            self._set_images()

    def _retire(self, image: AeronImage) -> None:
        """The image is gone: out of the poll list first, then the callback, then unmap."""
        self._set_images()
        try:
            if self.on_unavailable_image is not None:
                self.on_unavailable_image(image)
        finally:
            image.close()

    def _set_images(self) -> None:
        self._image_list = list(self._by_correlation_id.values())
        self._rx.set_images(tuple(i._rx for i in self._image_list))
        self._set_poll_images()

    def _update_image_list(self) -> None:
        self._set_images()

    def add_destination(self, channel: str) -> None:
        """Multi-destination subscription: also receive from `channel` (a subscription on
        aeron:udp?control-mode=manual). Raises DriverError if refused."""
        self._aeron._destination(ADD_RCV_DESTINATION, self.registration_id, channel, "add_destination")

    def remove_destination(self, channel: str) -> None:
        self._aeron._destination(REMOVE_RCV_DESTINATION, self.registration_id, channel, "remove_destination")

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Remove the subscription from the driver and unmap its images (no callbacks)."""
        if self._closed:
            return
        self._closed = True
        self._poll_any.detach()  # poll() goes to the Python poll
        self._controlled_any.detach()  # controlled_poll() too
        images = list(self._by_correlation_id.values())
        self._by_correlation_id.clear()
        self._set_images()
        self._events.clear()
        for image in images:
            image.close()
        self._aeron._release_subscription(self)

    def __repr__(self) -> str:
        return (f"AeronSubscription({self.channel!r}, stream_id={self.stream_id}, images={len(self._image_list)}, "
                f"registration_id={self.registration_id})")
