"""Replaying a recording of the sequenced log into a state machine: the same `Replica.apply`
code the live replicas run, from the recording's start or from a snapshot, optionally
stopping after the message at a position, checking the hashes replicas recorded live, and
an interactive step debugger (`lockstep replay --step`)."""

from __future__ import annotations

import importlib
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import codec
from ..cluster.replica import (
    Snapshot,
    StateMachine,
    _OfflineRunner,
    read_hashes,
    read_snapshot,
    write_snapshot,
)
from ..errors import CodecError, InvalidArgumentError, LockstepError
from ..cluster.sequencer import SEQUENCED_HEADER_LENGTH, decode_sequenced
from .archive import Archive

__all__ = [
    "ReplayResult",
    "ReplaySession",
    "Stepper",
    "describe_command",
    "describe_state",
    "load_machine",
    "snapshot_name",
]


def load_machine(spec: str) -> StateMachine:
    """An instance of the class named "package.module:Class" (made with no arguments)."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise InvalidArgumentError(f"machine {spec!r}: expected module:Class, e.g. lockstep.examples.orderbook:OrderBook")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LockstepError(f"machine {spec!r}: cannot import module {module_name!r}: {e}") from None
    cls = module
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


def describe_state(machine: StateMachine) -> dict[str, Any]:
    """What `show-state` prints: the machine's `describe_state()` if it has one, else its
    public scalar attributes and the sizes of its containers."""
    custom = getattr(machine, "describe_state", None)
    if callable(custom):
        return dict(custom())
    out: dict[str, Any] = {}
    for name, value in sorted(vars(machine).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, (bool, int, float, str, type(None))):
            out[name] = value
        elif isinstance(value, bytes):
            out[name] = value.hex() if len(value) <= 32 else f"<{len(value)} bytes>"
        else:
            try:
                out[name] = f"<{type(value).__name__} of {len(value)}>"
            except TypeError:
                out[name] = f"<{type(value).__name__}>"
    return out


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


class ReplaySession:
    """One recording fed into one machine, a message at a time (with one message of
    look-ahead, so "continue to position P" stops exactly after the message at P)."""

    def __init__(self, archive: Archive, recording_id: int, machine: StateMachine, *,
                 snapshot: str | os.PathLike[str] | Snapshot | None = None, until: int | None = None,
                 compare: list[str | os.PathLike[str]] | None = None) -> None:
        self.archive = archive
        self.recording_id = recording_id
        self.machine = machine
        self.runner = _OfflineRunner(machine)
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
            self.runner.last_sequence, self.runner.last_position = snap.sequence, snap.position
            self.runner.ctx.timestamp_ns = snap.timestamp_ns
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
        self.divergence: dict | None = None

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
        """Apply the next message; returns it, or None at the end."""
        message = self.peek()
        if message is None:
            return None
        self._next = None
        payload, header = message
        if len(payload) < SEQUENCED_HEADER_LENGTH:
            raise LockstepError(f"recording {self.recording_id}: message at position {header['position']} is "
                                f"{len(payload)} bytes, shorter than the sequenced header: not a sequenced log")
        self.runner.apply(payload, header["position"])
        self.applied += 1
        if self.expected.tables:
            self._compare(header["position"])
        return message

    def _compare(self, position: int) -> None:
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

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_HELP = """commands:
  n, next [N]                 apply the next message (or N messages)
  c, continue [POSITION]      apply messages up to and including the one at POSITION (default: to the end)
  t, template NAME|ID         apply messages up to and including the next one of that template
  s, state, show-state        print the machine's state and hash
  w, write-snapshot [NAME]    write a snapshot of the state here, next to the recordings
  p, peek                     show the next message without applying it
  h, help                     this text
  q, quit                     stop (the final state hash is printed)"""


class Stepper:
    """The `--step` debugger: reads commands with `read(prompt)` (None at end of input),
    writes lines with `write(text)`."""

    def __init__(self, session: ReplaySession, read: Callable[[str], str | None], write: Callable[[str], None]) -> None:
        self.session = session
        self.read = read
        self.write = write

    def _message_line(self, message: tuple[bytes, dict]) -> str:
        payload, header = message
        m = decode_sequenced(payload, header["position"])
        return f"@{m.position} seq {m.sequence} origin {m.origin_id}: {describe_command(m.command)}"

    def _apply(self, *, verbose: bool) -> None:
        s = self.session
        before = describe_state(s.machine)
        message = s.step()
        if message is None:
            self.write(f"end of recording at position {s.position}")
            return
        after = describe_state(s.machine)
        if verbose:
            self.write(self._message_line(message))
            changes = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
                       if before.get(k) != after.get(k)]
            self.write("  changed: " + (", ".join(changes) if changes else "nothing visible") +
                       f"; hash {s.machine.state_hash().hex()}")
        self._report_divergence()

    def _report_divergence(self) -> None:
        d = self.session.divergence
        if d is not None and not getattr(self, "_divergence_reported", False):
            self._divergence_reported = True
            self.write(f"DIVERGENCE at position {d['position']} (sequence {d['sequence']}): live {d['live']} "
                       f"({d['hashes_file']}), replay {d['replay']}")

    def _continue(self, applied: int, what: str) -> None:
        s = self.session
        state = "end of recording" if s.peek() is None else what
        self.write(f"applied {applied} message(s); now at position {s.position} (sequence "
                   f"{s.runner.last_sequence}); {state}")
        self._report_divergence()

    def loop(self) -> None:
        s = self.session
        self.write(f"replaying recording {s.recording_id} into {type(s.machine).__name__} from position "
                   f"{s.start_position}; 'help' lists commands")
        while True:
            line = self.read(f"(replay @{s.position}) ")
            if line is None:
                return
            try:
                words = shlex.split(line)
            except ValueError as e:
                self.write(f"? {e}")
                continue
            if not words:
                continue
            cmd, args = words[0].lower(), words[1:]
            try:
                if cmd in ("n", "next"):
                    count = int(args[0]) if args else 1
                    for _ in range(max(count, 1)):
                        if s.peek() is None:
                            self.write(f"end of recording at position {s.position}")
                            break
                        self._apply(verbose=True)
                        if s.divergence is not None:
                            break
                elif cmd in ("c", "continue", "continue-to-position"):
                    if args:
                        target = int(args[0])
                        n = s.run_to(target)
                        self._continue(n, f"stopped after the message at or before {target}")
                    else:
                        self._continue(s.run(), "stopped")
                elif cmd in ("t", "template", "continue-to-template"):
                    if not args:
                        self.write("? template NAME|ID")
                        continue
                    want = args[0]

                    def hit(message: tuple[bytes, dict], want: str = want) -> bool:
                        t = _template_of(message[0][SEQUENCED_HEADER_LENGTH:])
                        return t is not None and (t[0] == want or str(t[1]) == want)

                    found: list[tuple[bytes, dict]] = []

                    def hit_and_keep(message: tuple[bytes, dict], found: list = found, hit=hit) -> bool:
                        if hit(message):
                            found.append(message)
                            return True
                        return False

                    n = s.run(hit_and_keep)
                    if found:
                        self.write(self._message_line(found[0]))
                    self._continue(n, f"stopped after the next {want}" if found else f"no {want} found")
                elif cmd in ("s", "state", "show-state"):
                    for k, v in describe_state(s.machine).items():
                        self.write(f"  {k} = {v}")
                    self.write(f"  position {s.position}, sequence {s.runner.last_sequence}, hash "
                               f"{s.machine.state_hash().hex()}")
                elif cmd in ("w", "write-snapshot", "snapshot"):
                    path = s.write_snapshot(args[0] if args else None)
                    self.write(f"snapshot at position {s.position} written to {path}")
                elif cmd in ("p", "peek"):
                    nxt = s.peek()
                    self.write("end of recording" if nxt is None else "next " + self._message_line(nxt))
                elif cmd in ("h", "help", "?"):
                    self.write(_HELP)
                elif cmd in ("q", "quit", "exit"):
                    return
                else:
                    self.write(f"? unknown command {cmd!r}; 'help' lists commands")
            except (ValueError, IndexError) as e:
                self.write(f"? {e}")
