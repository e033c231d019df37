"""Agrona-format ring buffers in mapped files: `OneToOneRing` (one producer) and
`ManyToOneRing` (any number of producer processes), each with one consumer."""

from __future__ import annotations

import operator
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, NoReturn

from .._closing import Closing, guarded
from .._native import c_error, fast_method, ffi, lib
from .._native._fastpath import Claim, RingRead, RingWrite, TryClaim
from ..errors import FileFormatError, InvalidArgumentError, LockstepError
from .controlled import ControlledAction
from .mapped import MappedFile

__all__ = ["OneToOneRing", "ManyToOneRing", "ControlledAction", "RingClaim"]

TRAILER_LENGTH: int = lib.LS_RB_TRAILER_LENGTH
_FULL: int = lib.LS_RB_FULL
_BATCH = 256
_NO_LIMIT = (1 << 31) - 1
_WAIT_SLICE_NS = 100_000_000  # a wait returns to Python this often (signals; a close from another thread)

Buffer = Any  # bytes-like: bytes, bytearray, memoryview, numpy array


def _check_capacity(capacity: int) -> None:
    if capacity < lib.LS_RB_MIN_CAPACITY or capacity & (capacity - 1) or capacity > 1 << 30:
        raise InvalidArgumentError(
            f"capacity: expected a power of two in [{lib.LS_RB_MIN_CAPACITY}, 2**30], found {capacity}")


class _Ring(Closing):
    _many_producers: bool = False
    # Slots: the write/read/controlled_read/try_claim methods read them without a lookup.
    __slots__ = ("_fast_write", "_fast_read", "_fast_controlled_read", "_fast_try_claim")

    def __init__(self, path: str | os.PathLike[str], capacity: int | None = None) -> None:
        self.path = Path(path)
        if capacity is not None:
            _check_capacity(capacity)
            self._file, _ = MappedFile.create_or_open(self.path, capacity + TRAILER_LENGTH)
        else:
            try:
                self._file = MappedFile.open(self.path)
            except FileNotFoundError:
                raise LockstepError(f"{self.path}: no ring here; pass capacity= to create one") from None
        rb = ffi.new("ls_ring_buffer_t *")
        if lib.ls_rb_init(rb, self._file.pointer, self._file.length, self._many_producers) < 0:
            error = c_error(self.path)
            self._file.close()
            raise error
        if capacity is not None and rb.capacity != capacity:
            found = rb.capacity
            self._file.close()
            raise FileFormatError(self.path, f"capacity: expected {capacity}, found {found}")
        self._rb = rb
        self._dependents: list = []  # objects with detach(), called before the ring is unmapped
        self._view = self._file.memoryview()
        # The head position and the record length there, read from Python: a hint that spares
        # the C call when the ring is empty (C re-reads both with acquire before trusting them).
        self._words = self._view.cast("i")
        self._longs = self._view.cast("q")
        self._head_index = (rb.capacity + lib.LS_RB_HEAD_POSITION_OFFSET) >> 3
        self._mask = rb.capacity - 1
        self._types = ffi.new("int32_t[]", _BATCH)
        self._offsets = ffi.new("int32_t[]", _BATCH)
        self._lengths = ffi.new("int32_t[]", _BATCH)
        self._consumed = ffi.new("int64_t[]", _BATCH)
        self._scanned = ffi.new("int64_t *")
        # write/read/controlled_read/try_claim: one vectorcall into C per call (the class's
        # methods are FastMethods handing calls to these); the Python bodies below are their
        # fallbacks. A read in C whose handler runs is a call in flight (`busy`): a close
        # meanwhile defers the unmap, and the read finishes the close when it returns.
        buffer = ffi.buffer(rb)
        self._fast_write = RingWrite(buffer, _Ring.write.__get__(self))
        self._fast_read = RingRead(buffer, _Ring.read.__get__(self), finish=self._finish_close)
        self._fast_controlled_read = RingRead(buffer, _Ring.controlled_read.__get__(self), True,
                                              finish=self._finish_close)
        self._fast_try_claim = TryClaim(buffer, self._view, _Ring.try_claim.__get__(self), RingClaim,
                                        self._claim_error, ring=True)
        self._dependents += [self._fast_write, self._fast_read, self._fast_controlled_read, self._fast_try_claim]
        self._c_calls = (self._fast_read, self._fast_controlled_read)

    # -- producer -------------------------------------------------------------------------

    def write(self, msg_type_id: int, data: Buffer) -> bool:  # (the instance's is the C object; its fallback)
        """Copy one message in. False when the ring is full (back-pressure; nothing is
        overwritten); raises InvalidArgumentError for type id < 1 or data > max_message_length."""
        token = self._token  # (the guard of `Closing`, inlined: None from the start of close())
        try:
            if token is None:  # (the closed class comes later in close(): a call between must not go on)
                _raise_closed(self)
            try:
                try:
                    rc = lib.ls_rb_write(self._rb, msg_type_id, data, len(data))
                except TypeError:  # not bytes: bytearray, memoryview, numpy
                    rc = lib.ls_rb_write(self._rb, msg_type_id, ffi.from_buffer(data), memoryview(data).nbytes)
            except OverflowError:  # type id outside int32: say so as for any other bad argument
                raise InvalidArgumentError(f"msg_type_id: expected an int32 >= 1, found {msg_type_id}") from None
            if rc == 0:
                return True
            if rc == _FULL:
                return False
            raise c_error(self.path)
        finally:
            del token

    write = fast_method("_fast_write", write)

    def try_claim(self, msg_type_id: int, length: int) -> "RingClaim | None":
        """Reserve `length` bytes to fill in place; None when the ring is full. Commit or
        abort the claim (a `with` block commits, or aborts on an exception). A finished claim
        nobody holds any more is reused by the next try_claim. (Runs in C; this body is its
        fallback: closed, keyword or out-of-range arguments.)"""
        self._rb  # noqa: B018 (ClosedError once closed)
        if self._token is None:  # inside close(), the C object detached: it would hand the call back here
            _raise_closed(self)
        msg_type_id, length = operator.index(msg_type_id), operator.index(length)
        if not (-1 << 31 <= msg_type_id < 1 << 31 and 0 <= length < 1 << 31):
            raise InvalidArgumentError(
                f"msg_type_id/length: expected an int32 >= 1 and 0..{self.max_message_length}, "
                f"found {msg_type_id}/{length}")
        return self._fast_try_claim(msg_type_id, length)

    try_claim = fast_method("_fast_try_claim", try_claim)

    def _claim_error(self, what: str) -> None:
        """Raise what a claim met: the C error, a closed ring, or a claim already finished."""
        if what == "c":
            raise c_error(self.path)
        if what == "closed":
            _raise_closed(self)
        raise LockstepError("claim already committed or aborted")

    @guarded
    def next_correlation_id(self) -> int:
        """A ring-wide unique, increasing id (Agrona's correlation counter)."""
        return lib.ls_rb_next_correlation_id(self._rb)

    # -- consumer -------------------------------------------------------------------------

    def read(self, handler: Callable[[int, memoryview], Any], limit: int = _NO_LIMIT) -> int:
        """Hand up to `limit` messages to `handler(msg_type_id, data)` and consume them.
        `data` views the ring and is valid only during the call. Returns the count."""
        token = self._token  # (the guard of `Closing`, inlined: None from the start of close())
        try:
            if token is None:  # (the closed class comes later in close(): a call between must not go on)
                _raise_closed(self)
            if not self._words[(self._longs[self._head_index] & self._mask) >> 2]:
                return 0
            rb, view, types, offsets, lengths = self._rb, self._view, self._types, self._offsets, self._lengths
            total = 0
            while total < limit:
                want = min(limit - total, _BATCH)
                n = lib.ls_rb_scan(rb, types, offsets, lengths, self._consumed, want, self._scanned)
                if n < 0:
                    raise c_error(self.path)
                i = 0
                try:
                    for i in range(n):
                        offset = offsets[i]
                        handler(types[i], view[offset:offset + lengths[i]])
                except BaseException:
                    lib.ls_rb_consume(rb, self._consumed[i])
                    raise
                lib.ls_rb_consume(rb, self._scanned[0])
                total += n
                if n < want:
                    break
            return total
        finally:
            del token

    read = fast_method("_fast_read", read)

    @guarded
    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a producer commits a message (a futex wake-up rung by write, commit and
        abort; no spinning), at most `timeout` seconds (None: no limit). True when something
        may be there to read, False on timeout. Returns at once when a message is there."""
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        while True:
            slice_ns = _WAIT_SLICE_NS if deadline is None else min(_WAIT_SLICE_NS, deadline - time.monotonic_ns())
            if lib.ls_rb_wait(self._rb, max(slice_ns, 0)):
                return True
            if deadline is not None and time.monotonic_ns() >= deadline:
                return False

    def doorbells(self, rings: list, images: list) -> None:
        """For `BlockingIdleStrategy`: this ring's consumer doorbell."""
        rings.append(self._rb)

    @guarded
    def controlled_read(
        self, handler: Callable[[int, memoryview], ControlledAction], limit: int = _NO_LIMIT
    ) -> int:
        """Like `read`, but the handler returns a `ControlledAction` per message."""
        token = self._token  # (the guard of `Closing`, inlined: None from the start of close())
        try:
            if token is None:  # (the closed class comes later in close(): a call between must not go on)
                _raise_closed(self)
            rb, view = self._rb, self._view
            n = lib.ls_rb_scan(rb, self._types, self._offsets, self._lengths, self._consumed,
                               min(limit, _BATCH), self._scanned)
            if n < 0:
                raise c_error(self.path)
            done = 0  # bytes already consumed in this call
            handled = 0
            end = self._scanned[0]
            try:
                for i in range(n):
                    offset = self._offsets[i]
                    action = handler(self._types[i], view[offset:offset + self._lengths[i]])
                    if action == ControlledAction.ABORT:
                        end = self._consumed[i - 1] if i else 0
                        break
                    handled += 1
                    if action == ControlledAction.BREAK:
                        end = self._consumed[i]
                        break
                    if action == ControlledAction.COMMIT:
                        lib.ls_rb_consume(rb, self._consumed[i] - done)
                        done = self._consumed[i]
            except BaseException:
                lib.ls_rb_consume(rb, self._consumed[handled] - done)
                raise
            lib.ls_rb_consume(rb, max(end - done, 0))
            return handled
        finally:
            del token  # the last one out of a closed ring tears it down

    controlled_read = fast_method("_fast_controlled_read", controlled_read)

    @guarded
    def unblock(self) -> bool:
        """Free the ring from a producer that died between claim and commit: turn its record
        (or the unwritten gap) into padding. Call it only when the consumer position has not
        moved for a timeout while size() > 0. Returns whether anything was unblocked."""
        return bool(lib.ls_rb_unblock(self._rb))

    @guarded
    def recover(self) -> int:
        """For a consumer taking over from one that died mid-read: finish the consume it had
        begun (it records its target head first), skipping exactly the records it had read
        and handled once already, nothing else. Returns bytes skipped."""
        return lib.ls_rb_recover(self._rb)

    @property
    @guarded
    def consumer_heartbeat_time(self) -> int:
        """The consumer's last heartbeat (epoch ms), for producers checking it is alive."""
        return lib.ls_rb_consumer_heartbeat_time_value(self._rb)

    @guarded
    def heartbeat(self, now_ms: int | None = None) -> None:
        """Record that the consumer is alive (epoch ms; now by default)."""
        lib.ls_rb_consumer_heartbeat_time(self._rb, int(time.time() * 1000) if now_ms is None else now_ms)

    # -- state ----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Data bytes (a power of two); the file is capacity + 768 trailer bytes."""
        return self._rb.capacity

    @property
    def max_message_length(self) -> int:
        """The longest payload one message may have (capacity / 8)."""
        return self._rb.max_message_length

    @guarded
    def size(self) -> int:
        """Bytes written and not yet consumed (record headers and padding included)."""
        return lib.ls_rb_size(self._rb)

    @property
    @guarded
    def producer_position(self) -> int:
        return lib.ls_rb_producer_position(self._rb)

    @property
    @guarded
    def consumer_position(self) -> int:
        return lib.ls_rb_consumer_position(self._rb)

    @property
    def handle(self) -> Any:
        """The C ring this object owns (`ls_ring_buffer_t *`), for C code that works on it (the
        sequencer, its clients' sends); ClosedError once closed."""
        return self._rb

    def add_dependent(self, borrower: Any) -> None:
        """Call `borrower.detach()` before the ring is unmapped: a C object that keeps `handle`."""
        self._dependents.append(borrower)

    def close(self) -> None:
        """Unmap the ring (once no call on it is in flight in another thread); the file stays
        for other processes. Using it afterwards raises ClosedError."""
        super().close()

    def _detach(self) -> None:
        for dependent in self._dependents:  # C objects holding the ring's address
            dependent.detach()
        self.__class__ = _closed_class(type(self))

    def _teardown(self) -> None:
        fields = vars(self)  # (the closed class hides `_words`)
        fields["_words"].release()
        self._longs.release()
        self._view.release()
        self._file.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"capacity={self.capacity} size={self.size()}"
        return f"{type(self).__name__}({str(self.path)!r}, {state})"


def _raise_closed(ring: _Ring) -> NoReturn:
    raise ring._closed_error()


_CLOSED_CLASSES: dict[type, type] = {}


def _closed_class(cls: type) -> type:
    """A subclass of `cls` whose `_rb` raises ClosedError. A closed ring is switched to it,
    so every use of the C state fails cleanly, at no cost to an open ring's hot path (a
    __getattr__ hook or an is-closed check would slow every call)."""
    closed = _CLOSED_CLASSES.get(cls)
    if closed is None:
        closed = _CLOSED_CLASSES[cls] = type(cls.__name__, (cls,), {
            "_rb": property(_raise_closed), "_words": property(_raise_closed),
            "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return closed


class RingClaim(Claim):
    """Space claimed in a ring: fill `buffer`, then `commit()` (or `abort()`); `index` is
    where it is. Commit/abort and the attributes are C (lockstep._native._fastpath.Claim)."""

    __slots__ = ()

    def __enter__(self) -> "RingClaim":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            self.commit() if exc_type is None else self.abort()


class OneToOneRing(_Ring):
    """A ring with one producer and one consumer (single-writer tail: the fastest)."""

    _many_producers = False


class ManyToOneRing(_Ring):
    """A ring any number of producers (threads or processes) write into; one consumer."""

    _many_producers = True
