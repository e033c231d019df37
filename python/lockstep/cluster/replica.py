"""Replicated state machines: deterministic Python classes fed the sequenced log, the
runner that hosts them (live, from a snapshot, or from any log reader), state hashes that
prove replicas equal, atomic checksummed snapshots, and a determinism check mode."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Any, Callable, Iterable, Iterator

from .._closing import Closing
from .._native import fast_method
from .._native._fastpath import ContextBase, SequencedApply
from ..errors import FileFormatError, LockstepError
from ..transport.idle import BACK_PRESSURE_RETRY_NS, REMOTE_POLL_NS, IdleStrategy, run_agent
from ..transport.mapped import check_name, open_private, open_regular, resolve_dir
from .sequenced import DEFAULT_LOG_STREAM, SEQUENCED_HEADER, SEQUENCED_HEADER_LENGTH
from .sequencer_client import SequencerClient
from ..transport.subscription import Subscription
from .remote import RemoteLink

__all__ = ["StateMachine", "Context", "Replica", "Snapshot", "write_snapshot", "read_snapshot", "latest_snapshot",
           "read_hashes", "first_divergence", "check_determinism", "Divergence", "NonDeterminism", "replay",
           "log_messages", "sweep_snapshot_temps", "OfflineReplica"]

_SNAP_MAGIC = b"LSSNAP01"
_SNAP_HEADER = struct.Struct("<8sqqqqII")  # magic, position, sequence, timestamp ns, length, crc32, reserved
_HASH_RECORD = struct.Struct("<qq16s")     # position, sequence, state hash
_MIN_SEQUENCED_FRAME = 64                  # data header + sequenced header: the least a message takes
MAX_OUTPUTS_PER_MESSAGE = 1 << 16


class StateMachine:
    """Base class of a deterministic machine. Rules: read time only from `ctx.timestamp_ns`,
    randomness only from seeds in the log, never iterate unordered containers into output
    or state; then every replica, and every replay, reaches the same state."""

    def on_message(self, ctx: "Context", command: bytes) -> None:
        """Apply one sequenced command (its bytes; decode with lockstep.codec)."""
        raise NotImplementedError

    def snapshot(self) -> bytes:
        """The whole state as bytes (deterministic: equal states give equal bytes)."""
        raise NotImplementedError

    def restore(self, data: bytes) -> None:
        """Load the state `snapshot()` produced."""
        raise NotImplementedError

    def state_hash(self) -> bytes:
        """16 bytes that differ when states differ; by default a hash of snapshot()."""
        return hashlib.blake2b(self.snapshot(), digest_size=16).digest()


class Context(ContextBase):
    """What a machine may know about the message being applied, and its way to send.

    `sequence`, `position`, `timestamp_ns`, `origin_id`, `origin_sequence`: the message's
    sequenced header, kept as C integers by `ContextBase` (the C apply loop sets them)."""

    __slots__ = ("_outputs", "_origin_id")

    def __init__(self, origin_id: int) -> None:
        self._origin_id = origin_id
        self._outputs: list[tuple[int, bytes]] = []

    def send(self, command: Any) -> None:
        """Send a command back to the sequencer. Its origin is the machine (same on every
        replica) and its origin sequence derives from the log sequence, so the sequencer
        keeps exactly one copy however many replicas send it."""
        k = len(self._outputs)
        if k >= MAX_OUTPUTS_PER_MESSAGE:
            raise LockstepError(f"a machine may send at most {MAX_OUTPUTS_PER_MESSAGE} commands per message")
        self._outputs.append(((self.sequence << 16) | k, bytes(command)))


# -- snapshots ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """A machine's state after the message at `position` (sequence `sequence`)."""

    position: int
    sequence: int
    timestamp_ns: int
    data: bytes
    path: Path | None = None


def write_snapshot(dir: str | os.PathLike[str], name: str, snapshot: Snapshot) -> Path:
    """Write `<name>-<position>.snap` atomically (temp file, fsync, rename) with a crc32."""
    directory = resolve_dir(dir)
    path = directory / f"{check_name(name)}-{snapshot.position:020d}.snap"
    header = _SNAP_HEADER.pack(_SNAP_MAGIC, snapshot.position, snapshot.sequence, snapshot.timestamp_ns,
                               len(snapshot.data), zlib.crc32(snapshot.data), 0)
    # Unique (pid + random): a killed writer's leftover never blocks a namesake (same pid in a new container).
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(snapshot.data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sweep_snapshot_temps(dir: str | os.PathLike[str], name: str) -> int:
    """Remove `.<name>-<position>.snap.*.tmp` files a killed writer left (on a replica's start:
    one replica per name). Returns how many went."""
    exact = re.compile(r"\." + re.escape(check_name(name)) + r"-\d{20}\.snap\.[^/]*\.tmp")
    swept = 0
    for tmp in Path(dir).glob(f".{glob.escape(name)}-*.snap.*.tmp"):
        if exact.fullmatch(tmp.name) and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            swept += 1
    return swept


def _read_regular(path: Path, first: int, whole: Callable[[bytes, int], int]) -> bytes:
    """Read a regular file (never a device, FIFO or link: they never end, or block): its first
    `first` bytes, then as many as `whole(first_bytes, file_size)` says the file must hold,
    checked against its size before reading."""
    fd = open_regular(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            size = os.fstat(fd).st_size
            head = f.read(min(first, size))
            want = whole(head, size)
            return head + f.read(want - len(head))
    finally:
        os.close(fd)


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and verify a snapshot file (FileFormatError when truncated or corrupt; a
    FileAccessError when it is not a regular file)."""
    path = Path(path)

    def length_of(head: bytes, size: int) -> int:
        if len(head) < _SNAP_HEADER.size:
            raise FileFormatError(path, f"length: expected at least {_SNAP_HEADER.size} bytes, found {size}")
        magic, _, _, _, length, _, _ = _SNAP_HEADER.unpack_from(head)
        if magic != _SNAP_MAGIC:
            raise FileFormatError(path, f"magic: expected {_SNAP_MAGIC!r}, found {magic!r}")
        if length != size - _SNAP_HEADER.size:
            raise FileFormatError(path, f"data length: expected {length}, found {size - _SNAP_HEADER.size}")
        return size

    raw = _read_regular(path, _SNAP_HEADER.size, length_of)
    magic, position, sequence, timestamp, length, crc, _ = _SNAP_HEADER.unpack_from(raw)
    data = raw[_SNAP_HEADER.size:]
    if len(data) != length:
        raise FileFormatError(path, f"data length: expected {length}, found {len(data)}")
    if zlib.crc32(data) != crc:
        raise FileFormatError(path, f"crc32: expected {crc:08x}, found {zlib.crc32(data):08x}")
    return Snapshot(position, sequence, timestamp, data, path)


def latest_snapshot(dir: str | os.PathLike[str], name: str) -> Snapshot | None:
    """The newest valid snapshot of `name` in `dir` (corrupt ones are skipped), or None."""
    directory = Path(dir)
    # Exactly `<name>-<20 digits>.snap`: not another machine's whose name starts with ours.
    exact = re.compile(re.escape(check_name(name)) + r"-\d{20}\.snap")
    found = [p for p in directory.glob(f"{glob.escape(name)}-*.snap") if exact.fullmatch(p.name)]
    for path in sorted(found, reverse=True):
        try:
            return read_snapshot(path)
        except FileFormatError:
            continue
    return None


# -- state hashes ------------------------------------------------------------------------

def read_hashes(path: str | os.PathLike[str]) -> list[tuple[int, int, bytes]]:
    """(position, sequence, hash) records a replica wrote, oldest first. FileFormatError when
    the file is not a hashes file (each position a multiple of 32, each sequence at least 1 with
    a 64-byte frame or more per message before it, or both 0: the initial state); a
    FileAccessError when not a regular file."""
    path = Path(path)
    raw = _read_regular(path, 0, lambda head, size: size)
    usable = len(raw) - len(raw) % _HASH_RECORD.size  # a torn last record is ignored
    records = [_HASH_RECORD.unpack_from(raw, i) for i in range(0, usable, _HASH_RECORD.size)]
    for i, (position, sequence, _) in enumerate(records):
        if (position, sequence) == (0, 0):
            continue  # the state before any message (a replica that had applied nothing yet)
        if position <= 0 or position % 32 or not 1 <= sequence <= position // _MIN_SEQUENCED_FRAME:
            raise FileFormatError(path, f"record {i} (offset {i * _HASH_RECORD.size}): expected a positive position, "
                                        f"a multiple of 32, and a sequence in 1..position/{_MIN_SEQUENCED_FRAME}, found "
                                        f"position {position}, sequence {sequence}: not a replica's hashes file")
    return records


@dataclass(frozen=True)
class Divergence:
    """Where two replicas' hashes first differ (None when they never do)."""

    position: int
    sequence: int
    hashes: tuple[bytes, ...]


def first_divergence(*hash_files: str | os.PathLike[str]) -> Divergence | None:
    """Compare replicas' recorded hashes at the positions they all recorded."""
    tables = [{p: (s, h) for p, s, h in read_hashes(f)} for f in hash_files]
    common = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
    for position in common:
        hashes = tuple(t[position][1] for t in tables)
        if len(set(hashes)) > 1:
            return Divergence(position, tables[0][position][0], hashes)
    return None


# -- the runner --------------------------------------------------------------------------

def _apply_state(name: str, doc: str) -> Any:
    """A Replica attribute kept by its C apply loop (`SequencedApply`), read and set through it."""
    return property(lambda self: getattr(self._apply_fast, name),
                    lambda self, value: setattr(self._apply_fast, name, value), doc=doc)


def _default_origin(machine: StateMachine) -> int:
    """A machine's origin id: the same on every replica of the same class."""
    name = f"{type(machine).__module__}.{type(machine).__qualname__}".encode()
    return (zlib.crc32(name) & 0x3FFFFFFF) | 0x40000000


class Replica(Closing):
    """Hosts a `StateMachine` on the sequenced log of a directory.

    Starts from the newest snapshot of `name` when there is one (and the log still holds
    what follows it), else from the start of the retained log. Every `hash_every`
    messages it appends (position, sequence, state hash) to `<name>.hashes`; every
    `snapshot_every` messages it writes a snapshot. Outputs (`ctx.send`) go to the
    sequencer; they are queued, never dropped, when its ingress is full."""

    def __init__(self, machine: StateMachine, dir: str | os.PathLike[str] | None = None, *, name: str,
                 stream_id: int = DEFAULT_LOG_STREAM, origin_id: int | None = None, hash_every: int = 1000,
                 snapshot_every: int | None = None, snapshot_dir: str | os.PathLike[str] | None = None,
                 send_outputs: bool = True, restore: bool = True, channel: str | None = None,
                 ingress_channel: str | None = None, replay_channel: str | None = None,
                 aeron_dir: str | os.PathLike[str] | None = None, aeron: Any = None,
                 replay_response_channel: str | None = None) -> None:
        """On another host than the sequencer's: `channel` is where the log arrives (through
        the media driver of `aeron_dir`, or the client `aeron`), `ingress_channel` where outputs
        go, `replay_channel` the archive replay service that fills a gap (a late start; replays
        come back on `channel`'s endpoint, or `replay_response_channel` with an MDC `channel`).
        `dir` keeps this replica's files (hashes, snapshots, counters) either way."""
        self._init_apply(machine, _default_origin(machine) if origin_id is None else origin_id, hash_every,
                         snapshot_every)
        self.name = check_name(name)
        self.dir = resolve_dir(dir)
        self.snapshot_dir = resolve_dir(snapshot_dir) if snapshot_dir is not None else self.dir
        snapshot = latest_snapshot(self.snapshot_dir, self.name) if restore else None
        start: Any = "earliest"
        if snapshot is not None:
            try:
                machine.restore(snapshot.data)
            except Exception as e:  # checksummed, yet not a state this machine can load
                raise FileFormatError(snapshot.path, f"{type(machine).__name__}.restore failed: "
                                                     f"{type(e).__name__}: {e}") from e
            self.last_sequence, self.last_position = snapshot.sequence, snapshot.position
            start = snapshot.position
        self.restored_from = snapshot
        sweep_snapshot_temps(self.snapshot_dir, self.name)  # a killed predecessor's half-written ones
        self._link: RemoteLink | None = None
        if channel is None:
            self.subscription: Any = Subscription(stream_id, self.dir, start=start, join="earliest")
            self._client = SequencerClient(self.dir, origin_id=self.ctx._origin_id) if send_outputs else None
        else:
            self._link = RemoteLink(channel=channel, stream_id=stream_id, position=self.last_position,
                                    ingress_channel=ingress_channel, replay_channel=replay_channel, aeron=aeron,
                                    aeron_dir=aeron_dir, dir=self.dir, name=self.name, origin_id=self.ctx._origin_id,
                                    send=send_outputs, replay_response_channel=replay_response_channel)
            self.subscription, self._client = self._link.follower, self._link.client
        self.hashes_path = self.dir / f"{self.name}.hashes"  # (position, sequence, hash) records
        self._hashes = os.fdopen(open_private(self.hashes_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
        torn = self._hashes.tell() % _HASH_RECORD.size
        if torn:  # a record torn by a crash: drop it, or every later record would be misread
            self._hashes.truncate(self._hashes.tell() - torn)

    def _init_apply(self, machine: StateMachine, origin_id: int, hash_every: int, snapshot_every: int | None) -> None:
        """The apply loop and its state (last sequence and position, applied, ...), kept in C."""
        self.ctx = Context(origin_id)
        self._pending: deque[tuple[int, bytes]] = deque()
        self._apply_fast = SequencedApply(machine, self.ctx, origin_id, self._after_apply,
                                          MethodType(Replica.apply, self))
        self.hash_every, self.snapshot_every = hash_every, snapshot_every

    machine = _apply_state("machine", "the hosted StateMachine")
    last_sequence = _apply_state("last_sequence", "sequence of the last message applied (0: none yet)")
    last_position = _apply_state("last_position", "log position of the last message applied")
    applied = _apply_state("applied", "messages applied by this runner")
    _own_sequenced = _apply_state("own_sequenced", "highest origin sequence of our own outputs seen in the log")

    @property
    def hash_every(self) -> int:
        """A state hash every this many sequences (0: none)."""
        return int(self._apply_fast.hash_every)

    @hash_every.setter
    def hash_every(self, value: int | None) -> None:
        self._apply_fast.hash_every = value or 0

    @property
    def snapshot_every(self) -> int | None:
        """A snapshot every this many sequences (None: none)."""
        return int(self._apply_fast.snapshot_every) or None

    @snapshot_every.setter
    def snapshot_every(self, value: int | None) -> None:
        self._apply_fast.snapshot_every = value or 0

    @property
    def _snapshot_due(self) -> bool:
        return bool(self._apply_fast.snapshot_due)

    @_snapshot_due.setter
    def _snapshot_due(self, value: bool) -> None:
        self._apply_fast.snapshot_due = int(value)

    def apply(self, payload: Any, position: int) -> None:
        """Apply one sequenced-log payload (used by the live loop and by replays).

        One C call (`SequencedApply`); this is its fallback, for a gap (raised here) and odd input."""
        if len(payload) < SEQUENCED_HEADER_LENGTH:
            raise LockstepError(f"{self.name}: sequenced message at position {position}: expected at least "
                                f"{SEQUENCED_HEADER_LENGTH} bytes (the sequencer's header), found {len(payload)}")
        sequence, timestamp, origin_sequence, origin_id, _ = SEQUENCED_HEADER.unpack_from(payload)
        if sequence <= self.last_sequence:
            return  # already in the restored state
        if sequence != self.last_sequence + 1 and self.last_sequence:
            raise LockstepError(f"{self.name}: sequence gap: expected {self.last_sequence + 1}, found {sequence} "
                                f"at position {position}")
        if origin_id == self.ctx._origin_id and origin_sequence > self._own_sequenced:
            self._own_sequenced = origin_sequence  # our output, sequenced (maybe another replica's copy)
        ctx = self.ctx
        ctx.sequence, ctx.position, ctx.timestamp_ns = sequence, position, timestamp
        ctx.origin_id, ctx.origin_sequence = origin_id, origin_sequence
        self.machine.on_message(ctx, bytes(payload[SEQUENCED_HEADER_LENGTH:]))
        self.last_sequence, self.last_position = sequence, position
        self.applied += 1
        if self.snapshot_every and sequence % self.snapshot_every == 0:
            self._snapshot_due = True
        self._after_apply(bool(self.hash_every and sequence % self.hash_every == 0))

    apply = fast_method("_apply_fast", apply)

    def _after_apply(self, hash_due: bool) -> None:
        """The end of applying a message, when there is any (the C loop asks): queue the
        machine's outputs, record the state hash, take a snapshot that is due and ready."""
        ctx = self.ctx
        if ctx._outputs:
            if self._client is not None:
                self._pending.extend(ctx._outputs)
            ctx._outputs.clear()
        if hash_due:
            self.record_hash()
        if self._snapshot_due and self._snapshot_ready():
            self.take_snapshot()

    def _on_fragment(self, data: memoryview, header: Any) -> None:
        self._apply_fast(data, header)  # (the C apply reads header.position)

    def do_work(self, limit: int = 256) -> int:
        """One duty cycle: flush queued outputs, apply up to `limit` log messages (the poll
        hands each straight to the C apply: no Python frame per message for the framework)."""
        work = self.flush()
        if self._snapshot_due and self._snapshot_ready():
            self.take_snapshot()
        return work + self.subscription.poll(self._apply_fast, limit)

    def _snapshot_ready(self) -> bool:
        """No output of the messages a snapshot covers is still only in memory. Queued copies
        of outputs already in the log (another replica's, sequenced first) do not count: the
        sequencer would drop them. Without this, a lagging replica whose copies keep meeting a
        full ingress would put its snapshots off indefinitely."""
        pending = self._pending
        while pending and pending[0][0] <= self._own_sequenced:
            pending.popleft()
        return not pending

    def flush(self) -> int:
        """Send the machine's queued outputs to the sequencer now (each duty cycle does it first);
        returns how many went (the rest wait for room in the ingress)."""
        sent = 0
        pending, client = self._pending, self._client
        if client is None:
            return 0
        while pending and client.send_as(client.origin_id, pending[0][0], pending[0][1]):
            pending.popleft()
            sent += 1
        return sent

    def doorbells(self, rings: list, images: list) -> None:
        """What an idle replica sleeps on: the sequenced log (the sequencer's commit wakes it)."""
        self.subscription.doorbells(rings, images)

    def next_timer_ns(self) -> int | None:
        """Outputs waiting for room in the ingress: look again soon (no doorbell for room);
        a log from another host (a driver's stream rings no doorbell) likewise."""
        if self._link is not None:
            return time.monotonic_ns() + REMOTE_POLL_NS
        return time.monotonic_ns() + BACK_PRESSURE_RETRY_NS if self._pending else None

    def run(self, stop: threading.Event | Callable[[], bool] | None = None,
            idle: IdleStrategy | None = None) -> None:
        """Apply the log until `stop` is set (an Event or a callable returning True). An
        error in a duty cycle (the machine's included) is recorded in the directory's error
        log and re-raised. For Ctrl-C / SIGTERM: `with lockstep.idle.stop_on_signals() as
        stop: replica.run(stop)`, then `close()`. Idle by default: asleep on the log's doorbell."""
        run_agent(self.do_work, stop, idle, error_dir=self.dir)

    def record_hash(self) -> bytes:
        """Append (position, sequence, state hash) to `<name>.hashes` now; returns the hash."""
        h = self.machine.state_hash()
        self._hashes.write(_HASH_RECORD.pack(self.last_position, self.last_sequence, h))
        self._hashes.flush()
        return h

    def take_snapshot(self) -> Path:
        """Write a snapshot of the state as of the last applied message.

        Automatic snapshots (`snapshot_every`) wait until the outputs of the messages they
        cover are in the sequencer's ingress: a replica restarted from a snapshot never sends
        those again, so they must not be lost with the process."""
        self._snapshot_due = False
        return write_snapshot(self.snapshot_dir, self.name, Snapshot(
            self.last_position, self.last_sequence, self.ctx.timestamp_ns, self.machine.snapshot()))

    @property
    def pending_outputs(self) -> int:
        return len(self._pending)

    def _teardown(self) -> None:  # (close())
        if self._link is not None:
            self._link.close()
        else:
            self.subscription.close()
            if self._client is not None:
                self._client.close()
        self._hashes.close()


def replay(machine: StateMachine, messages: Iterable[tuple[bytes, int]], *, until: int | None = None) -> Replica:
    """Feed (payload, position) pairs of a sequenced log into `machine` offline (no
    outputs are sent); stops after the message at position `until`. Returns the runner."""
    runner = OfflineReplica(machine)
    for payload, position in messages:
        runner.apply(payload, position)
        if until is not None and position >= until:
            break
    return runner


class OfflineReplica(Replica):
    """A Replica without a directory, log or client: applies the messages it is handed (the
    archive's replays and step debugger, the determinism check, the benchmarks)."""

    def __init__(self, machine: StateMachine) -> None:  # noqa: D107 - no log, no files
        self._init_apply(machine, _default_origin(machine), 0, None)
        self.name = "offline"
        self._client = None
        self._link = None

    @property
    def own_sequenced(self) -> int:
        """The highest origin sequence of the machine's own outputs seen sequenced."""
        return self._own_sequenced

    def set_position(self, last_sequence: int, last_position: int, timestamp_ns: int, own_sequenced: int = 0) -> None:
        """Stand where a snapshot or checkpoint was taken (its machine state restored by the
        caller): outputs queued since are dropped."""
        self.last_sequence, self.last_position, self.ctx.timestamp_ns = last_sequence, last_position, timestamp_ns
        self._own_sequenced = own_sequenced
        self.discard_outputs()
        self._pending.clear()

    def discard_outputs(self) -> None:
        """Forget what the machine sent during the message being applied (it raised)."""
        self.ctx._outputs.clear()


@dataclass(frozen=True)
class NonDeterminism:
    """The first message after which two instances of a machine differ."""

    sequence: int
    position: int
    hashes: tuple[bytes, bytes]


def check_determinism(factory: Callable[[], StateMachine], messages: Iterable[tuple[bytes, int]],
                      *, gap_ns: int = 1_000_000) -> NonDeterminism | None:
    """Run two instances side by side over the same sequenced messages, comparing state
    hashes after each, the second a little later (`gap_ns`) so wall-clock readers differ.
    Returns where they first diverge, or None."""
    a, b = OfflineReplica(factory()), OfflineReplica(factory())
    for payload, position in messages:
        a.apply(payload, position)
        deadline = time.perf_counter_ns() + gap_ns
        while time.perf_counter_ns() < deadline:
            pass
        b.apply(payload, position)
        ha, hb = a.machine.state_hash(), b.machine.state_hash()
        if ha != hb:
            return NonDeterminism(a.last_sequence, position, (ha, hb))
    return None


def log_messages(reader: Any) -> Iterator[tuple[bytes, int]]:
    """(payload, position) pairs from a `LogReader` (for replay / check_determinism)."""
    for payload, header in reader.messages():
        yield payload, header["position"]
