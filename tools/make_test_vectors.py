#!/usr/bin/env python3
"""Write lockstep's log buffer test vectors: tests/data/<name>.logbuffer + <name>.frames.json.

Each log is built deterministically with lockstep's own C appender (`ls_publication_offer`
through cffi) over a `LogBuffer.create`d file with a fixed session id, stream id, initial
term id and start (term id, term offset), and an in-memory counters block holding one
subscriber-position counter keyed to the log (kept at the publisher's position, so it is
never back-pressured). The .frames.json is NOT read back from the file: it is what the
spec (spec/aeron-formats.md §3) says the frames must be, computed here from the messages
alone; the script refuses to write a vector whose bytes disagree with it.

Vectors (64 KiB terms, mtu 1408, files of 3 x 64 KiB + 4 KiB):
  rotation    exclusive; fills term 0 unevenly so a PAD frame closes it, rotates into
              term 1; initial term id 0x7fffffff, so the term id wraps to -2**31.
  fragmented  shared appender; empty message, one-frame edge sizes, and a 3 x mtu message
              fragmented into 4 frames (BEGIN, -, -, END).
  midterm     exclusive; starts at term id initial + 2, term offset 4096 (Aeron's
              term-id / term-offset channel parameters): partitions 0 and 1 stay empty.

Usage: python tools/make_test_vectors.py [OUTDIR]   (default: tests/data next to this repo's tools/)
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

from lockstep import LogBuffer
from lockstep._native import ffi, lib
from lockstep.transport.client import STREAM_KEY

TERM_LENGTH = 64 * 1024
MTU = 1408
PAGE_SIZE = 4096
HEADER = 32
MAX_PAYLOAD = MTU - HEADER
FRAME = struct.Struct("<iBBhiiiiq")
CORRELATION_ID = 0x0102030405060708
TYPES = {0: "PAD", 1: "DATA"}


def payload(i: int, length: int) -> bytes:
    return bytes((i * 31 + j * 7 + (j >> 8)) & 0xFF for j in range(length))


def _wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


VECTORS: dict[str, dict] = {
    "rotation": dict(
        exclusive=True, session_id=0x0BADCAFE, stream_id=1001, initial_term_id=0x7FFFFFFF,
        active_term_id=0x7FFFFFFF, term_offset=0,
        sizes=[100 + (i * 97) % 900 for i in range(140)],
    ),
    "fragmented": dict(
        exclusive=False, session_id=_wrap32(0xDEADBEEF), stream_id=2002, initial_term_id=-5,
        active_term_id=-5, term_offset=0,
        sizes=[10, 3 * MTU, MAX_PAYLOAD, MAX_PAYLOAD + 1, 0, 2 * MAX_PAYLOAD, 50, 3 * MTU + 7, 1],
    ),
    "midterm": dict(
        exclusive=True, session_id=-77, stream_id=7, initial_term_id=100, active_term_id=102,
        term_offset=4096, sizes=[200 + i for i in range(40)],
    ),
}


def _align(n: int, a: int = 32) -> int:
    return (n + a - 1) & ~(a - 1)


def expected_frames(v: dict) -> tuple[list[dict], list[dict]]:
    """The frames and messages the spec prescribes for vector `v` (no lockstep code)."""
    shift = TERM_LENGTH.bit_length() - 1
    term_id, offset = v["active_term_id"], v["term_offset"]
    frames, messages = [], []

    def term_count(tid: int) -> int:
        return _wrap32(tid - v["initial_term_id"])

    def add(length: int, ftype: int, flags: int, reserved: int) -> None:
        count = term_count(term_id)
        partition = count % 3
        frames.append({
            "partition": partition, "offset": offset, "file_offset": partition * TERM_LENGTH + offset,
            "position": (count << shift) + offset, "length": length, "type": ftype, "type_name": TYPES[ftype],
            "flags": flags, "session_id": v["session_id"], "stream_id": v["stream_id"], "term_id": term_id,
            "term_offset": offset, "reserved_value": reserved,
        })

    for i, size in enumerate(v["sizes"]):
        data = payload(i, size)
        chunks = [data[k:k + MAX_PAYLOAD] for k in range(0, size, MAX_PAYLOAD)] or [b""]
        required = sum(_align(len(c) + HEADER) for c in chunks)
        if offset + required > TERM_LENGTH:  # pad the rest of the term, then the next term
            add(TERM_LENGTH - offset, 0, 0xC0, 0)
            term_id, offset = _wrap32(term_id + 1), 0
        first = (term_id, offset)
        for k, chunk in enumerate(chunks):
            flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
            add(HEADER + len(chunk), 1, flags, reserved_value(i))
            offset += _align(HEADER + len(chunk))
        messages.append({"index": i, "length": size, "crc32": zlib.crc32(data), "term_id": first[0],
                         "term_offset": first[1], "position": (term_count(term_id) << shift) + offset,
                         "reserved_value": reserved_value(i)})
    return frames, messages


def reserved_value(i: int) -> int:
    return 0x1000 * (i + 1) + i


def parse_frames(data: bytes, v: dict) -> list[dict]:
    """Walk the written terms of a file's bytes (zeros skipped by 32), as a reader would."""
    out = []
    meta = 3 * TERM_LENGTH
    for partition in range(3):
        raw = struct.unpack_from("<q", data, meta + 8 * partition)[0]
        tail = min(raw & 0xFFFFFFFF, TERM_LENGTH)
        offset = 0
        while offset < tail:
            f = FRAME.unpack_from(data, partition * TERM_LENGTH + offset)
            if f[0] == 0:
                offset += 32
                continue
            out.append((partition, offset) + f)
            offset += _align(f[0])
    return out


def build(name: str, v: dict, out_dir: Path) -> None:
    path = out_dir / f"{name}.logbuffer"
    for p in (path, out_dir / f"{name}.frames.json"):
        if p.exists():
            p.unlink()
    log, created = LogBuffer.create(
        path, term_length=TERM_LENGTH, mtu_length=MTU, page_size=PAGE_SIZE, session_id=v["session_id"],
        stream_id=v["stream_id"], initial_term_id=v["initial_term_id"], active_term_id=v["active_term_id"],
        term_offset=v["term_offset"], correlation_id=CORRELATION_ID)
    assert created, path
    try:
        max_counters = 4
        meta = ffi.new("uint8_t[]", max_counters * lib.LS_COUNTER_METADATA_LENGTH)
        values = ffi.new("uint8_t[]", max_counters * lib.LS_COUNTER_VALUE_LENGTH)
        counters = ffi.new("ls_counters_t *")
        if lib.ls_counters_init(counters, meta, len(meta), values, len(values)) < 0:
            raise RuntimeError(ffi.string(lib.ls_errmsg()).decode())
        key = STREAM_KEY.pack(1, v["session_id"], v["stream_id"])
        sub = lib.ls_counters_allocate(counters, lib.LS_COUNTER_TYPE_SUBSCRIBER_POSITION, key, len(key),
                                       b"sub-pos", 7, 1, 1, 1, 0)
        assert sub >= 0
        pub = ffi.new("ls_publication_t *")
        if lib.ls_publication_init(pub, log.file.pointer, log.file.length, v["exclusive"], counters) < 0:
            raise RuntimeError(ffi.string(lib.ls_errmsg()).decode())
        for i, size in enumerate(v["sizes"]):
            lib.ls_counters_set(counters, sub, lib.ls_publication_position(pub))  # a reader that keeps up
            data = payload(i, size)
            result = lib.ls_publication_offer(pub, data, size, reserved_value(i))
            if result <= 0:
                raise RuntimeError(f"{name}: offer {i} ({size} bytes) returned {result}")
    finally:
        log.close()

    frames, messages = expected_frames(v)
    data = path.read_bytes()
    parsed = parse_frames(data, v)
    got = [{"partition": p, "offset": o, "length": f[0], "type": f[3], "flags": f[2], "session_id": f[5],
            "stream_id": f[6], "term_id": f[7], "term_offset": f[4], "reserved_value": f[8]}
           for p, o, *f in [(x[0], x[1], *x[2:]) for x in parsed]]
    want = [{k: fr[k] for k in got[0]} for fr in frames] if got else []
    if got != want:
        path.unlink()
        raise SystemExit(f"{name}: the appender's frames differ from the spec's:\n got {got[:5]}\nwant {want[:5]}")
    doc = {
        "name": name, "file": path.name, "file_length": len(data), "term_length": TERM_LENGTH, "mtu": MTU,
        "page_size": PAGE_SIZE, "initial_term_id": v["initial_term_id"], "active_term_id": v["active_term_id"],
        "start_term_offset": v["term_offset"], "session_id": v["session_id"], "stream_id": v["stream_id"],
        "correlation_id": CORRELATION_ID, "exclusive": v["exclusive"], "frames": frames, "messages": messages,
    }
    # One frame / message per line: small, and diffs read well.
    head = json.dumps({k: val for k, val in doc.items() if k not in ("frames", "messages")})[:-1]
    lines = [head + ',\n "frames": [']
    lines.append(",\n".join("  " + json.dumps(f) for f in frames) + "],\n \"messages\": [")
    lines.append(",\n".join("  " + json.dumps(m) for m in messages) + "]}\n")
    text = "\n".join(lines)
    assert json.loads(text) == doc
    (out_dir / f"{name}.frames.json").write_text(text)


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "tests" / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, v in VECTORS.items():
        build(name, v, out_dir)
        print(f"{out_dir / name}.logbuffer")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
