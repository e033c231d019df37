"""Counters in the directory's `cnc.dat` (Aeron CnC layout, Agrona counter records):
positions, limits and heartbeats that any process can allocate, read and free."""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Any, Iterator, Literal, NoReturn

import numpy as np

from .._closing import Closing, guarded
from .._native import c_error, ffi, lib
from ..errors import ClosedError, FileFormatError, InvalidArgumentError, LockstepError
from .mapped import MappedFile, resolve_dir

__all__ = ["Counters", "Counter", "CounterInfo", "CNC_FILE"]

CNC_FILE = "cnc.dat"
DEFAULT_MAX_COUNTERS = 1024
DEFAULT_ERROR_LOG_LENGTH = 1 << 20
DEFAULT_REUSE_DELAY_MS = 1_000

_HEADER = struct.Struct("<iiiiiiqqq")  # version .. pid, as in cnc_descriptor.h
_VALUE_LENGTH: int = lib.LS_COUNTER_VALUE_LENGTH
_META_LENGTH: int = lib.LS_COUNTER_METADATA_LENGTH

_METADATA_DTYPE = np.dtype({
    "names": ["state", "type_id", "reuse_deadline_ms", "key", "label_length", "label"],
    "formats": ["<i4", "<i4", "<i8", "V112", "<i4", "S380"],
    "offsets": [0, 4, 8, 16, 128, 132],
    "itemsize": _META_LENGTH,
})
_VALUES_DTYPE = np.dtype({
    "names": ["value", "registration_id", "owner_id", "reference_id"],
    "formats": ["<i8", "<i8", "<i8", "<i8"],
    "offsets": [0, 8, 16, 24],
    "itemsize": _VALUE_LENGTH,
})

CounterState = Literal["unused", "allocated", "reclaimed", "reserving", "invalid"]  # a record's state, by name
STATE_NAMES: dict[int, CounterState] = {0: "unused", 1: "allocated", -1: "reclaimed", 2: "reserving"}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as dead)."""
    if not 0 < pid < 1 << 31:  # e.g. an owner id from a damaged file: no such process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CounterInfo:
    """One counter record as read from the file (a snapshot)."""

    id: int
    state: CounterState
    type_id: int
    label: str
    key: bytes
    value: int
    registration_id: int
    owner_id: int
    reference_id: int


class Counters(Closing):
    """The counters of a lockstep directory, created on first use."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *,
                 max_counters: int = DEFAULT_MAX_COUNTERS, create: bool = True) -> None:
        self.dir = resolve_dir(dir, create=create)
        self.path = self.dir / CNC_FILE
        values_length = max_counters * _VALUE_LENGTH
        meta_length = max_counters * _META_LENGTH
        if create:
            length = lib.LS_CNC_HEADER_LENGTH + meta_length + values_length + DEFAULT_ERROR_LOG_LENGTH

            def init(buf: np.ndarray) -> None:
                _HEADER.pack_into(buf.data, 0, 0, 0, 0, meta_length, values_length,
                                  DEFAULT_ERROR_LOG_LENGTH, 10_000_000_000, _now_ms(), os.getpid())
                buf[:4] = np.frombuffer(struct.pack("<i", lib.LS_CNC_VERSION), dtype=np.uint8)

            self._file, _ = MappedFile.create_or_open(self.path, length, init)
        else:
            try:
                self._file = MappedFile.open(self.path)
            except FileNotFoundError:
                raise FileFormatError(self.path, "no counters file in this directory") from None
        try:
            self._open_sections()
        except BaseException:
            self._file.close()
            raise

    @classmethod
    def over(cls, mapped: MappedFile) -> Counters:
        """The counters of a cnc file mapped already (a media driver's: Aeron's CnC layout is
        the one this reads); closing them unmaps it."""
        counters = cls.__new__(cls)
        counters.dir = mapped.path.parent
        counters.path = mapped.path
        counters._file = mapped
        counters._open_sections()
        return counters

    @property
    def handle(self) -> Any:
        """The C counters (`ls_counters_t *`) over this mapping, for C code that reads or writes
        them (publications' limits, images' positions); ClosedError once closed."""
        return self._c

    def _open_sections(self) -> None:
        f = self._file
        if f.length < lib.LS_CNC_HEADER_LENGTH:
            raise FileFormatError(self.path, f"length: expected at least {lib.LS_CNC_HEADER_LENGTH}, found {f.length}")
        version, to_driver, to_clients, meta_len, values_len, error_len, _, start_ms, pid = _HEADER.unpack_from(
            f.memoryview(), 0)
        if version != lib.LS_CNC_VERSION:
            raise FileFormatError(self.path, f"cnc version: expected {lib.LS_CNC_VERSION}, found {version}")
        if min(to_driver, to_clients, meta_len, values_len, error_len) < 0:
            raise FileFormatError(self.path, "section lengths: expected non-negative values")
        meta_at = lib.LS_CNC_HEADER_LENGTH + to_driver + to_clients
        values_at = meta_at + meta_len
        self.error_log_offset = values_at + values_len
        self.error_log_length = error_len
        if self.error_log_offset + error_len > f.length:
            raise FileFormatError(
                self.path, f"length: expected at least {self.error_log_offset + error_len} for the sections in "
                f"the header, found {f.length}")
        if meta_at % 8:
            raise FileFormatError(self.path, f"section offsets: expected multiples of 8, found {meta_at}")
        self.start_timestamp_ms = start_ms
        self.pid = pid
        self._c = ffi.new("ls_counters_t *")
        base = f.pointer
        if lib.ls_counters_init(self._c, base + meta_at, meta_len, base + values_at, values_len) < 0:
            raise c_error(self.path)
        self._meta = f.array[meta_at:values_at].view(_METADATA_DTYPE)
        self._values = f.array[values_at:values_at + values_len].view(_VALUES_DTYPE)

    @property
    def max_counters(self) -> int:
        return self._c.max_counter_id

    @guarded
    def allocate(self, type_id: int, label: str, *, key: bytes = b"", registration_id: int = 0,
                 owner_id: int | None = None, reference_id: int = 0) -> "Counter":
        """Allocate a counter (value 0) owned by `owner_id` (this process's pid by default)."""
        label_bytes = label.encode("ascii", "replace")
        owner = os.getpid() if owner_id is None else owner_id
        for attempt in range(2):
            cid = lib.ls_counters_allocate(
                self._c, type_id, key, len(key), label_bytes, len(label_bytes), registration_id, owner,
                reference_id, _now_ms())
            if cid >= 0:
                return Counter(self, cid)
            if attempt or not self.reclaim_dead_owners(reuse_delay_ms=0):
                break
        raise c_error(self.path)

    def reclaim_dead_owners(self, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> int:
        """Free the counters whose owner process no longer exists (a process killed, or one
        that exited without closing). Returns how many were freed."""
        freed = 0
        for info in list(self):
            if info.owner_id > 0 and not pid_alive(info.owner_id):
                try:
                    self.free(info.id, reuse_delay_ms)
                    freed += 1
                except LockstepError:
                    pass  # freed by another process meanwhile
        return freed

    @guarded
    def free(self, counter_id: int, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> None:
        """Free a counter; its record is reused after `reuse_delay_ms` so late readers of the
        old value are not confused by a new owner at once."""
        if lib.ls_counters_free(self._c, counter_id, _now_ms() + reuse_delay_ms) < 0:
            raise c_error(self.path)

    @guarded
    def get(self, counter_id: int) -> int:
        self._check(counter_id)
        return lib.ls_counters_get(self._c, counter_id)

    @guarded
    def set(self, counter_id: int, value: int) -> None:
        self._check(counter_id)
        lib.ls_counters_set(self._c, counter_id, value)

    def _check(self, counter_id: int) -> None:
        if not 0 <= counter_id < self._c.max_counter_id:
            raise InvalidArgumentError(f"counter id: expected 0..{self._c.max_counter_id - 1}, found {counter_id}")

    @guarded
    def info(self, counter_id: int) -> CounterInfo:
        """A snapshot of one record."""
        self._check(counter_id)
        m = self._meta[counter_id]
        v = self._values[counter_id]
        label_length = int(m["label_length"])
        return CounterInfo(
            id=counter_id,
            state=STATE_NAMES.get(int(lib.ls_counters_state(self._c, counter_id)), "invalid"),
            type_id=int(m["type_id"]),
            label=bytes(m["label"])[:label_length].decode("ascii", "replace"),
            key=bytes(m["key"]),
            value=lib.ls_counters_get(self._c, counter_id),
            registration_id=int(v["registration_id"]),
            owner_id=int(v["owner_id"]),
            reference_id=int(v["reference_id"]),
        )

    @guarded
    def find_stream(self, type_id: int, session_id: int, stream_id: int) -> list[CounterInfo]:
        """Allocated counters of `type_id` keyed by a log's (session, stream): its subscribers'
        positions or its publishers' limits."""
        ids = ffi.new("int32_t[]", self._c.max_counter_id)
        n = lib.ls_counters_find_stream(self._c, type_id, session_id, stream_id, ids, self._c.max_counter_id)
        return [self.info(ids[i]) for i in range(min(n, self._c.max_counter_id))]

    def __iter__(self) -> Iterator[CounterInfo]:
        """Snapshots of the allocated counters, by id."""
        return iter(self._allocated())

    @guarded
    def _allocated(self) -> list[CounterInfo]:
        return [self.info(int(cid)) for cid in np.flatnonzero(self._meta["state"] == lib.LS_COUNTER_RECORD_ALLOCATED)]

    def close(self) -> None:
        """Unmap (once no `Counter` of this object is alive: each keeps the mapping, so a
        counter never reads unmapped memory). Using this object afterwards raises ClosedError."""
        super().close()

    def _detach(self) -> None:
        self.__class__ = _ClosedCounters

    def _teardown(self) -> None:
        del self._meta, self._values  # (no views of the mapping left when it is unmapped)
        self._file.close()


def _raise_closed(counters: Counters) -> NoReturn:
    raise counters._closed_error()


class _ClosedCounters(Counters):
    """What a closed `Counters` becomes: its C state (`_c`) raises ClosedError."""

    _c = property(_raise_closed)


_ClosedCounters.__name__ = _ClosedCounters.__qualname__ = "Counters"


class Counter:
    """One allocated counter: an int64 in shared memory (release on write, acquire on read)."""

    __slots__ = ("counters", "id", "_c", "_mapping")

    def __init__(self, counters: Counters, counter_id: int) -> None:
        self.counters = counters
        self.id = counter_id
        self._c = counters._c
        # A buffer export of the mapping: `_c` points into it, so it must outlive close().
        self._mapping = counters._file.array

    @property
    def closed(self) -> bool:
        """Whether this process freed the counter: its record may be someone else's now."""
        return False

    def get(self) -> int:
        return lib.ls_counters_get(self._c, self.id)

    def set(self, value: int) -> None:
        lib.ls_counters_set(self._c, self.id, value)

    def add(self, delta: int = 1) -> int:
        """Atomically add; returns the value before."""
        return lib.ls_counters_get_and_add(self._c, self.id, delta)

    def propose_max(self, value: int) -> None:
        """Raise the value to `value` if it is lower (atomic)."""
        lib.ls_counters_propose_max(self._c, self.id, value)

    def free(self, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> None:
        """Free the record; this object then raises ClosedError (the slot may be reused)."""
        self.counters.free(self.id, reuse_delay_ms)
        self.__class__ = _FreedCounter

    def free_quietly(self, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> None:
        """Free, unless another process (evicting us as dead) or an earlier close already did."""
        try:
            self.counters.free(self.id, reuse_delay_ms)
        except LockstepError:
            pass
        self.__class__ = _FreedCounter

    def __repr__(self) -> str:
        return f"Counter(id={self.id}, value={self.get()})"


def _freed(counter: Counter) -> ClosedError:
    return ClosedError(f"{counter.counters.path}: counter {counter.id}: not allocated to this object any more "
                       f"(freed; its record may be someone else's now)")


class _FreedCounter(Counter):
    """What a freed `Counter` becomes: every access to the record raises ClosedError."""

    __slots__ = ()

    @property
    def closed(self) -> bool:
        return True

    def get(self) -> int:
        raise _freed(self)

    def set(self, value: int) -> None:
        raise _freed(self)

    def add(self, delta: int = 1) -> int:
        raise _freed(self)

    def propose_max(self, value: int) -> None:
        raise _freed(self)

    def free(self, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> None:
        raise _freed(self)

    def free_quietly(self, reuse_delay_ms: int = DEFAULT_REUSE_DELAY_MS) -> None:
        pass

    def __repr__(self) -> str:
        return f"Counter(id={self.id}, freed)"


_FreedCounter.__name__ = _FreedCounter.__qualname__ = "Counter"
