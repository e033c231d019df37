"""Receiving the driver's to-clients broadcast buffer (spec/aeron-driver-protocol.md §2): the
driver overwrites it without waiting for anyone, so a receiver copies each record out and
validates afterwards that the transmitter has not lapped it meanwhile."""

from __future__ import annotations

__all__ = ["BroadcastReceiver"]

_TAIL_INTENT = 0
_TAIL = 1
_LATEST = 2
_PADDING_TYPE = -1
_RECORD_HEADER = 8


def _align8(n: int) -> int:
    return (n + 7) & ~7


class BroadcastReceiver:
    """A cursor over the broadcast buffer at `offset` (capacity bytes, then the 128-byte
    trailer) of the mapping `view`. Reads are single aligned 8-byte loads from an int64 view:
    on x86-64 (TSO) each is an acquire load, which is all the algorithm needs."""

    def __init__(self, view: memoryview, offset: int, capacity: int) -> None:
        if offset % 8 or capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"broadcast buffer at {offset}: capacity {capacity} (expected a power of two, 8-aligned)")
        self._bytes = view
        self._words = view.cast("q")
        self._base = offset
        self._mask = capacity - 1
        self.capacity = capacity
        self._trailer = (offset + capacity) // 8
        latest = self._words[self._trailer + _LATEST]
        # A new receiver sees the most recent existing record once (as Aeron's does): callers
        # ignore what does not match their own ids.
        self._cursor = latest
        self._next_record = latest
        self.lapped_count = 0

    def _header(self, index: int) -> tuple[int, int]:
        """(length, msg_type_id) of the record at buffer index `index`, read in one 8-byte load."""
        word = self._words[(self._base + index) // 8]
        length = word & 0xFFFFFFFF
        if length >= 1 << 31:
            length -= 1 << 32
        return length, word >> 32

    def _resync(self) -> None:
        latest = self._words[self._trailer + _LATEST]
        self._cursor = self._next_record = latest

    def receive(self) -> tuple[int, bytes] | None:
        """The next record as (msg_type_id, a private copy of its payload), None when there is
        none. Raises `Lapped` when records were lost (the receiver then continues from the latest)."""
        words = self._words
        trailer = self._trailer
        tail = words[trailer + _TAIL]
        cursor = self._next_record
        if tail <= cursor:
            return None
        if cursor + self.capacity <= words[trailer + _TAIL_INTENT]:
            self.lapped_count += 1
            self._resync()
            raise Lapped(self.lapped_count)
        index = cursor & self._mask
        length, msg_type = self._header(index)
        next_record = cursor + _align8(length)
        if msg_type == _PADDING_TYPE:  # padding to the end of the buffer: the record is at index 0
            cursor = next_record
            index = 0
            length, msg_type = self._header(0)
            next_record = cursor + _align8(length)
        if not _RECORD_HEADER <= length <= self.capacity // 8 + _RECORD_HEADER or index + length > self.capacity:
            # Only a record being overwritten right now looks like this: we were lapped.
            self.lapped_count += 1
            self._resync()
            raise Lapped(self.lapped_count)
        at = self._base + index + _RECORD_HEADER
        payload = bytes(self._bytes[at:at + length - _RECORD_HEADER])  # copy first...
        if cursor + self.capacity <= words[trailer + _TAIL_INTENT]:  # ...then validate the copy
            self.lapped_count += 1
            self._resync()
            raise Lapped(self.lapped_count)
        self._cursor = cursor
        self._next_record = next_record
        return msg_type, payload

    def release(self) -> None:
        self._words.release()


class Lapped(Exception):
    """The driver overwrote records this receiver had not read: responses were lost."""

    def __init__(self, count: int) -> None:
        super().__init__(f"unable to keep up with the driver's broadcast (lapped {count} times)")
        self.count = count
