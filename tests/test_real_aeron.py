"""Log buffers written by a real Aeron media driver (../shared/testdata/aeron): lockstep's term
reader and fragment assembler give exactly the messages Aeron's subscriber received, and
`lockstep dump` lists their frames, padding included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep import LogBuffer
from lockstep.transport.reader import LogReader

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "aeron"
NAMES = ["ipc-basic", "ipc-rotation"]

pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"no Aeron test data at {TESTDATA}")


def fnv1a64(data: bytes) -> str:
    """The testdata README's FNV-1a variant (non-standard offset basis)."""
    h = 0x14650FB0739D0383
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def expected(name: str) -> list[dict]:
    return json.loads((TESTDATA / f"{name}.messages.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_reader_gives_exactly_aerons_messages(name):
    want = expected(name)
    with LogBuffer.open(TESTDATA / f"{name}.logbuffer") as log:
        start = log.position(want[0]["term_id"], want[0]["term_offset"])
    seed = {"ipc-basic": 0, "ipc-rotation": 3}[name]
    with LogReader(TESTDATA / f"{name}.logbuffer", position=start) as reader:
        got = list(reader.messages())
    assert len(got) == len(want)
    for (payload, header), w in zip(got, want):
        assert len(payload) == w["length"]
        assert fnv1a64(payload) == w["fnv1a64"]
        assert payload == bytes((w["index"] * 31 + j + seed) & 0xFF for j in range(w["length"]))
        for key in ("session_id", "stream_id", "term_id", "term_offset", "flags", "position"):
            assert header[key] == w[key], (w["index"], key)


@pytest.mark.parametrize("name", NAMES)
def test_file_is_not_modified_by_reading(name):
    path = TESTDATA / f"{name}.logbuffer"
    before = path.read_bytes()
    with LogReader(path, position=0 if name == "ipc-basic" else None) as reader:
        list(reader.messages())
    assert path.read_bytes() == before


def _dump(path: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "lockstep.cli", "dump", "--json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_dump_lists_every_frame(name):
    frames = _dump(TESTDATA / f"{name}.logbuffer")
    want = expected(name)
    data = [f for f in frames if f["type"] == "DATA"]
    # One frame per message, plus one more for each fragmented message (payload > 1376 bytes).
    per_message = [1 if w["length"] <= 1376 else -(-w["length"] // 1376) for w in want]
    assert len(data) == sum(per_message)
    assert {f["session_id"] for f in data} == {want[0]["session_id"]}
    assert {f["stream_id"] for f in data} == {want[0]["stream_id"]}
    starts = [(f["term_id"], f["term_offset"]) for f in data if f["flags"] in ("0xc0", "0x80")]
    assert starts == [(w["term_id"], w["term_offset"]) for w in want]
    pads = [f for f in frames if f["type"] == "PAD"]
    if name == "ipc-rotation":
        assert len(pads) == 1 and pads[0]["term_id"] == 107
        assert pads[0]["term_offset"] + pads[0]["length"] == 65536
    else:
        assert pads == []
