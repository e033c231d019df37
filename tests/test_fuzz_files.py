"""Fuzzed files: for every file format lockstep opens — ring, log buffer, counters
(cnc.dat), archive catalog, archive segment, snapshot — hypothesis mutates a valid file
(truncations, bit flips, spliced and random bytes, interesting integers written over its
fields) and every open / read / dump of the result runs in a child interpreter. Each must
end with valid data or a LockstepError: no segfault, no hang, no other exception, and at
the command line (`lockstep dump FILE` and friends) exit 0 or exit 1 with one line
`lockstep: error: ...` and no traceback.

Many cases run per child (a batch per hypothesis example): the child reports one JSON line
per case; when the child itself dies or hangs, each case of the batch is re-run alone to
name the input that did it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import cluster_workers as cw
from lockstep import Sequencer, SequencerClient
from lockstep.archive import Recorder
from lockstep.cluster.replica import Snapshot, write_snapshot
from lockstep.examples.orderbook import OrderBook
from lockstep.transport.ring import ManyToOneRing

TERM = 1 << 16
SEGMENT = 1 << 17
BATCH = 24             # cases per child interpreter (one hypothesis example)
EXAMPLES = int(os.environ.get("LOCKSTEP_FUZZ_EXAMPLES") or 8)  # hypothesis examples (batches) per format
CHILD_TIMEOUT = 180.0  # a batch; a hang is a failure (and each case is re-run alone)
CASE_TIMEOUT = 60.0

FORMATS = ["ring", "logbuffer", "counters", "catalog", "segment", "snapshot"]
_totals: dict[str, Counter] = {}


# -- valid files to start from -----------------------------------------------------------

def _drive(until, *steps, what: str) -> None:
    last = time.monotonic()
    while not until():
        if sum(step() for step in steps):
            last = time.monotonic()
        assert time.monotonic() - last < cw.STALL_S, f"no progress: {what}"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Valid files of every kind, made by lockstep itself: {format: (path, hot byte ranges)}.
    The sequenced log rotated past its first term and holds a fragmented message; the
    recording and snapshot are of the same order book; the ring has wrapped and holds
    unread records."""
    src = tmp_path_factory.mktemp("fuzz-seeds") / "lockstep"
    src.mkdir(mode=0o700)
    seq = Sequencer(src, term_length=TERM, ingress_capacity=1 << 16)
    rec = Recorder(src, stream_id=100, segment_length=SEGMENT, archive_dir=src / "archive")
    client = SequencerClient(src, origin_id=cw.CLIENT_ORIGIN_BASE)
    commands = list(cw.commands(0, 900, seed=11))
    commands.insert(300, bytes(range(256)) * 12)  # 3 KiB: fragmented over the 1408-byte mtu
    send = cw.sender(client, commands)
    rec.discover()
    _drive(lambda: seq.last_sequence == len(commands) and rec.position == seq.position, send, seq.do_work,
           rec.do_work, what="making the seed log and recording")
    assert seq.position > TERM, "the seed log should have rotated a term"
    log_path = seq.log.path
    log_written = seq.position
    rec.close()
    client.close()
    seq.close()
    # A snapshot of the order book half way.
    from lockstep.cluster.replica import replay
    from lockstep.transport.reader import LogReader
    from lockstep.cluster.replica import log_messages
    with LogReader(log_path) as reader:
        messages = list(log_messages(reader))
    runner = replay(OrderBook(), messages[:len(messages) // 2])
    snap = write_snapshot(src, "book", Snapshot(runner.last_position, runner.last_sequence, runner.ctx.timestamp_ns,
                                                runner.machine.snapshot()))
    # A ring that wrapped and holds unread records.
    ring_path = src / "fuzz.ring"
    with ManyToOneRing(ring_path, 1024) as ring:
        for i in range(40):
            assert ring.write(1 + i % 3, bytes([i]) * (5 + i % 40))
            if i % 2:
                ring.read(lambda t, d: None, 1)
    archive = src / "archive"
    segment = archive / "0-0.rec"
    meta = 3 * TERM  # the log's metadata section follows the terms
    return {
        "ring": (ring_path, [(0, 1024), (1024, 1024 + 768)]),
        "logbuffer": (log_path, [(0, 2048), (TERM, TERM + 2048), (log_written - TERM - 256, log_written - TERM),
                                 (meta, meta + 1024)]),
        "counters": (src / "cnc.dat", [(0, 128), (128, 128 + 8 * 512), (128 + 1024 * 512, 128 + 1024 * 512 + 1024)]),
        "catalog": (archive / "archive.catalog", [(0, (archive / "archive.catalog").stat().st_size)]),
        "segment": (segment, [(0, 2048), (TERM - 256, TERM + 256), (log_written - 256, log_written + 64)]),
        "snapshot": (snap, [(0, 64), (64, snap.stat().st_size)]),
        "_src": (src, []),
    }


# -- mutations -----------------------------------------------------------------------------

_INTERESTING = [0, 1, -1, 7, 8, 31, 32, 33, 64, 1024, 4096, TERM - 32, TERM, TERM + 32, 3 * TERM, SEGMENT,
                1 << 30, (1 << 31) - 1, -(1 << 31), 1 << 40, (1 << 63) - 1, -(1 << 63)]


def mutation(size: int, hot: list[tuple[int, int]]):
    hot = [(a, min(b, size)) for a, b in hot if a < min(b, size)]
    offset = st.one_of(st.integers(0, size - 1), *[st.integers(a, b - 1) for a, b in hot])
    return st.one_of(
        st.tuples(st.just("truncate"), st.one_of(st.integers(0, size - 1), *[st.integers(a, b) for a, b in hot])),
        st.tuples(st.just("flip"), st.lists(st.tuples(offset, st.integers(0, 7)), min_size=1, max_size=8)),
        st.tuples(st.just("splice"), offset, st.binary(min_size=1, max_size=48)),
        st.tuples(st.just("int"), offset.map(lambda o: o & ~3), st.sampled_from(_INTERESTING), st.sampled_from([4, 8])),
        st.tuples(st.just("random"), st.one_of(st.just(size), st.integers(0, min(2 * size, 1 << 18))),
                  st.integers(0, (1 << 32) - 1)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    )


def case_strategy(fmt: str, size: int, hot):
    base = st.lists(mutation(size, hot), min_size=1, max_size=3)
    if fmt == "snapshot":  # also damage that passes the crc: the machine's restore must cope
        return st.tuples(base, st.booleans())
    return st.tuples(base, st.just(False))


def apply(data: bytes, mutations, recrc: bool = False) -> bytes:
    b = bytearray(data)
    for m in mutations:
        kind = m[0]
        if kind == "truncate":
            del b[m[1]:]
        elif kind == "flip":
            for offset, bit in m[1]:
                if offset < len(b):
                    b[offset] ^= 1 << bit
        elif kind == "splice":
            b[m[1]:m[1] + len(m[2])] = m[2]
        elif kind == "int":
            _, offset, value, width = m
            value &= (1 << (8 * width)) - 1
            b[offset:offset + width] = value.to_bytes(width, "little")
        elif kind == "random":
            b = bytearray(random.Random(m[2]).randbytes(m[1]))
        elif kind == "append":
            b += m[1]
    if recrc and len(b) >= 48:
        import zlib
        body = bytes(b[48:])
        struct.pack_into("<qI", b, 32, len(body), zlib.crc32(body))
    return bytes(b)


# -- the child -------------------------------------------------------------------------------

_CHILD = r'''
import json, os, shutil, sys, traceback
import lockstep
from lockstep import LockstepError
from click.testing import CliRunner
from lockstep.cli import main as cli

CAP = 100_000
runner = CliRunner()

def bounded(it):
    n = 0
    for _ in it:
        n += 1
        if n >= CAP:
            break
    return n

def op_cli(*args):
    r = runner.invoke(cli, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(type(r.exception), r.exception, r.exception.__traceback__))
        raise AssertionError(f"lockstep {' '.join(args)}: traceback (exit {r.exit_code}):\n{tb}")
    if r.exit_code == 0:
        return "ok"
    lines = r.stderr.strip().splitlines()
    if r.exit_code != 1 or len(lines) != 1 or not lines[0].startswith("lockstep: error: ") or "Traceback" in r.output:
        raise AssertionError(f"lockstep {' '.join(args)}: exit {r.exit_code}, stderr {r.stderr!r}")
    return "error"

def ring_ops(c):
    p = c["file"]
    def one():
        with lockstep.OneToOneRing(p) as r:
            bounded(iter(lambda: r.read(lambda t, d: None, 64) or None, None)); r.size()
    def many():
        with lockstep.ManyToOneRing(p) as r:
            r.recover(); r.unblock(); r.read(lambda t, d: bytes(d), 10_000); r.size(); r.write(1, b"x" * 16)
    return {"one": one, "many": many, "dump": lambda: op_cli("dump", "--json", p)}

def logbuffer_ops(c):
    from lockstep.transport.logbuffer import LogBuffer
    from lockstep.transport.reader import LogReader
    p, d = c["file"], c["dir"]
    def open_():
        with LogBuffer.open(p) as log:
            bounded(log.frames())
    def reader():
        with LogReader(p) as r:
            bounded(r.messages())
    def subscription():
        with lockstep.Subscription(100, d, start="earliest") as s:
            for _ in range(200):
                if not s.poll(lambda data, h: bytes(data), 1000):
                    break
    def sequencer():
        s = lockstep.Sequencer(d, term_length=c["term"], ingress_capacity=1 << 16)
        s.do_work(); s.close()
    def recorder():
        from lockstep.archive import Recorder
        with Recorder(d, stream_id=100, segment_length=c["segment"], archive_dir=c["archive"]) as r:
            r.discover()
            for _ in range(200):
                if not r.do_work():
                    break
    return {"open": open_, "reader": reader, "subscription": subscription, "sequencer": sequencer,
            "recorder": recorder, "dump": lambda: op_cli("dump", "--json", p)}

def counters_ops(c):
    p, d = c["file"], c["dir"]
    def open_():
        with lockstep.Counters(d, create=False) as cs:
            list(cs)
    def allocate():
        with lockstep.Counters(d) as cs:
            cs.allocate(1001, "fuzz").free(0)
    return {"open": open_, "allocate": allocate, "dump": lambda: op_cli("dump", "--json", p),
            "stat": lambda: op_cli("stat", "--once", "--json", "--dir", d)}

def archive_ops(c):
    from lockstep.archive import Archive, Recorder
    from lockstep.archive.catalog import Catalog
    import dataclasses
    d, a = c["dir"], c["archive"]
    def read():
        arch = Archive(a)
        for desc in arch.recordings():
            with arch.reader(desc.recording_id) as r:
                bounded(r.messages())
            with arch.reader(desc.recording_id) as r:
                bounded(r.frames())
    def repair():  # as a killed recorder leaves it: active, stop position behind
        arch = Archive(a)
        cat = Catalog(arch.dir)
        for desc in arch.recordings():
            cat.update(dataclasses.replace(desc, state="active", stop_position=desc.start_position))
        cat.close()
        arch.recover()
        read()
    def recorder():
        with Recorder(d, stream_id=100, segment_length=c["segment"], archive_dir=c["archive"]) as r:
            r.discover(); r.do_work()
    ops = {"read": read, "repair": repair, "recorder": recorder,
           "dump": lambda: op_cli("dump", "--json", c["file"]),
           "recordings": lambda: op_cli("recordings", "--json", "--archive-dir", a),
           "replay": lambda: op_cli("replay", "0", "--machine", "lockstep.examples.orderbook:OrderBook",
                                    "--archive-dir", a, "--json")}
    return ops

def snapshot_ops(c):
    from lockstep.cluster.replica import latest_snapshot, read_snapshot
    from lockstep.examples.orderbook import OrderBook
    p, d = c["file"], c["dir"]
    def replica():
        r = lockstep.Replica(OrderBook(), d, name="book", send_outputs=False)
        r.machine.state_hash(); r.close()
    return {"read": lambda: read_snapshot(p), "latest": lambda: latest_snapshot(d, "book"), "replica": replica,
            "dump": lambda: op_cli("dump", "--json", p),
            "replay": lambda: op_cli("replay", "0", "--machine", "lockstep.examples.orderbook:OrderBook",
                                     "--snapshot", p, "--archive-dir", c["archive"], "--json")}

OPS = {"ring": ring_ops, "logbuffer": logbuffer_ops, "counters": counters_ops, "catalog": archive_ops,
       "segment": archive_ops, "snapshot": snapshot_ops}

for line in sys.stdin:
    c = json.loads(line)
    d = c["dir"]
    data = open(os.path.join(d, "damaged.bin"), "rb").read()
    out = {"i": c["i"], "outcomes": {}, "bugs": []}
    for name, fn in OPS[c["format"]](c).items():
        # every op starts from the same files in a clean directory (ops may write)
        for entry in os.listdir(d):
            if entry not in ("pristine", "damaged.bin"):
                path = os.path.join(d, entry)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        shutil.copytree(os.path.join(d, "pristine"), d, dirs_exist_ok=True)
        os.makedirs(os.path.dirname(c["file"]), mode=0o700, exist_ok=True)
        fd = os.open(c["file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.close(fd)
        print(json.dumps({"running": c["i"], "op": name}), flush=True)
        try:
            result = fn()
            out["outcomes"][name] = result if result in ("ok", "error") else "ok"
        except LockstepError as e:
            out["outcomes"][name] = "error"
        except BaseException as e:
            out["bugs"].append(f"{name}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    print(json.dumps(out), flush=True)
'''


def _prepare(fmt: str, seeds, root: Path, i: int, data: bytes) -> dict:
    """A case directory: `pristine/` holds the valid files the damaged one lives with (an
    archive's other files), `damaged.bin` the damaged bytes; the child lays both out afresh
    before each op (ops may write)."""
    src = seeds["_src"][0]
    d = root / f"case{i}"
    (d / "pristine").mkdir(mode=0o700, parents=True)
    name = {"ring": "fuzz.ring", "logbuffer": seeds["logbuffer"][0].name, "counters": "cnc.dat",
            "catalog": "archive/archive.catalog", "segment": "archive/0-0.rec",
            "snapshot": seeds["snapshot"][0].name}[fmt]
    if fmt in ("catalog", "segment", "snapshot"):
        (d / "pristine" / "archive").mkdir(mode=0o700)
        for f in (src / "archive").iterdir():
            if (f.name.endswith(".rec") or f.name == "archive.catalog") and f"archive/{f.name}" != name:
                shutil.copyfile(f, d / "pristine" / "archive" / f.name)
    (d / "damaged.bin").write_bytes(data)
    return {"i": i, "format": fmt, "dir": str(d), "term": TERM, "segment": SEGMENT, "archive": str(d / "archive"),
            "file": str(d / name)}


def _run_child(cases: list[dict], timeout: float) -> tuple[int | None, list[dict], str, str | None]:
    """Run the child over `cases`: (exit code or None on timeout, results, stderr, case running at the end)."""
    stdin = "".join(json.dumps(c) + "\n" for c in cases)
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD], input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout = None, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    results, running = [], None
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "running" in obj:
            running = f"case {obj['running']} op {obj['op']}"
        else:
            results.append(obj)
    return code, results, stderr, running


def _check_batch(fmt: str, seeds, root: Path, batch) -> None:
    data = seeds[fmt][0].read_bytes()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o700, parents=True)
    cases, described = [], []
    for i, (mutations, recrc) in enumerate(batch):
        damaged = apply(data, mutations, recrc)
        cases.append(_prepare(fmt, seeds, root, i, damaged))
        described.append(f"{fmt} {mutations!r}{' (crc fixed)' if recrc else ''} -> {len(damaged)} bytes")
    code, results, stderr, running = _run_child(cases, CHILD_TIMEOUT)
    if code != 0 or len(results) != len(cases):
        # The child died or hung: find the input(s) that did it, alone.
        culprits = []
        for case, what in zip(cases, described):
            c, r, err, run = _run_child([case], CASE_TIMEOUT)
            if c != 0 or len(r) != 1:
                culprits.append(f"{what}: {'hang (timeout)' if c is None else f'exit {c}'} in {run}; "
                                f"stderr tail: {err[-2000:]}")
        raise AssertionError(f"the child interpreter {'hung' if code is None else f'exited {code}'} "
                             f"(in {running}); inputs that crash alone:\n" + "\n".join(culprits or ["(none alone)"]))
    bugs = [f"{described[r['i']]}:\n" + "\n".join(r["bugs"]) for r in results if r["bugs"]]
    assert not bugs, "not a LockstepError:\n" + "\n\n".join(bugs)
    totals = _totals.setdefault(fmt, Counter())
    totals["cases"] += len(cases)
    totals["batches"] += 1
    for r in results:
        for op, outcome in r["outcomes"].items():
            totals[f"{op}:{outcome}"] += 1
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzzed_file_is_valid_data_or_a_lockstep_error(fmt, seeds, tmp_path_factory):
    path, hot = seeds[fmt]
    size = path.stat().st_size
    root = tmp_path_factory.mktemp(f"fuzz-{fmt}")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(case_strategy(fmt, size, hot), min_size=BATCH, max_size=BATCH))
    def run(batch):
        _check_batch(fmt, seeds, root / "batch", batch)

    run()
    totals = _totals.get(fmt, Counter())
    print(f"\nfuzzed {fmt} ({path.name}, {size:,} bytes): {totals['cases']} cases in {totals['batches']} children; "
          + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()) if ":" in k))


def test_a_damaged_file_at_the_real_command_line_is_one_line(seeds, tmp_path):
    """The console script itself (not the in-process runner): one damaged file per kind."""
    exe = Path(sys.executable).with_name("lockstep")
    for fmt in FORMATS:
        path = seeds[fmt][0]
        damaged = tmp_path / path.name
        data = bytearray(path.read_bytes())
        data[0:8] = b"\xff" * 8
        damaged.write_bytes(bytes(data[:len(data) // 2 + 5]))
        proc = subprocess.run([str(exe), "dump", str(damaged)], capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, 1), (fmt, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, (fmt, proc.stderr)
        if proc.returncode == 1:
            assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("lockstep: error: "), (
                fmt, proc.stderr)
        damaged.unlink()
