"""`LogReader`: reads whole messages from one log buffer (one publisher session) from a
position — the engine under every subscription image, and usable alone on a file (e.g. a
log buffer copied from a real Aeron driver) for tools and tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._closing import Closing, guarded
from .._native._fastpath import Header, Poll, PollAny, Receive
from .._native import c_error, fast_method, ffi, lib
from ..errors import ImageLostError, InvalidArgumentError
from .controlled import ControlledAction
from .logbuffer import LogBuffer

__all__ = ["LogReader", "Header", "Batch"]

_BATCH = 1024


class Batch:
    """Messages handed over at once: message i is buffer[offsets[i]:offsets[i] + lengths[i]];
    positions[i] is the stream position after it. Views, valid only during the handler call."""

    __slots__ = ("buffer", "offsets", "lengths", "positions", "session_id", "stream_id")

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, positions: np.ndarray,
                 session_id: int, stream_id: int) -> None:
        self.buffer = buffer
        self.offsets = offsets
        self.lengths = lengths
        self.positions = positions
        self.session_id = session_id
        self.stream_id = stream_id

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> memoryview:
        o = int(self.offsets[i])
        return self.buffer.data[o:o + int(self.lengths[i])]


def _controlled(fast: PollAny, handler: Callable[[memoryview, Header], Any], limit: Any) -> int:
    """A controlled poll through its C object `fast`, from the Python method it stands in for
    (a call it did not take: a keyword argument, a limit that is not an int)."""
    if not isinstance(limit, int):
        raise InvalidArgumentError(f"fragment limit: expected an int, found {limit!r}")
    if not -(1 << 63) <= limit < 1 << 63:  # (what C takes: a larger one would come back here)
        raise InvalidArgumentError(f"fragment limit: expected an int of 64 bits, found {limit}")
    n: int = fast(handler, limit)
    return n


class LogReader(Closing):
    """Whole messages of one log buffer from `position` on (fragments reassembled).

    `position_addr` is where the position lives (a shared counter for subscriptions);
    by default a private one. `position=None` starts at the retained start."""

    __slots__ = ("_fast_poll", "_fast_controlled", "_rx")  # slots: the poll methods read them without a lookup
    # Whether the log's bytes are reclaimed as soon as the position passes them (a media
    # driver's): the C poll then stores the position only after the handlers, on every path.
    _deferred_commit = False

    def __init__(self, log: LogBuffer | str | os.PathLike[str], position: int | None = None,
                 position_addr: Any = None) -> None:  # (a cffi int64_t *)
        self.log = log if isinstance(log, LogBuffer) else LogBuffer.open(log)
        self.path: Path = self.log.path
        self.session_id = self.log.session_id
        self.stream_id = self.log.stream_id
        if position is None:
            position = self.log.retained_start_position
        self._position_cell = ffi.new("int64_t *") if position_addr is None else None
        self._image = ffi.new("ls_image_t *")
        addr = self._position_cell if position_addr is None else position_addr
        self._private = position_addr is None  # nothing holds the writers back: it can be lapped
        self._unchecked = False  # views were handed out since the last check that they were intact
        init = lib.ls_image_init if self.log.tailed else lib.ls_image_init_untailed  # (a driver's image log)
        if init(self._image, self.log.file.pointer, self.log.file.length, addr, position) < 0:
            error = c_error(self.path)
            self.log.close()
            raise error
        self._view = self.log.file.memoryview()
        term_length = self.log.term_length
        self._terms = [self._view[i * term_length:(i + 1) * term_length] for i in range(3)]
        scan = self._scan_out = ffi.new("ls_image_scan_t *")
        self._parts, self._offsets, self._lengths, self._headers = (
            scan.partitions, scan.data_offsets, scan.lengths, scan.headers)
        self._np_offsets = np.frombuffer(ffi.buffer(self._offsets), dtype=np.int32)
        self._np_lengths = np.frombuffer(ffi.buffer(self._lengths), dtype=np.int32)
        self._np_positions = np.frombuffer(ffi.buffer(self._headers), dtype=np.dtype({
            "names": ["position"], "formats": ["<i8"], "offsets": [0],
            "itemsize": ffi.sizeof("ls_frame_header_t")}))["position"]
        # The frame length at our position (`_words[_rx.peek]`), read from Python: a hint that
        # spares the C call when nothing is there (C re-reads it with acquire before trusting it).
        self._words = self._view.cast("i")
        # receive(): one vectorcall into C per message (the class's `receive` is a FastMethod
        # handing calls to it); it keeps the peek hint that poll() shares.
        self._rx = Receive(
            ffi.buffer(self._image), lib.ls_image_length_index(self._image, position), self._receive_slow)
        # poll(): one vectorcall into C per call (the class's `poll` is a FastMethod that hands
        # calls to it); it shares receive()'s peek hint, and its Header is the one poll() fills.
        # While its handler runs the C poll is a call in flight (`busy`): the teardown of a close
        # meanwhile waits, and the poll finishes the close when it returns. A failed read goes to
        # `_failed`, as in the Python poll.
        self._fast_poll = Poll(ffi.buffer(self._image), ffi.buffer(scan), self._rx, LogReader.poll.__get__(self),
                               failed=self._failed, finish=self._finish_close, deferred=self._deferred_commit)
        # controlled_poll(): the same C poll, its handler's ControlledAction deciding what is consumed.
        self._fast_controlled = PollAny(None, LogReader.controlled_poll.__get__(self), controlled=True)
        self._fast_controlled.set_images((self._fast_poll,))
        self._c_calls = (self._fast_poll,)
        self._header: Header = self._fast_poll.header

    @property
    def position(self) -> int:
        return lib.ls_image_position(self._image)

    def unblock(self) -> bool:
        """Pad the frame at the position when its writer died between claim and commit, so
        reading goes on past it (what Aeron's driver does for a stuck publication); True if it
        padded. The log must be mapped writable (a sequencer taking over its predecessor's)."""
        return bool(lib.ls_image_unblock(self._image))

    @guarded
    def block_poll(self, handler: Callable[[memoryview, int], Any], message_limit: int = 1024) -> int:
        """Aeron's blockPoll: move past up to `message_limit` whole messages and hand the bytes
        they span to `handler(block, position)`, frames exactly as they lie in the term (padding
        and fragments included), one call per term crossed; for copying a stream as it is (the
        archive's recorder). `block` is valid during the call. A handler that raises has its
        block not consumed: the next block_poll hands it again. Returns the bytes passed."""
        if not self._words[self._rx.peek]:
            return 0  # (the hint: nothing at the position, no C call)
        start = position = self.position
        if self._scan(message_limit) < 0:
            return 0  # lost (told, as by poll)
        end = self._scan_out.end_position  # (a driver's image stores it only after the handlers)
        mask = self.log.term_length - 1
        shift = mask.bit_length()
        while position < end:
            chunk_end = min(end, (position | mask) + 1)  # within one term
            offset = position & mask
            block = self._terms[(position >> shift) % 3][offset:offset + chunk_end - position]
            try:
                handler(block, position)
            except BaseException:
                self._rewind_to(position)
                raise
            finally:
                block.release()
            position = chunk_end
        self._commit()
        return end - start

    def _scan(self, limit: int) -> int:
        """Scan up to `limit` messages and move the position past them (one C call); -1 when
        the reader was lost (and told so, see `_failed`)."""
        scan = self._scan_out
        n = lib.ls_image_scan_commit(self._image, scan, limit)
        if n < 0:
            self._failed(n)
            return -1
        self._rx.peek = scan.end_length_index
        if n:
            self._unchecked = True
        return n

    def _nothing_yet(self) -> int:
        """0 for a poll that found no frame. First (once after views were handed out, or always
        for a private reader, which may be lapped into a cleaned partition) one C call confirms
        the views were intact, so a loss found later starts at the position."""
        if self._unchecked or self._private:
            self._unchecked = False
            status = lib.ls_image_check(self._image)
            if status < 0:
                self._failed(status)
        return 0

    def _failed(self, status: int) -> None:
        """A C read failed: lapped (or evicted) raises ImageLostError, anything else the C error.
        (An Image hands a loss to its subscription, which may tell a handler instead.)"""
        if status not in (lib.LS_IMAGE_LAPPED, lib.LS_IMAGE_NOT_OWNER):
            raise c_error(self.path)
        reason, from_position = self._loss(status)
        raise ImageLostError(self.path, self.stream_id, self.session_id, from_position, self.log.tail_position, reason)

    def _loss(self, status: int) -> tuple[str, int]:
        """Why the reader was lost (the C error text) and from which position nothing it was
        handed can be trusted."""
        lapped = lib.ls_image_is_lapped(self._image)  # (sets the error text when it is)
        if status == lib.LS_IMAGE_NOT_OWNER and not lapped:
            return "evicted: its position counter was freed by a publisher that took it for dead", self.position
        detail = ffi.string(lib.ls_errmsg()).decode("utf-8", "replace")
        return detail.split(": ", 1)[-1], min(self._image.unverified_from, self.position)

    def _rewind(self, i: int) -> None:
        """A handler failed on message i: it counts as consumed, the rest do not."""
        self._rewind_to(self._headers[i].position)

    def _rewind_to(self, position: int) -> None:
        """Move back to `position`, just scanned past (its bytes still intact: rotation cleans
        two terms ahead of the window): what a failed handler leaves unconsumed."""
        lib.ls_image_set_position(self._image, position)
        self._rx.peek = lib.ls_image_length_index(self._image, position)

    def poll(self, handler: Callable[[memoryview, Header], Any], limit: int = 10) -> int:
        """Hand up to `limit` messages to `handler(data, header)`; returns how many (see `_poll`).
        ClosedError once closed; a close() meanwhile, from the handler or another thread, waits for it."""
        token = self._token  # (the guard of `Closing`, inlined: None once closed)
        try:
            if token is None:
                raise self._closed_error()
            return self._poll(handler, limit)
        finally:
            del token

    poll = fast_method("_fast_poll", poll)

    def controlled_poll(self, handler: Callable[[memoryview, Header], ControlledAction | None], limit: int = 10) -> int:
        """Like `poll`, but `handler(data, header)` returns a `ControlledAction` (Aeron's
        controlledPoll): ABORT leaves the message unread and stops, BREAK consumes it and stops,
        COMMIT stores the position past it now, CONTINUE (or None) goes on. Returns the
        messages consumed; a handler that raises has its message consumed, as in `poll`."""
        if self._token is None:
            raise self._closed_error()
        return _controlled(self._fast_controlled, handler, limit)

    controlled_poll = fast_method("_fast_controlled", controlled_poll)

    def _poll(self, handler: Callable[[memoryview, Header], Any], limit: int = 10) -> int:
        """Hand up to `limit` messages to `handler(data, header)`; returns how many. A handler
        that raises has its message consumed (the position moves past it) before the error.
        (The C poll does the same; this is what it falls back to once closed, and what an
        AeronImage, whose scans defer the commit, polls with.)"""
        if not self._words[self._rx.peek]:
            return self._nothing_yet()
        if limit == 1:
            return self._poll_one(handler)
        n = self._scan(limit)
        while not n and self._words[self._rx.peek]:
            # Only padding, or the first fragments of a long message, so far: read on.
            before = self._rx.peek
            n = self._scan(limit)
            if self._rx.peek == before:
                break  # a frame still being written
        if n <= 0:
            return 0  # nothing whole yet, or lost and told
        header, offsets, lengths = self._header, self._offsets, self._lengths
        term = self._terms[self._parts[0]]  # a scan stops at the term end: one partition
        i = 0
        try:
            for i in range(n):
                header._i = i
                offset = offsets[i]
                if offset >= 0:
                    handler(term[offset:offset + lengths[i]], header)
                else:
                    handler(memoryview(ffi.buffer(self._image.assembler.buffer, lengths[i])), header)
        except BaseException:
            self._rewind(i)
            raise
        self._commit()
        return n

    def _poll_one(self, handler: Callable[[memoryview, Header], Any]) -> int:
        """poll(handler, 1): one C call (consumed even if the handler raises)."""
        data = self._next_view()
        if data is None:
            return 0
        self._header._i = 0
        try:
            handler(data, self._header)
        finally:
            self._commit()
        return 1

    def _commit(self) -> None:
        """Store the position past what the last scan handed out, once the handlers are done
        with its bytes. Nothing to do here: the scans commit as they go (`_scan`, `_next_view`);
        a reader whose log is reclaimed behind the position (AeronImage) defers it to here."""

    def _next_view(self) -> memoryview | None:
        """The next whole message via C (padding, fragments, any platform): one call; moves
        the position past it."""
        scan = self._scan_out
        r = lib.ls_image_poll_one(self._image, scan)
        self._rx.peek = scan.end_length_index
        if r > 0:
            self._unchecked = True
        return self._found_view(r)

    def _found_view(self, r: int) -> memoryview | None:
        """The message ls_image_poll_one (or _deferred) found, from its result `r`: a view of
        the term or of the reassembly buffer; None for none (or a loss, told by `_failed`)."""
        if r > 0:
            at, length = self._offsets[0], self._lengths[0]
            if at < 0:  # reassembled
                return memoryview(ffi.buffer(self._image.assembler.buffer, length))
            return self._terms[self._parts[0]][at:at + length]
        if r < 0:
            self._failed(r)
        return None

    def receive(self) -> bytes | None:
        """The next whole message, copied out, or None when there is none yet: the cheapest
        way to read one message at a time (one C call; padding and fragments included)."""
        return self._rx()

    receive = fast_method("_rx", receive)

    @guarded
    def _receive_slow(self) -> bytes | None:
        """What receive() leaves to Python: padding, fragmented messages, corrupt frames, closed."""
        data = self._next_view()
        return None if data is None else bytes(data)

    def poll_batch(self, handler: Callable[[Batch], Any], limit: int = _BATCH) -> int:
        """Hand up to `limit` messages over as `Batch`es (see `_poll_batch`); ClosedError once closed."""
        token = self._token  # (the guard of `Closing`, inlined: None once closed)
        try:
            if token is None:
                raise self._closed_error()
            return self._poll_batch(handler, limit)
        finally:
            del token

    def _poll_batch(self, handler: Callable[[Batch], Any], limit: int = _BATCH) -> int:
        """Hand up to `limit` messages over as `Batch`es (numpy arrays over the term buffer):
        one handler call per batch, not per message."""
        if not self._words[self._rx.peek]:
            return self._nothing_yet()
        n = self._scan(limit)
        if n > 0:
            k = n - 1 if self._offsets[n - 1] < 0 else n  # a reassembled message goes alone
            if k:
                buffer = np.frombuffer(self._terms[self._parts[0]], dtype=np.uint8)
                try:
                    handler(Batch(buffer, self._np_offsets[:k], self._np_lengths[:k], self._np_positions[:k],
                                  self.session_id, self.stream_id))
                except BaseException:
                    if k < n:
                        self._rewind(k - 1)  # the batch counts as consumed, the message after it not
                    raise
            if k < n:
                buffer = np.frombuffer(ffi.buffer(self._image.assembler.buffer, self._lengths[k]), dtype=np.uint8)
                handler(Batch(buffer, np.zeros(1, np.int32), self._np_lengths[k:n], self._np_positions[k:n],
                              self.session_id, self.stream_id))
        return max(n, 0)

    def messages(self) -> Iterator[tuple[bytes, dict[str, int]]]:
        """Every message from the position to the tail, copied: (payload, header fields)."""
        out: list[tuple[bytes, dict[str, int]]] = []
        while True:
            before = self.position
            n = self.poll(lambda data, header: out.append((bytes(data), header.as_dict())), _BATCH)
            yield from out
            out.clear()
            if n == 0 and self.position == before:
                return

    @guarded(closed=0)
    def _wait(self, timeout_ns: int) -> int:
        """Sleep until a writer signals or `timeout_ns` passes (the futex of the log)."""
        return lib.ls_image_wait(self._image, timeout_ns)

    @guarded(closed=None)
    def wake(self) -> None:
        """Wake every reader asleep on this log now (a close must not leave one sleeping)."""
        lib.ls_log_wake(self.log.c.metadata)

    def _detach(self) -> None:
        self._rx.detach()  # receive() goes to _receive_slow: ClosedError
        self._fast_poll.detach()  # poll() goes to the Python poll: ClosedError
        self._fast_controlled.detach()  # so does controlled_poll()

    def _teardown(self) -> None:
        lib.ls_image_close(self._image)
        for t in self._terms:
            t.release()
        self._words.release()
        self._view.release()
        self.log.close()

