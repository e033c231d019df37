"""Archive benchmark: `python bench/archive_bench.py [--messages N] [--size B]` prints one
JSON object.

* record: a publisher process offers N messages of B bytes (offer_batch) on an exclusive
  publication; this process records them (`Recorder.do_work` with a backoff idle). Reported:
  bytes recorded / time from the first to the last byte recorded, next to (a) the same
  publisher drained by a plain subscriber that only scans (`poll_batch`, no copy) and (b) a
  plain sequential file write of the same number of bytes into the archive directory, in
  64 KiB chunks, in the same run. Each is run --repeat times (interleaved); medians.
  The stream lives where lockstep's directory does (/dev/shm when there is one), the archive
  on disk, as a user's would; set BENCH_TMP to pick the archive's file system (default: the
  system temp directory).
* replay: N sequenced-log messages (32-byte sequenced header + an 8-byte command) in a
  recording, fed through `ReplaySession` (the `Replica.apply` path) into a trivial machine
  that counts; and, for context, the bare `RecordingReader.poll` rate.

Figures depend on the machine and on what else runs; compare the ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import lockstep
import numpy as np
from lockstep.archive import Archive, Recorder
from lockstep.archive.replay import ReplaySession
from lockstep.cluster.replica import StateMachine

STREAM = 100
TERM = 1 << 24


def _publisher(dir: str, stream_id: int, count: int, size: int, payloads: bool, ready, go) -> None:
    """Offer `count` messages of `size` bytes in batches of 1000 (sequenced-log shaped when
    `payloads`: header with sequence numbers, then an 8-byte command)."""
    pub = lockstep.Publication(stream_id, dir, exclusive=True, term_length=TERM)
    ready.set()
    go.wait()
    idle = lockstep.BackoffIdleStrategy()
    batch = 1000
    offsets = np.arange(batch, dtype=np.int64) * size
    lengths = np.full(batch, size, dtype=np.int32)
    i = 0
    data = bytes(size * batch)
    while i < count:
        n = min(batch, count - i)
        if payloads:
            rows = np.zeros(n, dtype=[("seq", "<i8"), ("ts", "<i8"), ("oseq", "<i8"), ("origin", "<i4"),
                                      ("res", "<i4"), ("cmd", "<i8")])
            rows["seq"] = np.arange(i + 1, i + n + 1)
            rows["ts"] = rows["seq"] * 1000
            rows["oseq"] = rows["seq"]
            rows["origin"] = 1
            rows["cmd"] = rows["seq"]
            data = rows.tobytes()
        accepted, _ = pub.offer_batch(data, offsets[:n], lengths[:n])
        i += accepted
        idle.idle(accepted)
    pub.close(end_of_stream=False)


def _run(dir: Path, count: int, size: int, consumer: str, payloads: bool = False,
         archive_dir: Path | None = None) -> dict:
    """One publisher process; this process records into `archive_dir` (consumer="record") or only scans."""
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_publisher, args=(str(dir), STREAM, count, size, payloads, ready, go), daemon=True)
    p.start()
    ready.wait(60)
    if consumer == "record":
        rec = Recorder(dir, stream_id=STREAM, segment_length=1 << 27, archive_dir=archive_dir)
        rec.discover()
        work, position = rec.do_work, lambda: rec.position
    else:
        sub = lockstep.Subscription(STREAM, dir, start="earliest", join="earliest")
        sub.discover()
        work, position = (lambda: sub.poll_batch(lambda b: None, 1024)), (lambda: sub.images[0].position)
    frame = (32 + size + 31) & ~31
    target = (count * frame // TERM) * TERM + (count * frame % TERM)  # no padding: frame divides the term
    go.set()
    idle = lockstep.BackoffIdleStrategy()
    start = None
    last = time.monotonic()
    while position() < target:
        n = work()
        now = time.monotonic()
        if n:
            if start is None:
                start = now
            last = now
        elif now - last > 60:
            raise RuntimeError(f"{consumer}: no progress for 60 s at position {position()}")
        idle.idle(n)
    seconds = time.monotonic() - start
    p.join(60)
    if consumer == "record":
        rec.close()
    else:
        sub.close()
    return {"bytes": target, "seconds": seconds, "mb_per_sec": target / seconds / 1e6}


def _file_write(dir: Path, nbytes: int) -> dict:
    """A plain sequential write of `nbytes` in 64 KiB chunks (no fsync), like the recorder's."""
    chunk = os.urandom(1 << 16)
    path = dir / "plain-write.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    start = time.perf_counter()
    left = nbytes
    while left > 0:
        left -= os.write(fd, chunk if left >= len(chunk) else chunk[:left])
    os.close(fd)
    seconds = time.perf_counter() - start
    path.unlink()
    return {"bytes": nbytes, "seconds": seconds, "mb_per_sec": nbytes / seconds / 1e6}


class _Count(StateMachine):
    def __init__(self) -> None:
        self.n = 0

    def on_message(self, ctx, command: bytes) -> None:
        self.n += 1

    def snapshot(self) -> bytes:
        return struct.pack("<q", self.n)

    def restore(self, data: bytes) -> None:
        (self.n,) = struct.unpack("<q", data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=96, help="payload bytes for the record run (frame = "
                        "32 + size, aligned to 32; pick a size whose frame divides the term)")
    parser.add_argument("--replay-messages", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="record / scan / plain write runs (median reported)")
    args = parser.parse_args()
    frame = (32 + args.size + 31) & ~31
    if TERM % frame:
        sys.exit(f"--size {args.size}: frame {frame} does not divide the term length {TERM}")
    result: dict = {"messages": args.messages, "payload_bytes": args.size, "frame_bytes": frame}
    shm = lockstep.transport.mapped.default_dir().parent
    with tempfile.TemporaryDirectory(prefix="lockstep-archive-bench-", dir=os.environ.get("BENCH_TMP")) as tmp, \
            tempfile.TemporaryDirectory(prefix="lockstep-archive-bench-", dir=shm) as streams:
        base, sbase = Path(tmp), Path(streams)
        runs: dict[str, list[dict]] = {"record": [], "scan": [], "plain": []}
        for k in range(args.repeat):  # interleaved, so page-cache write-back hits all alike
            archive = base / f"record{k}" / "archive"
            record = _run(lockstep.transport.mapped.resolve_dir(sbase / f"record{k}"), args.messages, args.size,
                          "record", archive_dir=archive)
            runs["record"].append(record)
            runs["scan"].append(_run(lockstep.transport.mapped.resolve_dir(sbase / f"scan{k}"), args.messages,
                                     args.size, "scan"))
            runs["plain"].append(_file_write(archive, record["bytes"]))
            for path in archive.glob("*.rec"):
                path.unlink()
            for path in (sbase / f"record{k}").glob("*.logbuffer"):
                path.unlink()
        record, scan, plain = (sorted(runs[k], key=lambda r: r["mb_per_sec"])[len(runs[k]) // 2]
                               for k in ("record", "scan", "plain"))  # medians
        result["repeat"] = args.repeat
        result.update(record_mb_per_sec=record["mb_per_sec"], subscriber_only_mb_per_sec=scan["mb_per_sec"],
                      plain_file_write_mb_per_sec=plain["mb_per_sec"], bytes=record["bytes"],
                      record_vs_plain_write=record["mb_per_sec"] / plain["mb_per_sec"],
                      record_vs_subscriber_only=record["mb_per_sec"] / scan["mb_per_sec"],
                      archive_dir_filesystem=str(base), stream_dir_filesystem=str(sbase))
        # replay: a recording of sequenced-log shaped messages (32 + 8 = 40 bytes, frame 96)
        rdir = lockstep.transport.mapped.resolve_dir(sbase / "replay")
        n = args.replay_messages
        _run(rdir, n, 40, "record", payloads=True, archive_dir=base / "replay")
        arch = Archive(base / "replay")
        [desc] = arch.recordings()
        with arch.reader(desc.recording_id) as reader:
            start = time.perf_counter()
            read = 0
            while True:
                k = reader.poll(lambda d, h: None, 4096)
                if not k:
                    break
                read += k
            reader_seconds = time.perf_counter() - start
        machine = _Count()
        with ReplaySession(arch, desc.recording_id, machine) as session:
            start = time.perf_counter()
            session.run()
            replay_seconds = time.perf_counter() - start
        assert machine.n == n == read, (machine.n, n, read)
        result.update(replay_messages=n, replay_msgs_per_sec=n / replay_seconds,
                      reader_poll_msgs_per_sec=n / reader_seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
