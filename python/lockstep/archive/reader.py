"""`RecordingReader`: a recording read back like a subscription, from any position to any
position: whole messages (fragments reassembled, padding skipped), every frame header
validated before its bytes are trusted, by the C term reader that images use too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .._closing import Closing
from .._native import ffi, lib
from .._native._fastpath import Header, TermScanDeliver
from ..errors import FileFormatError, InvalidArgumentError
from .catalog import Catalog, RecordingDescriptor
from .segments import SegmentMaps, align, frame_problem, recorded_term, term_error

__all__ = ["RecordingHeader", "RecordingReader"]

_BATCH = 1024


# The header of the message being handled (valid during the handler call): the live
# subscription's C `Header` over the term reader's scan, so the same fields and methods.
RecordingHeader = Header


class RecordingReader(Closing):
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
        self._maps = SegmentMaps(self.dir, desc)
        # The C term reader's state: the term descriptor, one scan's output, the reassembly;
        # `_deliver` scans a term and hands its messages to the handler in C (one call per term:
        # scan_deliver.c), and keeps the position; its Header reads the scan's frame headers in place.
        self._term = recorded_term(desc)
        self._scan = ffi.new("ls_term_scan_t *")
        self._assembler = ffi.new("ls_fragment_assembler_t *")
        lib.ls_fragment_assembler_init(self._assembler, max(desc.term_length // 8, desc.mtu))
        # (While it hands out messages it is in flight, `busy`: a close's teardown waits for it.)
        self._deliver = TermScanDeliver(ffi.buffer(self._term), ffi.buffer(self._scan), ffi.buffer(self._assembler),
                                        desc.initial_term_id, start, finish=self._finish_close)
        self._c_calls = (self._deliver,)
        self._header: Header = self._deliver.header

    @property
    def position(self) -> int:
        """Where reading goes on from: after the last message consumed (during a handler call,
        after the message being handled)."""
        return self._deliver.position

    @position.setter
    def position(self, value: int) -> None:
        self._deliver.position = value

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

    def _bad(self, path: Path, offset: int, position: int, problem: str) -> FileFormatError:
        return FileFormatError(path, f"frame at offset {offset} (position {position}, recording "
                                     f"{self.recording_id}): {problem}")

    def poll(self, handler: Callable[[memoryview, RecordingHeader], Any], limit: int = 10) -> int:
        """Hand up to `limit` messages to `handler(data, header)`; returns how many. `data`
        is a view valid only during the call. A handler that raises has its message consumed
        (the messages scanned after it are read again by the next poll)."""
        token = self._token  # None once closed; held, the maps and the assembler outlive this call
        try:
            if token is None:
                raise self._closed_error()
            deliver, maps = self._deliver, self._maps
            count = 0
            while count < limit and self._token is not None:  # (closed by a handler: this call ends here)
                pos = deliver.position
                if pos >= self._limit:
                    if self._live and self._refresh():
                        continue
                    break
                path, view, offset = maps.get(pos)
                n = deliver(view, offset, self._limit, limit - count, handler)  # one term, in C
                end = deliver.position
                if n < 0:
                    raise self._bad(path, offset + end - pos, end, term_error())
                count += n
                if end == pos:  # the next frame runs past the limit: not there yet
                    if self._live and self._refresh():
                        continue
                    break
            return count
        finally:
            del token

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Every frame (padding included) from the position to the stop, as it lies in the
        segment: (position, frame bytes up to the 32-byte aligned end). Validated like poll."""
        desc = self.desc
        pos = self.position
        while pos < self._limit:
            path, view, offset = self._maps.get(pos)
            problem = frame_problem(desc, pos, view, offset)
            if problem:
                raise self._bad(path, offset, pos, problem)
            end = pos + align(int.from_bytes(view[offset:offset + 4], "little"))
            if end > self._limit:
                break
            yield pos, bytes(view[offset:offset + end - pos])
            pos = self.position = end
        lib.ls_fragment_assembler_reset(self._assembler)

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

    def _detach(self) -> None:  # (close(): later polls raise ClosedError)
        self._deliver.detach()

    def _teardown(self) -> None:  # (close())
        self._maps.close()
        lib.ls_fragment_assembler_close(self._assembler)

    def __repr__(self) -> str:
        return (f"RecordingReader(recording_id={self.recording_id}, position={self.position}, "
                f"stop={self.stop if self.stop is not None else self._limit})")
