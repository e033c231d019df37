"""A media driver's `cnc.dat` (spec/aeron-driver-protocol.md §1): finding and validating it,
the driver's liveness (the to-driver ring's consumer heartbeat), and its regions — the
to-driver ring, the to-clients broadcast buffer, the counters and the error log."""

from __future__ import annotations

import getpass
import os
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .._closing import Closing
from .._native import c_error, ffi, lib
from ..errors import FileFormatError, LockstepError
from ..transport.counters import Counters
from ..transport.mapped import MappedFile

__all__ = ["CNC_FILE", "CNC_MAJOR_VERSION", "CncHeader", "Cnc", "default_aeron_dir", "read_cnc_header",
           "driver_timeout_ms"]

CNC_FILE = "cnc.dat"
CNC_MAJOR_VERSION = 0  # 0.2.0 = 512; a different major is another protocol
HEADER_LENGTH = 128
_HEADER = struct.Struct("<iiiiiiqqqi")  # version, 5 lengths, liveness ns, start ms, pid, page size
RING_TRAILER_LENGTH = 768
RING_CORRELATION_COUNTER_OFFSET = 512
RING_CONSUMER_HEARTBEAT_OFFSET = 640
BROADCAST_TRAILER_LENGTH = 128
DEFAULT_DRIVER_TIMEOUT_MS = 10_000


def default_aeron_dir() -> Path:
    """$AERON_DIR, else /dev/shm/aeron-$USER (Aeron's default), else aeron-$USER in the temp dir."""
    env = os.environ.get("AERON_DIR")
    if env:
        return Path(env)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    base = Path("/dev/shm") if sys.platform.startswith("linux") and os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    return base / f"aeron-{user}"


def driver_timeout_ms() -> int:
    """$AERON_DRIVER_TIMEOUT (ms), else 10 s: how long to wait for a driver, and how stale its heartbeat may be."""
    try:
        return int(os.environ.get("AERON_DRIVER_TIMEOUT", DEFAULT_DRIVER_TIMEOUT_MS))
    except ValueError:
        return DEFAULT_DRIVER_TIMEOUT_MS


def semantic_version(v: int) -> str:
    return f"{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}.{v & 0xFF}"


@dataclass(frozen=True)
class CncHeader:
    """The CnC header fields, plus the driver's consumer heartbeat (epoch ms; -1 after a clean stop)."""

    version: int
    to_driver_length: int
    to_clients_length: int
    counters_metadata_length: int
    counters_values_length: int
    error_log_length: int
    client_liveness_timeout_ns: int
    start_timestamp_ms: int
    pid: int
    file_page_size: int
    consumer_heartbeat_ms: int
    file_length: int

    @property
    def regions_length(self) -> int:
        return (HEADER_LENGTH + self.to_driver_length + self.to_clients_length + self.counters_metadata_length
                + self.counters_values_length + self.error_log_length)


def read_cnc_header(path: str | os.PathLike[str]) -> CncHeader | None:
    """The header of a cnc.dat without mapping it; None while it is missing or too short to hold one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_LENGTH, 0)
        if len(head) < _HEADER.size:
            return None
        (version, to_driver, to_clients, metadata, values, error_log, liveness_ns, start_ms, pid,
         page_size) = _HEADER.unpack_from(head, 0)
        heartbeat = 0
        at = HEADER_LENGTH + to_driver - RING_TRAILER_LENGTH + RING_CONSUMER_HEARTBEAT_OFFSET
        if to_driver >= RING_TRAILER_LENGTH and at + 8 <= size:
            raw = os.pread(fd, 8, at)
            if len(raw) == 8:
                heartbeat = struct.unpack("<q", raw)[0]
        return CncHeader(version, to_driver, to_clients, metadata, values, error_log, liveness_ns, start_ms, pid,
                         page_size, consumer_heartbeat_ms=heartbeat, file_length=size)
    finally:
        os.close(fd)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Cnc(Closing):
    """A live driver's cnc.dat, mapped read/write: `to_driver` (C ring), `counters`, and the
    broadcast region (`broadcast_view`, `broadcast_capacity`). `attach` waits for a driver."""

    def __init__(self, dir: Path, mapped: MappedFile, header: CncHeader) -> None:
        self.dir = dir
        self.path = mapped.path
        self.file = mapped
        self.header = header
        to_driver_at = HEADER_LENGTH
        to_clients_at = to_driver_at + header.to_driver_length
        meta_at = to_clients_at + header.to_clients_length
        self.error_log_offset = meta_at + header.counters_metadata_length + header.counters_values_length
        self.to_driver = ffi.new("ls_ring_buffer_t *")
        if lib.ls_rb_init(self.to_driver, mapped.pointer + to_driver_at, header.to_driver_length, True) < 0:
            raise c_error(f"{self.path} (to-driver ring)")
        self.to_driver_capacity = header.to_driver_length - RING_TRAILER_LENGTH
        self._heartbeat_at = to_driver_at + self.to_driver_capacity + RING_CONSUMER_HEARTBEAT_OFFSET
        self.broadcast_offset = to_clients_at
        self.broadcast_capacity = header.to_clients_length - BROADCAST_TRAILER_LENGTH
        self.counters = Counters.over(mapped)
        self._words = mapped.memoryview().cast("q")

    @classmethod
    def attach(cls, dir: Path, timeout_ms: int) -> "Cnc":
        """Wait (up to timeout_ms) for a ready cnc.dat of a compatible, live driver in `dir` and map it."""
        path = dir / CNC_FILE
        deadline = time.monotonic() + timeout_ms / 1000
        why = "no cnc.dat"
        delay = 0.016
        while True:
            header = read_cnc_header(path)
            if header is None:
                why = "no cnc.dat" if not path.exists() else "cnc.dat too short to hold a header"
            elif header.version == 0:
                why = "cnc.dat not ready (version 0)"
            elif (header.version >> 16) != CNC_MAJOR_VERSION:
                raise FileFormatError(path, f"CnC version not compatible: found {semantic_version(header.version)}, "
                                            f"this client speaks {CNC_MAJOR_VERSION}.x (0.2.0)")
            elif header.file_length < header.regions_length:
                why = f"cnc.dat shorter ({header.file_length}) than its regions ({header.regions_length})"
            elif header.consumer_heartbeat_ms == -1:
                why = f"the driver (pid {header.pid}) has shut down"
            elif header.consumer_heartbeat_ms == 0 or _now_ms() - header.consumer_heartbeat_ms > timeout_ms:
                age = _now_ms() - header.consumer_heartbeat_ms
                why = (f"stale cnc.dat: driver pid {header.pid} heartbeat {age} ms old" if header.consumer_heartbeat_ms
                       else "driver has not started its heartbeat")
            else:
                _validate(path, header)
                mapped = MappedFile.open(path)
                try:
                    return cls(dir, mapped, header)
                except BaseException:
                    mapped.close()
                    raise
            if time.monotonic() >= deadline:
                raise LockstepError(f"{dir}: no Aeron media driver within {timeout_ms} ms ({why}); "
                                    f"start one with `lockstep driver --dir {dir}`")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- driver liveness --------------------------------------------------------------------

    def consumer_heartbeat_ms(self) -> int:
        """The driver conductor's heartbeat (epoch ms; -1 after a clean shutdown)."""
        return self._words[self._heartbeat_at // 8]

    def driver_alive(self, timeout_ms: int) -> str | None:
        """None while the driver is alive, else why not."""
        hb = self.consumer_heartbeat_ms()
        if hb == -1:
            return "MediaDriver has been shut down"
        age = _now_ms() - hb
        if age > timeout_ms:
            return f"MediaDriver heartbeat is {age} ms old (driver timeout {timeout_ms} ms): the driver is dead"
        return None

    def next_correlation_id(self) -> int:
        """One id from the driver's shared counter (atomic fetch-add; the value before the add)."""
        return lib.ls_rb_next_correlation_id(self.to_driver)

    def close(self) -> None:
        self._words.release()
        self.file.close()


def _validate(path: Path, header: CncHeader) -> None:
    """Region sizes a correct driver writes: refuse anything else before mapping memory on it."""
    ring = header.to_driver_length - RING_TRAILER_LENGTH
    if not _power_of_two(ring):
        raise FileFormatError(path, f"to-driver ring capacity: expected a power of two, found {ring}")
    broadcast = header.to_clients_length - BROADCAST_TRAILER_LENGTH
    if not _power_of_two(broadcast):
        raise FileFormatError(path, f"to-clients broadcast capacity: expected a power of two, found {broadcast}")
    if header.counters_metadata_length < 4 * header.counters_values_length or header.counters_values_length <= 0:
        raise FileFormatError(path, f"counters: expected metadata ({header.counters_metadata_length}) >= 4 x values "
                                    f"({header.counters_values_length})")
    if header.client_liveness_timeout_ns <= 0:
        raise FileFormatError(path, f"client liveness timeout: expected > 0 ns, found {header.client_liveness_timeout_ns}")


