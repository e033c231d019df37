"""`AeronPublication`: lockstep's `Publication` over a log buffer a media driver created —
the same C appender and offer fast path, flow-controlled by the driver's publisher-limit
counter, connected when the driver says so (the log's is_connected), removed on close."""

from __future__ import annotations

from typing import Any

from .._native import c_error, ffi, lib
from .._native._fastpath import Offer, TryClaim
from ..errors import FileFormatError
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import MappedFile
from ..transport.publication import _ERROR, CLOSED, BufferClaim, Publication, _claim_error
from .protocol import ADD_DESTINATION, REMOVE_DESTINATION, PublicationReady

__all__ = ["AeronPublication"]

TYPE_PUBLISHER_LIMIT = 1
_IS_CONNECTED_OFFSET = 136  # in the log metadata (int32, written by the driver only)


class AeronPublication(Publication):
    """A publication of the media driver (made by `Aeron.add_publication` / `add_exclusive_publication`).

    `offer`, `offer_batch`, `offer_many`, `try_claim`, `position`, `close` as `Publication`;
    `is_connected` is the driver's view (IPC: a subscriber is attached; UDP: status messages
    arrive). Returns BACK_PRESSURED at the driver's limit when connected, else NOT_CONNECTED,
    and CLOSED once closed or once the driver is gone.
    """

    def __init__(self, aeron: Any, channel: str, stream_id: int, ready: PublicationReady, exclusive: bool) -> None:
        # (Publication.__init__ creates lockstep's own log files: here the driver made the log.)
        self._aeron = aeron
        self.channel = channel
        self.stream_id = stream_id
        self.exclusive = exclusive
        self.dir = aeron.dir
        self.correlation_id = ready.correlation_id      # ours: what REMOVE_PUBLICATION names
        self.registration_id = ready.registration_id    # the (shared) publication's original id
        self.session_id = ready.session_id
        self.position_limit_counter_id = ready.position_limit_counter_id
        self.channel_status_indicator_id = ready.channel_status_indicator_id
        self.last_error = None  # the latest ON_PUBLICATION_ERROR from a receiver (DriverError)
        self._pub = None
        counters = aeron.counters
        info = counters.info(ready.position_limit_counter_id)
        if info.state != "allocated" or info.type_id != TYPE_PUBLISHER_LIMIT or info.registration_id != ready.registration_id:
            raise FileFormatError(counters.path, f"counter {ready.position_limit_counter_id}: expected the publisher "
                                  f"limit of registration {ready.registration_id}, found {info}")
        self.log = LogBuffer(MappedFile.open(ready.log_file))
        self.path = self.log.path
        if self.log.session_id != ready.session_id or self.log.stream_id != stream_id:
            self.log.close()
            raise FileFormatError(self.path, f"session/stream: expected {ready.session_id}/{stream_id}, found "
                                  f"{self.log.session_id}/{self.log.stream_id}")
        pub = ffi.new("ls_publication_t *")
        if lib.ls_publication_init(pub, self.log.file.pointer, self.log.file.length, exclusive, ffi.NULL) < 0:
            error = c_error(self.path)
            self.log.close()
            raise error
        self._limit_addr = lib.ls_counters_value_addr(counters.handle, ready.position_limit_counter_id)
        lib.ls_publication_bind_driver(pub, self._limit_addr)
        self._pub = pub
        self._view = self.log.file.memoryview()
        self._meta_words = self._view.cast("i")
        self._is_connected_index = (self.log.file.length - 4096 + _IS_CONNECTED_OFFSET) // 4
        self._claim = ffi.new("ls_buffer_claim_t *")
        self._batch_accepted = ffi.new("int32_t *")
        # offer(): one vectorcall into the C appender, as Publication's (its fallback: offer below).
        self._fast_offer = Offer(ffi.buffer(pub), AeronPublication.offer.__get__(self))
        self._fast_offer.retry_at_ns = (1 << 63) - 1  # the driver keeps limit and subscribers: nothing to retry
        # try_claim(): the C claim of Publication's (its fallback: Publication.try_claim).
        self._fast_try_claim = TryClaim(ffi.buffer(pub), self._view, AeronPublication.try_claim.__get__(self),
                                        BufferClaim, _claim_error, self._claim_failed)

    # -- what differs from a driverless publication ------------------------------------------

    def _after_failure(self, result: int, retry: Any) -> int:
        """The C appender already read the driver's limit and is_connected: nothing to retry."""
        if result == _ERROR:
            raise c_error(self.path)
        return result

    def _refresh_if_stalled(self, result: int) -> bool:
        return False

    def refresh(self) -> bool:
        """The driver keeps the limit and the subscribers: nothing to do here."""
        return False

    @property
    def is_connected(self) -> bool:
        """The driver's view: a subscriber (IPC) or a receiver (UDP status messages) is there."""
        if self._pub is None or self._pub.closed:
            return False
        return self._meta_words[self._is_connected_index] == 1

    @property
    def position_limit(self) -> int:
        """The driver's publisher limit: how far this publication may write."""
        if self._pub is None:
            return CLOSED
        return lib.ls_counters_get(self._aeron.counters.handle, self.position_limit_counter_id)

    def add_destination(self, channel: str) -> None:
        """Multi-destination cast: also send to `channel` (e.g. aeron:udp?endpoint=host:port)
        from a publication on aeron:udp?control-mode=manual. Raises DriverError if refused."""
        self._aeron._destination(ADD_DESTINATION, self.registration_id, channel, "add_destination")

    def remove_destination(self, channel: str) -> None:
        """Stop sending to a destination added before."""
        self._aeron._destination(REMOVE_DESTINATION, self.registration_id, channel, "remove_destination")

    def _driver_gone(self) -> None:
        """Called by the client's conductor when the driver died or dropped the client."""
        pub = self._pub
        if pub is not None:
            pub.closed = True

    def close(self, *, end_of_stream: bool = True) -> None:
        """Remove the publication from the driver (it ends the stream when the last user goes)."""
        if self._pub is None:
            return
        self._fast_offer.detach()
        self._fast_try_claim.detach()  # (a granted claim keeps the mapping until it is finished)
        pub, self._pub = self._pub, None
        lib.ls_publication_close(pub)  # bound to a driver: marks closed, leaves end of stream to it
        self._aeron._release_publication(self)
        self._meta_words.release()
        self._view.release()
        self.log.close()

    def __repr__(self) -> str:
        kind = "exclusive" if self.exclusive else "concurrent"
        return (f"AeronPublication({self.channel!r}, stream_id={self.stream_id}, session_id={self.session_id}, "
                f"{kind}, registration_id={self.registration_id})")
