"""Replaying a recording of the sequenced log into a state machine: the same `Replica.apply`
code the live replicas run, from the recording's start or from a snapshot, optionally
stopping after the message at a position, checking the hashes replicas recorded live,
going back to any earlier message (in-memory checkpoints), and pitting two versions of a
machine against each other (`compare_machines`). The step debugger is `archive.debugger`."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._closing import Closing
from .. import codec
from ..cluster.replica import (
    Snapshot,
    StateMachine,
    OfflineReplica,
    read_hashes,
    read_snapshot,
    write_snapshot,
)
from ..errors import CodecError, InvalidArgumentError, LockstepError
from ..cluster.sequencer import SEQUENCED_HEADER_LENGTH, decode_sequenced
from .archive import Archive
from .state_view import describe_state, state_diff

__all__ = [
    "ApplyError",
    "MachineDifference",
    "ReplayResult",
    "ReplaySession",
    "compare_machines",
    "describe_command",
    "describe_state",
    "load_machine",
    "snapshot_name",
]


def load_machine(spec: str) -> StateMachine:
    """An instance of the class named "package.module:Class" (made with no arguments); modules
    in the current directory are found too (as `python -m` and uvicorn find them)."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise InvalidArgumentError(f"machine {spec!r}: expected module:Class, e.g. lockstep.examples.orderbook:OrderBook")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # after everything else: never shadows an installed module
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LockstepError(f"machine {spec!r}: cannot import module {module_name!r}: {e}") from None
    except BaseException as e:  # the module's own code raised (SystemExit included): one line, no traceback
        if isinstance(e, KeyboardInterrupt):
            raise
        raise LockstepError(f"machine {spec!r}: importing module {module_name!r} raised "
                            f"{type(e).__name__}: {e}") from None
    cls: object = module
    for part in class_name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise LockstepError(f"machine {spec!r}: module {module_name!r} has no {class_name!r}")
    if not (isinstance(cls, type) and all(callable(getattr(cls, m, None))
                                          for m in ("on_message", "snapshot", "restore", "state_hash"))):
        raise LockstepError(f"machine {spec!r}: expected a StateMachine class (on_message, snapshot, restore, "
                            f"state_hash)")
    try:
        return cls()
    except Exception as e:
        raise LockstepError(f"machine {spec!r}: constructing it failed: {type(e).__name__}: {e}") from None


def snapshot_name(recording_id: int, machine: StateMachine) -> str:
    """Snapshot files of replays live next to the recordings as
    `recording-<id>-<Class>-<position>.snap`."""
    return f"recording-{recording_id}-{type(machine).__name__}"


def describe_command(command: bytes) -> str:
    """A command decoded through the codec registry (`Name{field=value, ...}`), else its size and hex."""
    try:
        return codec.describe(command)
    except CodecError:
        return f"<{len(command)} bytes {command[:16].hex()}{'...' if len(command) > 16 else ''}>"


def _template_of(command: bytes) -> tuple[str, int] | None:
    try:
        msg = codec.decode(command)
    except CodecError:
        return None
    return msg.type.name, msg.template_id


@dataclass
class ReplayResult:
    """What a replay ended with."""

    recording_id: int
    messages: int
    position: int
    sequence: int
    hash: str
    start_position: int
    snapshot: str | None = None          # the snapshot it started from
    snapshot_written: str | None = None  # the snapshot it wrote at the end
    compared: int = 0                    # live hashes compared
    divergence: dict | None = None       # the first position where they differ
    ended: bool = False                  # the recording (or --until) was reached

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Expected:
    tables: list[tuple[str, dict[int, tuple[int, bytes]]]] = field(default_factory=list)


class ApplyError(LockstepError):
    """Applying a message failed (the machine raised): the session stays before that message,
    with the state it had before it when it keeps checkpoints."""

    def __init__(self, text: str, *, position: int, sequence: int, traceback: str, restored: bool) -> None:
        super().__init__(text)
        self.position, self.sequence, self.traceback, self.restored = position, sequence, traceback, restored


@dataclass(frozen=True)
class _Checkpoint:
    """The session after `applied` messages: enough to go on from there."""

    applied: int
    position: int  # where the reader starts for the next message
    last_sequence: int
    last_position: int
    timestamp_ns: int
    own_sequenced: int
    state: bytes


_MAX_CHECKPOINTS = 64


class ReplaySession(Closing):
    """One recording fed into one machine, a message at a time (with one message of
    look-ahead, so "continue to position P" stops exactly after the message at P).

    With `checkpoints`, it keeps up to 64 in-memory snapshots on its way (spaced wider as the
    replay goes on), so `go_to(n)` can return to the state after any earlier message, and a
    message the machine fails on leaves the state as it was before it."""

    def __init__(self, archive: Archive, recording_id: int, machine: StateMachine, *,
                 snapshot: str | os.PathLike[str] | Snapshot | None = None, until: int | None = None,
                 compare: list[str | os.PathLike[str]] | None = None, checkpoints: bool = False) -> None:
        self.archive = archive
        self.recording_id = recording_id
        self.machine = machine
        self.runner = OfflineReplica(machine)
        desc = archive.recording(recording_id)
        start = None
        self.snapshot = None
        if snapshot is not None:
            snap = snapshot if isinstance(snapshot, Snapshot) else read_snapshot(snapshot)
            if not desc.start_position <= snap.position <= desc.stop_position:
                raise LockstepError(f"{snap.path or 'snapshot'}: position {snap.position} is outside recording "
                                    f"{recording_id} [{desc.start_position}, {desc.stop_position}]")
            try:
                machine.restore(snap.data)
            except Exception as e:
                raise LockstepError(f"{snap.path or 'snapshot'}: {type(machine).__name__}.restore failed: "
                                    f"{type(e).__name__}: {e}") from None
            self.runner.set_position(snap.sequence, snap.position, snap.timestamp_ns)
            self.snapshot = snap
            start = snap.position
        if until is not None:
            if until > desc.stop_position and desc.state != "active":
                raise InvalidArgumentError(f"until {until}: beyond recording {recording_id}'s stop position "
                                           f"{desc.stop_position}")
            if until < (start if start is not None else desc.start_position):
                raise InvalidArgumentError(f"until {until}: before the replay's start position "
                                           f"{start if start is not None else desc.start_position}")
        self.until = until
        self.reader = archive.reader(recording_id, start=start)
        self.start_position = self.reader.position
        self._messages: Iterator[tuple[bytes, dict]] = self.reader.messages()
        self._next: tuple[bytes, dict] | None = None
        self.ended = False
        self.applied = 0
        self.expected = _Expected()
        for path in compare or ():
            table = {p: (s, h) for p, s, h in read_hashes(path)}
            self.expected.tables.append((str(path), table))
        self.compared = 0
        self._compared_upto = -1
        self.divergence: dict | None = None
        self.checkpoints: list[_Checkpoint] | None = [] if checkpoints else None
        self._checkpoint_every = 16
        if self.checkpoints is not None:
            self._checkpoint()

    # -- moving ------------------------------------------------------------------------------

    def peek(self) -> tuple[bytes, dict] | None:
        """The next message (payload, header) without applying it; None at the end (or past `until`)."""
        if self._next is None and not self.ended:
            self._next = next(self._messages, None)
            if self._next is None or (self.until is not None and self._next[1]["position"] > self.until):
                self._next = None
                self.ended = True
        return self._next

    def step(self) -> tuple[bytes, dict] | None:
        """Apply the next message; returns it, or None at the end. When the machine raises,
        the message stays the next one and ApplyError says why (with the traceback)."""
        message = self.peek()
        if message is None:
            return None
        payload, header = message
        if len(payload) < SEQUENCED_HEADER_LENGTH:
            raise LockstepError(f"recording {self.recording_id}: message at position {header['position']} is "
                                f"{len(payload)} bytes, shorter than the sequenced header: not a sequenced log")
        try:
            self.runner.apply(payload, header["position"])
        except Exception as e:
            self._failed(message, e)
        self._next = None
        self.applied += 1
        if self.checkpoints is not None and self.applied - self.checkpoints[-1].applied >= self._checkpoint_every:
            self._checkpoint()
        if self.expected.tables:
            self._compare(header["position"])
        return message

    def _failed(self, message: tuple[bytes, dict], error: Exception) -> None:
        """Turn an exception out of `apply` into ApplyError, the state put back as it was
        before the message (from a checkpoint) when the session keeps them."""
        text = traceback.format_exc()
        self.runner.discard_outputs()
        payload, header = message
        m = decode_sequenced(payload, header["position"])
        restored = False
        if self.checkpoints is not None:
            self._rebuild(self.applied)  # the machine may have changed its state before raising
            restored = True
        frames = traceback.extract_tb(error.__traceback__)
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise ApplyError(
            f"recording {self.recording_id}: {type(self.machine).__name__} failed on the message at position "
            f"{m.position} (sequence {m.sequence}): {type(error).__name__}: {error}{where}", position=m.position,
            sequence=m.sequence, traceback=text, restored=restored) from error

    # -- going back --------------------------------------------------------------------------

    def _kept(self) -> list[_Checkpoint]:
        """The checkpoints of a session made with checkpoints=True (InvalidArgumentError for another)."""
        if self.checkpoints is None:
            raise InvalidArgumentError("going back needs a session made with checkpoints=True")
        return self.checkpoints

    def _checkpoint(self) -> None:
        r = self.runner
        checkpoints = self._kept()
        checkpoints.append(_Checkpoint(self.applied, self.position, r.last_sequence, r.last_position,
                                       r.ctx.timestamp_ns, r.own_sequenced, self.machine.snapshot()))
        if len(checkpoints) > _MAX_CHECKPOINTS:  # thin out: every other one, twice as far apart
            self.checkpoints = checkpoints[::2]
            self._checkpoint_every *= 2

    def go_to(self, applied: int) -> None:
        """Go to the state after the first `applied` messages of this session: back, by
        restoring the nearest checkpoint before and re-applying the rest; forward, by applying
        (stopping at the end)."""
        self._kept()
        if applied < 0:
            raise InvalidArgumentError(f"go_to {applied}: expected a message count >= 0")
        if applied < self.applied:
            self._rebuild(applied)
        while self.applied < applied and self.step() is not None:
            pass

    def _rebuild(self, applied: int) -> None:
        """The state after `applied` (<= self.applied) messages, from the nearest checkpoint before."""
        self._load(max((c for c in self._kept() if c.applied <= applied), key=lambda c: c.applied))
        while self.applied < applied:
            self.step()

    def _load(self, cp: _Checkpoint) -> None:
        try:
            machine = type(self.machine)()  # a fresh instance: nothing left over from later messages
        except Exception:
            machine = self.machine
        machine.restore(cp.state)
        r = self.runner
        r.machine = self.machine = machine
        r.set_position(cp.last_sequence, cp.last_position, cp.timestamp_ns, cp.own_sequenced)
        self.reader.close()
        self.reader = self.archive.reader(self.recording_id, start=cp.position)
        self._messages = self.reader.messages()
        self._next = None
        self.ended = False
        self.applied = cp.applied

    def _compare(self, position: int) -> None:
        if position <= self._compared_upto:
            return  # seen before going back: counted (and checked) once
        self._compared_upto = position
        state_hash = None
        for path, table in self.expected.tables:
            entry = table.get(position)
            if entry is None:
                continue
            if state_hash is None:
                state_hash = self.machine.state_hash()
            self.compared += 1
            if entry[1] != state_hash and self.divergence is None:
                self.divergence = {"position": position, "sequence": entry[0], "hashes_file": path,
                                   "live": entry[1].hex(), "replay": state_hash.hex()}

    def run(self, stop: Callable[[tuple[bytes, dict]], bool] | None = None) -> int:
        """Apply messages until the end, a divergence, or `stop(message)` is true after one.
        Returns how many were applied."""
        n = 0
        while self.divergence is None:
            message = self.step()
            if message is None:
                break
            n += 1
            if stop is not None and stop(message):
                break
        return n

    def run_to(self, position: int) -> int:
        """Apply every message whose position is at most `position` (stops exactly after the
        message at `position`)."""
        n = 0
        while self.divergence is None:
            nxt = self.peek()
            if nxt is None or nxt[1]["position"] > position:
                break
            self.step()
            n += 1
        return n

    # -- state -------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The position after the last message applied (the start position before any)."""
        return self.runner.last_position if self.applied or self.snapshot else self.start_position

    def write_snapshot(self, name: str | None = None) -> Path:
        """Snapshot the state as of the last applied message next to the recordings."""
        r = self.runner
        return write_snapshot(self.archive.dir, name or snapshot_name(self.recording_id, self.machine),
                              Snapshot(r.last_position, r.last_sequence, r.ctx.timestamp_ns, self.machine.snapshot()))

    def result(self, snapshot_written: Path | None = None) -> ReplayResult:
        return ReplayResult(
            recording_id=self.recording_id, messages=self.applied, position=self.position,
            sequence=self.runner.last_sequence, hash=self.machine.state_hash().hex(),
            start_position=self.start_position,
            snapshot=str(self.snapshot.path) if self.snapshot and self.snapshot.path else None,
            snapshot_written=str(snapshot_written) if snapshot_written else None,
            compared=self.compared, divergence=self.divergence, ended=self.peek() is None)

    def _teardown(self) -> None:  # (close())
        self.reader.close()


@dataclass
class MachineDifference:
    """The first message after which two machines' state hashes differ."""

    position: int
    sequence: int
    message: str                 # the message, decoded
    hashes: tuple[str, str]      # (new, old)
    differences: list[str]       # where their states differ: `path: old -> new`
    messages: int                # applied to each, the differing one included

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compare_machines(archive: Archive, recording_id: int, new: StateMachine, old: StateMachine, *,
                     until: int | None = None, progress: Callable[[int], None] | None = None
                     ) -> tuple[MachineDifference | None, ReplaySession, ReplaySession]:
    """Feed one recording into two machines (e.g. yesterday's code and a fix) side by side,
    comparing state hashes after every message; stops at the first message after which they
    differ. Returns that difference (None when they never do) and the two sessions, which the
    caller closes. `progress(position)` is called now and then."""
    a = ReplaySession(archive, recording_id, new, until=until)
    b = ReplaySession(archive, recording_id, old, until=until)
    try:
        n = 0
        while True:
            message = a.peek()
            raised = []
            for session in (a, b):
                try:
                    session.step()
                except ApplyError as e:  # one raises where the other may not: that is a difference too
                    raised.append(f"{type(session.machine).__name__} raised: {e}")
            if message is None:
                return None, a, b
            n += 1
            ha, hb = a.machine.state_hash(), b.machine.state_hash()
            if ha != hb or raised:
                payload, header = message
                m = decode_sequenced(payload, header["position"])
                return MachineDifference(
                    position=m.position, sequence=m.sequence,
                    message=f"@{m.position} seq {m.sequence} origin {m.origin_id}: {describe_command(m.command)}",
                    hashes=(ha.hex(), hb.hex()), differences=raised + state_diff(b.machine, a.machine),
                    messages=n), a, b
            if progress is not None and not n & 63:
                progress(message[1]["position"])
    except BaseException:
        a.close()
        b.close()
        raise
