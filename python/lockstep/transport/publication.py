"""`Publication`: writes a stream into an Aeron-format log buffer, shared by many writers
or exclusive to one, back-pressured by the slowest live subscriber."""

from __future__ import annotations

import os
import random
import time
from enum import IntEnum
from types import TracebackType
from typing import Any, Callable, Sequence

import numpy as np

from .._closing import Closing, guarded
from .._native._fastpath import Claim, Offer, TryClaim
from .._native import c_error, fast_method, ffi, lib
from .client import (DEFAULT_LIVENESS_TIMEOUT_MS, STREAM_KEY, TYPE_EVICTIONS, TYPE_PUBLISHER_LIMIT,
                     TYPE_SUBSCRIBER_POSITION, check_timeout_ms, client_for, is_alive)
from ..errors import InvalidArgumentError, LockstepError
from .logbuffer import DEFAULT_MTU_LENGTH, DEFAULT_TERM_LENGTH, LogBuffer
from .mapped import resolve_dir
from .stream_files import exclusive_log_path, shared_log_path

__all__ = ["Publication", "BufferClaim", "OfferStatus", "NOT_CONNECTED", "BACK_PRESSURED", "ADMIN_ACTION", "CLOSED",
           "MAX_POSITION_EXCEEDED", "status_name"]


class OfferStatus(IntEnum):
    """The negative results of `offer`/`offer_batch`/`try_claim`: Aeron's values, so they
    compare equal to -1..-5 (the C fast path returns the plain ints)."""

    NOT_CONNECTED = -1          # no subscriber (or driver receiver) yet
    BACK_PRESSURED = -2         # the slowest subscriber is a window behind: retry later
    ADMIN_ACTION = -3           # the log rotated a term meanwhile: retry at once
    CLOSED = -4                 # the publication is closed
    MAX_POSITION_EXCEEDED = -5  # the stream's last position is reached


NOT_CONNECTED = OfferStatus.NOT_CONNECTED
BACK_PRESSURED = OfferStatus.BACK_PRESSURED
ADMIN_ACTION = OfferStatus.ADMIN_ACTION
CLOSED = OfferStatus.CLOSED
MAX_POSITION_EXCEEDED = OfferStatus.MAX_POSITION_EXCEEDED
_ERROR = -6
_LIVENESS_CHECK_INTERVAL_NS = 100_000_000

Buffer = Any


def status_name(value: int) -> str:
    """'NOT_CONNECTED' etc. for a negative offer result; the position as text otherwise."""
    try:
        return OfferStatus(value).name
    except ValueError:
        return str(int(value))


class Publication(Closing):
    """Publishes messages on `stream_id` to every subscriber of the directory.

    `offer` returns the new stream position (> 0) or a negative status: NOT_CONNECTED (no
    subscriber), BACK_PRESSURED (the slowest subscriber is a window behind: retry later),
    ADMIN_ACTION (retry now), CLOSED, MAX_POSITION_EXCEEDED. Nothing unread is overwritten.

    `session_id` (exclusive only) opens that session's log if it exists and continues it:
    the caller must make sure its previous writer is gone (the sequencer holds a lock).
    """

    __slots__ = ("_fast_offer", "_fast_try_claim")  # slots: the offer/try_claim methods read them without a lookup

    def __init__(self, stream_id: int, dir: str | os.PathLike[str] | None = None, *, exclusive: bool = False,
                 term_length: int = DEFAULT_TERM_LENGTH, mtu_length: int = DEFAULT_MTU_LENGTH,
                 liveness_timeout_ms: int = DEFAULT_LIVENESS_TIMEOUT_MS, session_id: int | None = None) -> None:
        self.stream_id = stream_id
        self.exclusive = exclusive
        self.dir = resolve_dir(dir)
        self.liveness_timeout_ms = check_timeout_ms("liveness_timeout_ms", liveness_timeout_ms)
        self._end_of_stream = True  # what close() does with the log (see close)
        self._client = client_for(self.dir)
        self._counters = self._client.counters
        rng = random.SystemRandom()
        if session_id is not None and not exclusive:
            raise InvalidArgumentError("session_id: only an exclusive publication names its session")
        resume = session_id is not None
        while True:
            session = session_id if session_id is not None else rng.randint(-(1 << 31), (1 << 31) - 1)
            path = (exclusive_log_path(self.dir, stream_id, session) if exclusive
                    else shared_log_path(self.dir, stream_id))
            log, created = LogBuffer.create(path, term_length=term_length, mtu_length=mtu_length,
                                            session_id=session, stream_id=stream_id,
                                            initial_term_id=rng.randint(-(1 << 31), (1 << 31) - 1),
                                            correlation_id=self._client.next_registration_id())
            if created or not exclusive or resume:
                break  # (resume: the caller owns the session and continues its log)
            log.close()  # an exclusive session id already in use: draw again
        if not exclusive and log.term_length != term_length and term_length != DEFAULT_TERM_LENGTH:
            log.close()
            raise InvalidArgumentError(
                f"{path}: term_length {term_length} differs from the existing shared log's {log.term_length}")
        self.log = log
        self.path = log.path
        self.session_id = log.session_id
        self.registration_id = self._client.next_registration_id()
        self._pub = ffi.new("ls_publication_t *")
        if lib.ls_publication_init(self._pub, log.file.pointer, log.file.length, exclusive, self._counters.handle) < 0:
            error = c_error(self.path)
            log.close()
            raise error
        key = STREAM_KEY.pack(self.registration_id, self.session_id, stream_id)
        self._limit_counter = self._counters.allocate(
            TYPE_PUBLISHER_LIMIT, f"pub-lmt: {self.registration_id} {stream_id} {self.session_id}",
            key=key, registration_id=self.registration_id, reference_id=self._client.heartbeat.id)
        self._pub.publisher_limit_id = self._limit_counter.id
        self._evictions = self._counters.allocate(
            TYPE_EVICTIONS, f"evicted-subscribers: {stream_id} {self.session_id}", key=key,
            registration_id=self.registration_id, reference_id=self._client.heartbeat.id)
        self._next_liveness_check_ns = 0
        self._view = log.file.memoryview()
        self._batch_accepted = ffi.new("int32_t *")
        # offer(): one vectorcall into C per message (the class's `offer` is a FastMethod handing
        # calls to it); whatever it does not finish goes to the Python `offer` below.
        self._fast_offer = Offer(ffi.buffer(self._pub), Publication.offer.__get__(self))
        # try_claim(): one vectorcall into C handing back one reused BufferClaim (commit in C);
        # the class's `try_claim` is a FastMethod handing calls to it.
        self._fast_try_claim = TryClaim(ffi.buffer(self._pub), self._view, Publication.try_claim.__get__(self),
                                        BufferClaim, _claim_error, self._claim_failed)
        self.refresh()

    # -- publishing -----------------------------------------------------------------------

    def offer(self, data: Buffer, reserved_value: int = 0) -> int:
        """Append one message (fragmented if longer than one frame). Returns the new stream
        position, or a negative status (see the class docstring); CLOSED once closed."""
        token = self._token  # (the guard of `Closing`, inlined: None once closed)
        try:
            if token is None:
                return CLOSED
            return self._offer(data, reserved_value)
        finally:
            del token

    def _offer(self, data: Buffer, reserved_value: int = 0) -> int:
        """Append one message (fragmented if longer than one frame). Returns the new stream
        position, or a negative status (see the class docstring)."""
        pub = self._pub
        if pub is None:  # closed: the log is unmapped, never hand C a NULL publication
            return CLOSED
        try:
            result = lib.ls_publication_offer(pub, data, len(data), reserved_value)
        except TypeError:  # not bytes: bytearray, memoryview, numpy
            view = memoryview(data)  # (TypeError for what is no buffer at all)
            if not view.c_contiguous:
                raise InvalidArgumentError("data: expected a contiguous buffer (copy it, e.g. bytes(data))") from None
            result = lib.ls_publication_offer(pub, ffi.from_buffer(view), view.nbytes, reserved_value)
        if result > 0:
            return result
        return self._after_failure(result, lambda: self.offer(data, reserved_value))

    def _after_failure(self, result: int, retry: Callable[[], int]) -> int:
        """Slow path: errors raise; NOT_CONNECTED/BACK_PRESSURED re-check subscribers (new ones,
        dead ones) at most every 100 ms and retry once."""
        if result == _ERROR:
            raise c_error(self.path)
        if result in (NOT_CONNECTED, BACK_PRESSURED) and self.refresh():
            return retry()
        if self._closed:
            return CLOSED
        return result

    offer = fast_method("_fast_offer", offer)

    def offer_batch(self, data: Buffer, offsets: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
        """Offer many messages in one call (see `_offer_batch`); (0, CLOSED) once closed."""
        token = self._token  # (the guard of `Closing`, inlined: None once closed)
        try:
            if token is None:
                return 0, CLOSED
            return self._offer_batch(data, offsets, lengths)
        finally:
            del token

    def _offer_batch(self, data: Buffer, offsets: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
        """Offer many messages in one call: message i is data[offsets[i]:offsets[i]+lengths[i]].
        Returns (how many were accepted, position after them or the status that stopped the first)."""
        offsets = _integers("offsets", offsets, np.int64)
        lengths = _integers("lengths", lengths, np.int32)
        if offsets.shape != lengths.shape or offsets.ndim != 1:
            raise InvalidArgumentError("offsets and lengths: expected two 1-d arrays of the same length")
        if len(offsets) and (offsets.min() < 0 or lengths.min() < 0
                             or int((offsets + lengths).max()) > memoryview(data).nbytes):
            raise InvalidArgumentError("offsets/lengths: a message lies outside data")
        if self._pub is None:
            return 0, CLOSED
        accepted = self._batch_accepted
        total = 0
        result = 0
        for _ in range(2):
            result = lib.ls_publication_offer_batch(
                self._pub, ffi.from_buffer(data), ffi.from_buffer("int64_t[]", offsets[total:]),
                ffi.from_buffer("int32_t[]", lengths[total:]), len(offsets) - total, accepted)
            total += accepted[0]
            if total == len(offsets) or result == _ERROR or not self._refresh_if_stalled(result):
                break
        if result == _ERROR:
            raise c_error(self.path)
        return total, result

    def offer_many(self, messages: Sequence[bytes]) -> tuple[int, int]:
        """Offer a list of bytes messages in one call (see `offer_batch`)."""
        lengths = np.fromiter((len(m) for m in messages), dtype=np.int32, count=len(messages))
        offsets = np.zeros(len(messages), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return self.offer_batch(b"".join(messages), offsets, lengths)

    def _refresh_if_stalled(self, result: int) -> bool:
        return result in (NOT_CONNECTED, BACK_PRESSURED) and self.refresh()

    def try_claim(self, length: int) -> "BufferClaim":
        """Claim `length` bytes to write in place (see `_try_claim`); a falsy claim, status CLOSED, once closed."""
        token = self._token  # (the guard of `Closing`, inlined: None once closed)
        try:
            if token is None:
                return BufferClaim(CLOSED, _claim_error)
            return self._try_claim(length)
        finally:
            del token

    try_claim = fast_method("_fast_try_claim", try_claim)

    def _try_claim(self, length: int) -> "BufferClaim":
        """Claim `length` bytes (at most max_payload_length) to write in place. The claim is
        truthy on success: fill `claim.buffer`, then `commit()` (or `abort()`); when falsy,
        `claim.status` says why (NOT_CONNECTED, BACK_PRESSURED, ...). A finished claim nobody
        holds any more is reused by the next try_claim (no new object per message). A granted
        claim keeps the mapping alive until it is finished, so commit/abort after close() is safe.
        (Runs in C; this body is its fallback: odd arguments, closed.)"""
        if self._pub is None:  # (a subclass closed its own way)
            return BufferClaim(CLOSED, _claim_error)
        claim = self._fast_try_claim.attempt(length)
        return self._claim_failed(length, claim) if isinstance(claim, int) else claim

    def _claim_failed(self, length: int, result: int) -> "BufferClaim":
        """What a failed claim leaves to Python (the C try_claim calls it too): errors raise;
        NOT_CONNECTED/BACK_PRESSURED re-check subscribers and retry once; CLOSED once closed
        (a call in flight: the re-check releases the GIL, so a close may come meanwhile)."""
        token = self._token  # (the guard of `Closing`, inlined: it returns a claim, not a constant)
        try:
            if token is None:
                return BufferClaim(CLOSED, _claim_error)
            got = self._after_failure(result, lambda: CLOSED if self._closed else self._fast_try_claim.attempt(length))
            if isinstance(got, BufferClaim):
                return got
            if got == _ERROR:
                raise c_error(self.path)
            return BufferClaim(got, _claim_error)
        finally:
            del token

    # -- flow control ---------------------------------------------------------------------

    def refresh(self) -> bool:
        """Drop dead subscribers (pid gone or heartbeat stale) and recompute the limit (offer
        does it when held back; a C loop that only offers, as the sequencer's, calls it). Returns
        whether the limit moved or subscribers appeared (worth a retry); rate-limited."""
        now = time.monotonic_ns()
        if now < self._next_liveness_check_ns or self._closed:
            return False  # (a back-pressured spin: before the guard, which costs a call)
        return self._refresh_now(now)

    @guarded(closed=False)
    def _refresh_now(self, now: int) -> bool:
        self._next_liveness_check_ns = now + _LIVENESS_CHECK_INTERVAL_NS
        self._fast_offer.retry_at_ns = self._next_liveness_check_ns  # (till then a held-back offer is C only)
        before = self._pub.position_limit, self._pub.subscriber_count
        for info in self._subscribers():
            if not is_alive(self._counters, info, self.liveness_timeout_ms):
                try:
                    self._counters.free(info.id)
                    self._evictions.add(1)
                except LockstepError:
                    pass  # another publisher freed it first
        lib.ls_publication_refresh_limit(self._pub)
        return (self._pub.position_limit, self._pub.subscriber_count) != before

    def _subscribers(self):
        """Position counters of this log's subscribers."""
        return self._counters.find_stream(TYPE_SUBSCRIBER_POSITION, self.session_id, self.stream_id)

    @property
    @guarded(closed=False)
    def is_connected(self) -> bool:
        """Whether a subscriber is attached (as of the last limit check)."""
        self.refresh()
        if self._pub.subscriber_count == 0:  # refresh is rate-limited: look again, as offer does
            lib.ls_publication_refresh_limit(self._pub)
        return self._pub.subscriber_count > 0

    @property
    @guarded(closed=CLOSED)
    def position(self) -> int:
        """The stream position after the last message appended (by any writer of the log);
        CLOSED once closed."""
        return lib.ls_publication_position(self._pub)

    @property
    def position_limit(self) -> int:
        """How far this publisher may write before it is back-pressured (ClosedError once closed)."""
        self._check_open()
        return self._pub.position_limit

    @property
    def handle(self) -> Any:
        """The C publication this object owns (`ls_publication_t *`), for C code that appends
        through it (the sequencer's loop); ClosedError once closed."""
        self._check_open()
        return self._pub

    @property
    def max_payload_length(self) -> int:
        """The largest message that goes in one frame (and the most `try_claim` takes)."""
        return self.log.max_payload_length

    @property
    def max_message_length(self) -> int:
        """The largest message `offer` takes (fragmented)."""
        return self.log.max_message_length

    @property
    def term_length(self) -> int:
        return self.log.term_length

    # -- life cycle -----------------------------------------------------------------------

    def close(self, *, end_of_stream: bool = True) -> None:
        """Stop publishing. An exclusive log ends at the current position (end of stream);
        it is removed at once if no subscriber is attached, else by the last one to drain it.
        With end_of_stream=False the log stays open for a later `Publication(...,
        session_id=...)` to resume (subscribers wait for it). A call in flight on another
        thread finishes first (the stream ends after it); later calls return CLOSED."""
        if not self._closed:
            self._end_of_stream = end_of_stream
        super().close()

    def _detach(self) -> None:
        self._fast_offer.detach()  # later offers go to the Python offer: CLOSED
        self._fast_try_claim.detach()  # and claims to the Python try_claim: CLOSED

    def _teardown(self) -> None:
        pub, self._pub = self._pub, None
        if not self._end_of_stream:
            self._view.release()
            self.log.close()
            for counter in (self._limit_counter, self._evictions):
                counter.free_quietly()
            return
        lib.ls_publication_close(pub)
        for counter in (self._limit_counter, self._evictions):
            counter.free_quietly()
        if self.exclusive and not any(is_alive(self._counters, s, self.liveness_timeout_ms)
                                      for s in self._subscribers()):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._view.release()
        self.log.close()

    def __repr__(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        return f"Publication(stream_id={self.stream_id}, session_id={self.session_id}, {kind}, path={str(self.path)!r})"


def _integers(name: str, values: Any, dtype: type) -> np.ndarray:
    """`values` as a contiguous array of `dtype`; anything but integers (floats would be
    truncated silently) is an InvalidArgumentError."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu" and array.size:
        raise InvalidArgumentError(f"{name}: expected integers, found {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _claim_error(what: str) -> None:
    """Raise what a BufferClaim's commit/abort met: the C error, or a claim already finished."""
    if what == "c":
        raise c_error()
    raise LockstepError("claim already committed, aborted, or never granted")


class BufferClaim(Claim):
    """A frame claimed by `Publication.try_claim`: write `buffer`, then `commit()` (or
    `abort()`); `status` is the position after it, or why there is no claim. Commit/abort and
    the attributes are C (lockstep._native._fastpath.Claim)."""

    __slots__ = ()

    @property
    def position(self) -> int:
        return self.status

    def __enter__(self) -> "BufferClaim":
        if not self:
            raise LockstepError(f"no claim: {status_name(self.status)}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            self.commit() if exc_type is None else self.abort()
