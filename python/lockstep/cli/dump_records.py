"""Reading lockstep and Aeron files for people: what `lockstep dump` prints, one record per
frame (log buffers) or message (rings), without changing the file."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator

from .._native import c_error, ffi, lib
from ..transport.counters import CNC_FILE, Counters
from ..errors import FileFormatError
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import MappedFile

__all__ = ["dump_records", "file_kind"]

_RECORD = struct.Struct("<ii")


def file_kind(path: Path) -> str:
    """'logbuffer', 'counters', 'segment' (archive) or 'ring', by name and then by shape."""
    if path.name.endswith(".logbuffer"):
        return "logbuffer"
    if path.name.endswith(".rec"):
        return "segment"
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
    elif kind == "segment":
        yield from _segment_records(path, payload_prefix)
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


def _segment_records(path: Path, payload_prefix: int) -> Iterator[dict[str, Any]]:
    """Frames of an archive segment; payloads of the sequenced stream are decoded (sequenced
    header, then the command through the codec registry; modules named in
    $LOCKSTEP_SCHEMAS, comma separated, are imported first to register their schemas)."""
    import importlib
    import mmap

    from .. import codec
    from ..archive.catalog import Catalog
    from ..archive.segments import FRAME_HEADER, HEADER_LENGTH, frame_problem, parse_segment_name
    from ..transport.mapped import open_regular
    from ..errors import CodecError, LockstepError
    from ..transport.logbuffer import FRAME_TYPES
    from ..cluster.sequencer import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH, decode_sequenced

    for name in filter(None, (m.strip() for m in os.environ.get("LOCKSTEP_SCHEMAS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise LockstepError(f"LOCKSTEP_SCHEMAS: cannot import {name!r}: {e}") from None
    parsed = parse_segment_name(path.name)
    if parsed is None:
        raise FileFormatError(path, "name: expected <recording_id>-<segment_base_position>.rec")
    recording_id, base = parsed
    desc = next((d for d in Catalog(path.parent).read() if d.recording_id == recording_id), None)
    fd = open_regular(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if desc is not None and size != desc.segment_length:
            raise FileFormatError(path, f"length: expected {desc.segment_length} bytes (the segment length), found "
                                        f"{size}: truncated at offset {size}" if size < desc.segment_length else
                                        f"length: expected {desc.segment_length} bytes, found {size}")
        if size < HEADER_LENGTH:
            raise FileFormatError(path, f"length: expected a segment, found {size} bytes")
        mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    view = memoryview(mapping)
    try:
        offset, end = 0, size
        if desc is not None:
            offset = max(0, desc.start_position - base)
            if desc.state != "active":
                end = max(offset, min(size, desc.stop_position - base))
        else:  # no catalog: skip what lies before the recording's first frame
            while offset + HEADER_LENGTH <= size and not any(view[offset:offset + HEADER_LENGTH]):
                offset += HEADER_LENGTH
        while offset + HEADER_LENGTH <= end:
            h = FRAME_HEADER.unpack_from(view, offset)
            length, version, flags, ftype, term_offset, session_id, stream_id, term_id, reserved = h
            if length == 0 and (desc is None or desc.state == "active"):
                break  # the end of what was recorded
            problem = (frame_problem(desc, base + offset, view, offset) if desc is not None else
                       None if HEADER_LENGTH <= length <= size - offset and ftype in FRAME_TYPES and not term_offset % 32
                       else f"frame header: length {length}, type {ftype}, term offset {term_offset}")
            if problem:
                raise FileFormatError(path, f"frame at offset {offset} (position {base + offset}): {problem}")
            start = offset + HEADER_LENGTH
            payload_end = offset + length if ftype != 0 else start
            record = {"kind": "frame", "recording_id": recording_id, "position": base + offset, "offset": offset,
                      "length": length, "type": FRAME_TYPES.get(ftype, str(ftype)), "flags": f"0x{flags:02x}",
                      "session_id": session_id, "stream_id": stream_id, "term_id": term_id,
                      "term_offset": term_offset, "reserved_value": reserved,
                      "payload": bytes(view[start:min(payload_end, start + payload_prefix)]).hex()}
            if ftype == 1 and flags & 0xC0 == 0xC0:
                payload = bytes(view[start:payload_end])
                try:
                    if stream_id == DEFAULT_LOG_STREAM and len(payload) >= SEQUENCED_HEADER_LENGTH:
                        m = decode_sequenced(payload)
                        record.update(sequence=m.sequence, timestamp_ns=m.timestamp_ns, origin_id=m.origin_id,
                                      origin_sequence=m.origin_sequence)
                        record["message"] = codec.describe(m.command)
                    else:
                        record["message"] = codec.describe(payload)
                except CodecError:
                    pass
            yield record
            offset += (length + 31) & ~31
    finally:
        view.release()
        mapping.close()
