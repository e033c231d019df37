"""Log buffer test vectors (tests/data, written by tools/make_test_vectors.py with lockstep's
own appender): regenerating gives byte-identical files; the frames in the files are the
ones the spec prescribes (parsed here with struct, independently of lockstep's code); and
`lockstep dump --json` and the reader agree with them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from lockstep.transport.reader import LogReader

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SCRIPT = ROOT / "tools" / "make_test_vectors.py"
NAMES = ["rotation", "fragmented", "midterm"]
FRAME = struct.Struct("<iBBhiiiiq")  # spec §3 data frame header, 32 bytes


def vector(name: str) -> dict:
    return json.loads((DATA / f"{name}.frames.json").read_text())


def payload(i: int, length: int) -> bytes:
    """The vectors' payload rule (tools/make_test_vectors.py)."""
    return bytes((i * 31 + j * 7 + (j >> 8)) & 0xFF for j in range(length))


def test_regenerating_gives_identical_files(tmp_path):
    out = tmp_path / "vectors"
    out.mkdir(mode=0o700)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        for suffix in (".logbuffer", ".frames.json"):
            made = (out / f"{name}{suffix}").read_bytes()
            committed = (DATA / f"{name}{suffix}").read_bytes()
            assert made == committed, f"{name}{suffix} differs from the committed vector"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_the_spec_layout(name):
    v = vector(name)
    data = (DATA / v["file"]).read_bytes()
    term = v["term_length"]
    assert len(data) == v["file_length"] == 3 * term + 4096  # page size 4096 keeps it exact
    meta = 3 * term
    i32 = lambda off: struct.unpack_from("<i", data, meta + off)[0]  # noqa: E731
    i64 = lambda off: struct.unpack_from("<q", data, meta + off)[0]  # noqa: E731
    assert i32(264) == v["initial_term_id"]
    assert i32(268) == 32
    assert i32(272) == v["mtu"]
    assert i32(276) == term
    assert i32(280) == v["page_size"]
    assert i32(284) == term // 2  # publication window
    assert i64(128) == (1 << 63) - 1  # end of stream: still open
    assert i64(256) == v["correlation_id"]
    assert i64(448) == -1 and i64(456) == -1
    length, version, flags, ftype, _, session, stream, term_id, _ = FRAME.unpack_from(data, meta + 320)
    assert (version, flags, ftype, session, stream, term_id) == (
        0, 0xC0, 1, v["session_id"], v["stream_id"], v["initial_term_id"])
    # Active term count and tail counters agree with the last frame written.
    last = v["frames"][-1]
    count = ((last["term_id"] - v["initial_term_id"] + (1 << 31)) % (1 << 32)) - (1 << 31)
    assert i32(24) == count
    tail_offset, tail_term_id = struct.unpack_from("<Ii", data, meta + 8 * (count % 3))  # raw tail
    assert tail_term_id == last["term_id"]
    assert tail_offset == last["offset"] + ((last["length"] + 31) & ~31)


def _walk(data: bytes, term: int) -> list[dict]:
    """Every frame of every term, by the spec: length at offset 0 (0 = unwritten, skip 32),
    frames aligned to 32. Stops a partition at the first unwritten gap after frames
    (the vectors have no gaps other than a mid-term start)."""
    frames = []
    for partition in range(3):
        base = partition * term
        offset = 0
        while offset < term:
            length, version, flags, ftype, term_offset, session, stream, term_id, reserved = FRAME.unpack_from(
                data, base + offset)
            if length == 0:
                offset += 32
                continue
            assert 32 <= length <= term - offset, (partition, offset, length)
            frames.append({"partition": partition, "offset": offset, "file_offset": base + offset,
                           "length": length, "version": version, "type": ftype, "flags": flags,
                           "session_id": session, "stream_id": stream, "term_id": term_id,
                           "term_offset": term_offset, "reserved_value": reserved})
            offset += (length + 31) & ~31
    return frames


@pytest.mark.parametrize("name", NAMES)
def test_frames_decode_to_the_spec_header_values(name):
    v = vector(name)
    data = (DATA / v["file"]).read_bytes()
    term = v["term_length"]
    shift = term.bit_length() - 1
    walked = sorted(_walk(data, term), key=lambda f: (f["term_id"] - v["initial_term_id"]) % (1 << 32) * term + f["offset"])
    want = v["frames"]
    assert len(walked) == len(want)
    for got, w in zip(walked, want):
        for key in ("partition", "offset", "file_offset", "length", "type", "flags", "session_id", "stream_id",
                    "term_id", "term_offset", "reserved_value"):
            assert got[key] == w[key], (name, w["position"], key, got[key], w[key])
        assert got["version"] == 0
        # Spec position arithmetic: term count from the (wrapping) term id; partition = count % 3.
        count = ((got["term_id"] - v["initial_term_id"] + (1 << 31)) % (1 << 32)) - (1 << 31)
        assert count % 3 == got["partition"]
        assert (count << shift) + got["term_offset"] == w["position"]
        assert got["term_offset"] == got["offset"]
        if got["type"] == 1:
            assert got["length"] <= v["mtu"]
        else:
            assert got["type"] == 0 and got["offset"] + got["length"] == term  # padding closes a term
    # Frames follow each other without gaps (from the start offset on).
    for a, b in zip(want, want[1:]):
        assert b["position"] == a["position"] + ((a["length"] + 31) & ~31)
    assert want[0]["position"] == ((v["active_term_id"] - v["initial_term_id"]) << shift) + v["start_term_offset"]


@pytest.mark.parametrize("name", NAMES)
def test_frames_reassemble_to_the_messages(name):
    """Reassembling BEGIN..END frames (by hand) gives each message's bytes and checksum."""
    v = vector(name)
    data = (DATA / v["file"]).read_bytes()
    messages = []
    current = None
    for f in v["frames"]:
        if f["type"] != 1:
            continue
        chunk = data[f["file_offset"] + 32:f["file_offset"] + f["length"]]
        if f["flags"] & 0x80:
            assert current is None
            current = bytearray()
        current += chunk
        if f["flags"] & 0x40:
            messages.append(bytes(current))
            current = None
    assert current is None
    assert len(messages) == len(v["messages"])
    for m, w in zip(messages, v["messages"]):
        assert len(m) == w["length"] and zlib.crc32(m) == w["crc32"]
        assert m == payload(w["index"], w["length"])


@pytest.mark.parametrize("name", NAMES)
def test_features_each_vector_covers(name):
    v = vector(name)
    frames = v["frames"]
    if name == "rotation":
        pads = [f for f in frames if f["type"] == 0]
        assert len(pads) == 1 and pads[0]["partition"] == 0
        assert {f["term_id"] for f in frames} == {2**31 - 1, -2**31}  # the term id wraps
    elif name == "fragmented":
        assert [f["flags"] for f in frames[1:5]] == [0x80, 0x00, 0x00, 0x40]  # 3 x mtu message
        assert any(m["length"] == 0 for m in v["messages"])
        assert not v["exclusive"]
    else:
        assert frames[0]["term_offset"] == v["start_term_offset"] == 4096
        assert {f["partition"] for f in frames} == {2}


@pytest.mark.parametrize("name", NAMES)
def test_dump_json_lists_the_same_frames(name):
    v = vector(name)
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "dump", "--json", str(DATA / v["file"])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    dumped = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(d["partition"], d["offset"], d["position"], d["length"], d["type"], int(d["flags"], 16), d["session_id"],
             d["stream_id"], d["term_id"], d["term_offset"], d["reserved_value"]) for d in dumped] == [
        (f["partition"], f["offset"], f["position"], f["length"], f["type_name"], f["flags"], f["session_id"],
         f["stream_id"], f["term_id"], f["term_offset"], f["reserved_value"]) for f in v["frames"]]


@pytest.mark.parametrize("name", NAMES)
def test_reader_gives_the_messages_with_their_headers(name):
    v = vector(name)
    path = DATA / v["file"]
    before = path.read_bytes()
    with LogReader(path) as reader:  # from the retained start
        got = list(reader.messages())
    assert path.read_bytes() == before
    want = v["messages"]  # (rotation: the retained log starts at the previous, complete term)
    assert len(got) == len(want)
    for (data, h), w in zip(got, want):
        assert len(data) == w["length"] and zlib.crc32(data) == w["crc32"]
        assert (h["term_id"], h["term_offset"], h["position"], h["reserved_value"], h["flags"]) == (
            w["term_id"], w["term_offset"], w["position"], w["reserved_value"], 0xC0)
        assert (h["session_id"], h["stream_id"]) == (v["session_id"], v["stream_id"])
