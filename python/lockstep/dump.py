"""Reading lockstep and Aeron files for people: what `lockstep dump` prints, one record per
frame (log buffers) or message (rings), without changing the file."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator

from ._native import c_error, ffi, lib
from .counters import CNC_FILE, Counters
from .errors import FileFormatError
from .logbuffer import LogBuffer
from .mapped import MappedFile

__all__ = ["dump_records", "file_kind"]

_RECORD = struct.Struct("<ii")


def file_kind(path: Path) -> str:
    """'logbuffer', 'counters' or 'ring', by name and then by shape."""
    if path.name.endswith(".logbuffer"):
        return "logbuffer"
    if path.name == CNC_FILE:
        return "counters"
    size = path.stat().st_size
    capacity = size - lib.LS_RB_TRAILER_LENGTH
    if capacity > 0 and capacity & (capacity - 1) == 0:
        return "ring"
    if size > 4096 and size % 4096 == 0:
        return "logbuffer"
    raise FileFormatError(path, f"length: {size} bytes is neither a ring (power of two + 768) nor a log buffer")


def dump_records(path: str | os.PathLike[str], payload_prefix: int = 16) -> Iterator[dict[str, Any]]:
    """One dict per frame / message / counter of the file at `path`."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(path, "no such file")
    kind = file_kind(path)
    if kind == "logbuffer":
        with LogBuffer.open(path) as log:
            for f in log.frames(payload_prefix):
                yield {"kind": "frame", "position": f.position, "partition": f.partition, "offset": f.offset,
                       "length": f.frame_length, "type": f.type_name, "flags": f"0x{f.flags:02x}",
                       "session_id": f.session_id, "stream_id": f.stream_id, "term_id": f.term_id,
                       "term_offset": f.term_offset, "reserved_value": f.reserved_value,
                       "payload": f.payload.hex()}
    elif kind == "counters":
        with Counters(path.parent, create=False) as counters:
            for c in counters:
                yield {"kind": "counter", "id": c.id, "type_id": c.type_id, "label": c.label, "value": c.value,
                       "owner_id": c.owner_id, "registration_id": c.registration_id}
    else:
        yield from _ring_records(path, payload_prefix)


def _ring_records(path: Path, payload_prefix: int) -> Iterator[dict[str, Any]]:
    """Unconsumed messages of a ring, head to tail (the file is mapped copy-on-write)."""
    mapped = MappedFile.open(path, writable=False)
    try:
        rb = ffi.new("ls_ring_buffer_t *")
        if lib.ls_rb_init(rb, mapped.pointer, mapped.length, True) < 0:
            raise c_error(path)
        view = mapped.memoryview()
        capacity = rb.capacity
        position, tail = lib.ls_rb_consumer_position(rb), lib.ls_rb_producer_position(rb)
        try:
            while position < tail:
                index = position & (capacity - 1)
                length, type_id = _RECORD.unpack_from(view, index)
                if length <= 0:
                    yield {"kind": "record", "position": position, "length": length, "state": "uncommitted"}
                    break
                aligned = (length + 7) & ~7
                if length < 8 or aligned > capacity - index:
                    raise FileFormatError(path, f"record at index {index}: length {length} runs past the buffer end")
                if type_id != -1:
                    start = index + 8
                    yield {"kind": "record", "position": position, "index": index, "length": length - 8,
                           "msg_type_id": type_id,
                           "payload": bytes(view[start:start + min(length - 8, payload_prefix)]).hex()}
                position += aligned
        finally:
            view.release()
    finally:
        mapped.close()
