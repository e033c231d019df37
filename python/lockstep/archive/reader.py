"""`RecordingReader`: a recording read back like a subscription, from any position to any
position: whole messages (fragments reassembled, padding skipped), every frame header
validated before its bytes are trusted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import FileFormatError, InvalidArgumentError
from .catalog import Catalog, RecordingDescriptor
from .segments import (
    BEGIN,
    END,
    FRAME_HEADER,
    HEADER_LENGTH,
    PAD,
    SegmentMaps,
    frame_problem,
    term_id_at,
)

__all__ = ["RecordingHeader", "RecordingReader"]

_BATCH = 1024


class RecordingHeader:
    """The header of the message being handled (valid during the handler call): the same
    fields as a live subscription's `Header`."""

    __slots__ = (
        "flags",
        "frame_length",
        "position",
        "reserved_value",
        "session_id",
        "stream_id",
        "term_id",
        "term_offset",
    )

    def __init__(self) -> None:
        self.position = self.session_id = self.stream_id = self.term_id = self.term_offset = 0
        self.flags = self.reserved_value = self.frame_length = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("position", "session_id", "stream_id", "term_id", "term_offset",
                                              "flags", "reserved_value")}

    def __repr__(self) -> str:
        return (f"RecordingHeader(position={self.position}, session_id={self.session_id}, "
                f"stream_id={self.stream_id}, term_id={self.term_id}, term_offset={self.term_offset}, "
                f"flags=0x{self.flags:02x})")


class RecordingReader:
    """Messages of one recording from `start` (default: its start) up to `stop` (default:
    its stop position; for an active recording, wherever the recorder has got to, re-read
    as the reader catches up). A message is delivered only when all its frames lie before
    `stop`. Starting inside a fragmented message skips to the next whole one."""

    def __init__(self, dir: Path, desc: RecordingDescriptor, start: int | None = None, stop: int | None = None,
                 catalog: Catalog | None = None) -> None:
        self.dir = Path(dir)
        self.desc = desc
        self.recording_id = desc.recording_id
        self.session_id = desc.session_id
        self.stream_id = desc.stream_id
        start = desc.start_position if start is None else int(start)
        if not desc.start_position <= start <= desc.stop_position or start % 32:
            raise InvalidArgumentError(
                f"recording {desc.recording_id}: start position {start}: expected a frame boundary (multiple of "
                f"32) in [{desc.start_position}, {desc.stop_position}]")
        self._live = desc.state == "active" and catalog is not None
        if stop is not None:
            stop = int(stop)
            if stop < start:
                raise InvalidArgumentError(f"recording {desc.recording_id}: stop position {stop}: expected at "
                                           f"least the start position {start}")
            if stop > desc.stop_position and not self._live:
                raise InvalidArgumentError(f"recording {desc.recording_id}: stop position {stop}: beyond the "
                                           f"recording's stop position {desc.stop_position}")
        self.start = start
        self.stop = stop
        self._catalog = catalog
        self._limit = desc.stop_position if stop is None else min(stop, desc.stop_position)
        self.position = start
        self._maps = SegmentMaps(self.dir, desc)
        self._header = RecordingHeader()
        self._header.session_id, self._header.stream_id = desc.session_id, desc.stream_id
        self._assembly: bytearray | None = None
        self._assembly_first = (0, 0, 0)  # term id, term offset, reserved value of the first fragment
        self.closed = False

    @property
    def limit(self) -> int:
        """How far the reader may read now: the stop, or (sooner) where the recording has got to."""
        return self._limit

    @property
    def following(self) -> bool:
        """Whether the limit can still grow: an active recording read short of its stop."""
        return self._live and (self.stop is None or self._limit < self.stop)

    def _refresh(self) -> bool:
        """An active recording: pick up the recorder's progress. Returns whether it grew."""
        if self._catalog is None:  # (only a live reader refreshes, and it has the catalog)
            return False
        desc = self._catalog.get(self.recording_id)
        limit = desc.stop_position if self.stop is None else min(self.stop, desc.stop_position)
        if desc.state != "active":
            self._live = False
        if limit > self._limit:
            self._limit = limit
            self.desc = desc
            return True
        return False

    def _bad(self, path: Path, offset: int, position: int, header: tuple) -> FileFormatError:
        problem = frame_problem(self.desc, position, header) or "invalid"
        return FileFormatError(path, f"frame at offset {offset} (position {position}, recording "
                                     f"{self.recording_id}): {problem}")

    def poll(self, handler: Callable[[memoryview, RecordingHeader], Any], limit: int = 10) -> int:
        """Hand up to `limit` messages to `handler(data, header)`; returns how many. `data`
        is a view valid only during the call. A handler that raises has its message consumed."""
        desc = self.desc
        term_length = desc.term_length
        mask = term_length - 1
        shift = term_length.bit_length() - 1
        mtu, session_id, stream_id = desc.mtu, desc.session_id, desc.stream_id
        header = self._header
        unpack = FRAME_HEADER.unpack_from
        pos = self.position
        count = 0
        term_index = -1
        term_id_expected = 0
        path = self.dir  # the file of the segment mapped as `view` (none yet)
        view: memoryview | None = None
        seg_end = 0  # the position where the mapped segment ends
        seg_off = 0  # file offset = position - seg_off
        while count < limit:
            if pos >= self._limit:
                if self._live and self._refresh():
                    continue
                break
            if pos >= seg_end or view is None:
                path, view, offset = self._maps.get(pos)
                seg_off = pos - offset
                seg_end = seg_off + len(view)
            offset = pos - seg_off
            h = unpack(view, offset)
            length, version, flags, ftype, term_offset, sid, stid, term_id, reserved = h
            if pos >> shift != term_index:
                term_index = pos >> shift
                term_id_expected = term_id_at(desc, pos)
            aligned = (length + 31) & ~31
            if (length < HEADER_LENGTH or term_offset != pos & mask or term_offset + aligned > term_length
                    or version or term_id != term_id_expected or sid != session_id or stid != stream_id
                    or not (ftype == 1 and length <= mtu or ftype == PAD)):
                raise self._bad(path, offset, pos, h)
            end = pos + aligned
            if end > self._limit:
                if self._live and self._refresh():
                    continue
                break  # the frame runs past the stop position: not delivered
            if ftype == PAD:
                pos = self.position = end
                continue
            if flags & 0xC0 == 0xC0:
                header.term_id, header.term_offset, header.reserved_value = term_id, term_offset, reserved
                header.position, header.flags, header.frame_length = end, flags, length
                pos = self.position = end
                count += 1
                handler(view[offset + HEADER_LENGTH:offset + length], header)
                continue
            pos = self.position = end
            if flags & BEGIN:
                self._assembly = bytearray(view[offset + HEADER_LENGTH:offset + length])
                self._assembly_first = (term_id, term_offset, reserved)
            elif self._assembly is not None:
                self._assembly += view[offset + HEADER_LENGTH:offset + length]
                if flags & END:
                    data, self._assembly = self._assembly, None
                    header.term_id, header.term_offset, header.reserved_value = self._assembly_first
                    header.position, header.flags, header.frame_length = end, 0xC0, length
                    count += 1
                    with memoryview(data) as mv:
                        handler(mv, header)
            # else: a middle/end fragment of a message begun before `start`: skipped
        self.position = pos
        return count

    def messages(self) -> Iterator[tuple[bytes, dict[str, int]]]:
        """Every message from the position to the stop, copied: (payload, header fields)."""
        out: list[tuple[bytes, dict[str, int]]] = []
        append = out.append
        while True:
            before = self.position
            n = self.poll(lambda data, header: append((bytes(data), header.as_dict())), _BATCH)
            yield from out
            out.clear()
            if n == 0 and self.position == before:
                return

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Every frame (padding included) from the position to the stop, as it lies in the
        segment: (position, frame bytes up to the 32-byte aligned end). Validated like poll."""
        desc = self.desc
        pos = self.position
        while pos < self._limit:
            path, view, offset = self._maps.get(pos)
            h = FRAME_HEADER.unpack_from(view, offset)
            if frame_problem(desc, pos, h):
                raise self._bad(path, offset, pos, h)
            end = pos + ((h[0] + 31) & ~31)
            if end > self._limit:
                break
            yield pos, bytes(view[offset:offset + end - pos])
            pos = self.position = end
        self._assembly = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._maps.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RecordingReader(recording_id={self.recording_id}, position={self.position}, "
                f"stop={self.stop if self.stop is not None else self._limit})")
