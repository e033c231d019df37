"""`Recorder`: records a stream of a lockstep directory into an archive, frame for frame.

The recorder is a subscriber of the stream (start and join "earliest", so it holds the
publishers back like any subscriber and loses nothing). After each scan of an image it
copies the term bytes between its old and new position — frames exactly as they lie in
the term, padding and fragments included — into the recording's segment file.

Crash safety: each copied range is written with its first frame's length field last, so
whatever a killed recorder leaves behind ends, on the next scan, at a zero length or at a
complete frame. On restart the catalog's stop position is repaired by scanning the
segments (every header validated); anything after the last good frame is zeroed.

Restarting a recorder for the same stream and session *extends* the same recording (same
id) when the log still holds the recording's stop position (and has the same term length
and initial term id); otherwise it starts a new recording from the log's earliest
retained position. One recording per publisher session (image).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Literal
from pathlib import Path

from .._closing import Closing
from ..errors import InvalidArgumentError, LockstepError
from ..transport.idle import IdleStrategy, run_agent
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import MappedFile, open_regular, os_error, reserve, resolve_dir, try_lock
from ..cluster.sequencer import DEFAULT_LOG_STREAM
from ..transport.subscription import Image, Start, Subscription
from .archive import Archive, default_archive_dir, recorder_lock_path
from .catalog import SPACE_HINT, RecordingDescriptor, RecordingState, now_ns
from .segments import segment_base, segment_name

__all__ = ["DEFAULT_SEGMENT_LENGTH", "DURABILITY", "Recorder"]

Durability = Literal["none", "segment", "interval"]  # when recorded bytes are synced to disk
DURABILITY: tuple[Durability, ...] = ("none", "segment", "interval")
DEFAULT_SEGMENT_LENGTH = 128 << 20
_CHECKPOINT_NS = 100_000_000  # durability "none": catalog stop position at most this stale
_SCAN_LIMIT = 1024


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class _Recording:
    """One image being recorded into one recording."""

    __slots__ = ("desc", "fd", "image", "path", "position", "seg_base", "synced_position", "write")

    def __init__(self, desc: RecordingDescriptor, image: Image, write: Callable[[_Recording, memoryview, int], None]
                 ) -> None:
        self.desc = desc
        self.image: Image | None = image  # None once finished
        self.position = image.position
        self.synced_position = self.position
        self.fd = -1
        self.seg_base = -1
        self.path = image.path
        self.write = functools.partial(write, self)  # (image.block_poll's handler)


class _RecorderSubscription(Subscription[Image]):
    """A subscription whose images start where the recorder wants them (the stop of the
    recording they extend, else the earliest) and are recorded from the moment they are found."""

    def __init__(self, recorder: Recorder, stream_id: int, dir: Path) -> None:
        self._recorder = recorder
        super().__init__(stream_id, dir, start="earliest", join="earliest", on_available_image=recorder._attach)

    def new_image(self, path: Path, start: Start) -> Image:
        return self._recorder._open_image(self, path)


class Recorder(Closing):
    """Records stream `stream_id` of lockstep directory `dir` into `archive_dir` (default
    `default_archive_dir()`: `$LOCKSTEP_ARCHIVE_DIR`, else `$XDG_DATA_HOME/lockstep/archive`; 0700).

    `segment_length`: bytes per segment file, a power of two and a multiple of the term
    length (default 128 MiB, or the term length if larger). `durability`: "none" (the OS
    writes the pages back; the catalog's stop position is refreshed every 100 ms),
    "segment" (fsync each segment when it is complete, and on close), "interval" (fsync
    every `fsync_interval_ms`); with fsync, the catalog's stop position is written (and
    synced) only at sync points, so it never claims what is not on disk.

    Drive it with `run(stop)` or call `do_work()` from your own loop."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, stream_id: int = DEFAULT_LOG_STREAM,
                 archive_dir: str | os.PathLike[str] | None = None, segment_length: int | None = None,
                 durability: Durability = "none", fsync_interval_ms: int = 1000) -> None:
        if durability not in DURABILITY:
            raise InvalidArgumentError(f"durability: expected one of {', '.join(DURABILITY)}, found {durability!r}")
        if segment_length is not None and not (1 << 16 <= segment_length <= 1 << 30
                                               and segment_length & (segment_length - 1) == 0):
            raise InvalidArgumentError(f"segment_length: expected a power of two in [64 KiB, 1 GiB], "
                                       f"found {segment_length}")
        if fsync_interval_ms <= 0:
            raise InvalidArgumentError(f"fsync_interval_ms: expected > 0, found {fsync_interval_ms}")
        self.dir = resolve_dir(dir)
        self.stream_id = stream_id
        self.archive = Archive(resolve_dir(archive_dir if archive_dir is not None else default_archive_dir()))
        self.segment_length = segment_length
        self.durability = durability
        self.fsync_interval_ns = fsync_interval_ms * 1_000_000
        lock_path = recorder_lock_path(self.archive.dir, stream_id)
        self._lock = try_lock(lock_path)
        if self._lock is None:
            raise LockstepError(f"{lock_path}: another recorder is recording stream {stream_id} into this archive")
        self._recordings: list[_Recording] = []
        # Images this recorder opened (new_image) and not yet attached -> the recording each
        # continues (None: a new one). Only these are recorded: an image told again (its publisher
        # resumed the log) is recorded already, and one the subscription made after a loss starts
        # at the live position (a gap: the loss is raised; a restarted recorder continues from
        # the recording's stop position while the log still holds it).
        self._opened: dict[Path, RecordingDescriptor | None] = {}
        self.repaired: list[RecordingDescriptor] = []
        try:
            for desc in self.archive.recordings():
                if desc.stream_id == stream_id and desc.state == "active":
                    self.repaired.append(self.archive.repair(desc))  # its recorder died
            self._polls = 0
            self._next_checkpoint_ns = 0
            self._sub = _RecorderSubscription(self, stream_id, self.dir)
        except BaseException:
            self._release()
            raise

    # -- images -----------------------------------------------------------------------------

    def _open_image(self, sub: Subscription, path: Path) -> Image:
        """Attach to a log: at the stop of the recording it extends, else at the earliest."""
        with LogBuffer(MappedFile.open(path, writable=False)) as log:
            session_id, initial_term_id, term_length = log.session_id, log.initial_term_id, log.term_length
            retained, tail = log.retained_start_position, log.tail_position
        previous = None
        for desc in reversed(self.archive.recordings()):
            if (desc.stream_id, desc.session_id) == (self.stream_id, session_id) and desc.state == "stopped":
                if (desc.initial_term_id == initial_term_id and desc.term_length == term_length
                        and retained <= desc.stop_position <= tail):
                    previous = desc
                break  # only the newest recording of the session may be extended
        image = None
        if previous is not None:
            try:
                image = Image(sub, path, previous.stop_position)
            except InvalidArgumentError:
                previous = None  # overwritten meanwhile: a new recording
        if image is None:
            image = Image(sub, path, "earliest")
        self._opened[path] = previous
        return image

    def _attach(self, image: Image) -> None:
        """A new image (on_available_image): its recording, continued or new — for the images
        this recorder opened only (see `_opened`)."""
        if image.path not in self._opened:  # (popped when attached: an image told again is not)
            return
        now = now_ns()
        previous = self._opened.pop(image.path)
        if previous is not None:
            desc = dataclasses.replace(previous, state="active", stop_timestamp=now)
            self.archive.catalog.update(desc, sync=self.durability != "none")
        else:
            log = image.log
            segment_length = self.segment_length
            if segment_length is None:
                segment_length = max(DEFAULT_SEGMENT_LENGTH, log.term_length)
            elif segment_length % log.term_length:  # (the subscription closes the image with the recorder)
                raise InvalidArgumentError(f"segment_length {segment_length}: expected a multiple of the term "
                                           f"length {log.term_length} of {image.path}")
            desc = self.archive.catalog.append(
                stream_id=self.stream_id, session_id=log.session_id, start_position=image.position,
                stop_position=image.position, start_timestamp=now, stop_timestamp=now,
                term_length=log.term_length, segment_length=segment_length, mtu=log.mtu_length,
                initial_term_id=log.initial_term_id, state="active", channel=image.path.name)
        self._recordings.append(_Recording(desc, image, self._write))

    # -- work -------------------------------------------------------------------------------

    def do_work(self) -> int:
        """One duty cycle: copy what each image gained into its recording. Returns how many
        recordings grew (0: nothing to do)."""
        work = 0
        for rec in self._recordings:
            if rec.image is not None and rec.image.block_poll(rec.write, _SCAN_LIMIT):
                work += 1
        self._polls += 1
        if not self._polls & (1023 if work else 15):
            self._housekeeping()
        return work

    def _write(self, rec: _Recording, block: memoryview, position: int) -> None:
        """Copy one block of frames at `position` (within one term, so one segment; block_poll's
        handler) into the recording. A failed write leaves the block to the next block_poll."""
        desc = rec.desc
        base = segment_base(desc.start_position, position, desc.term_length, desc.segment_length)
        if base != rec.seg_base:
            self._open_segment(rec, base)
        file_offset = position - base
        # The first frame's length last: a crash in between leaves a 0 there, which ends the
        # recording at `position` on recovery.
        try:
            _pwrite_all(rec.fd, block[4:], file_offset + 4)
            _pwrite_all(rec.fd, block[:4], file_offset)
        except OSError as e:  # (the space is reserved: a filesystem that could not keep it)
            raise os_error(self.archive.dir / segment_name(desc.recording_id, base), e, "write",
                           needed=len(block), hint=SPACE_HINT) from e
        rec.position = position + len(block)

    def _open_segment(self, rec: _Recording, base: int) -> None:
        if rec.fd >= 0:
            if self.durability != "none":
                os.fdatasync(rec.fd)
                rec.synced_position = rec.position
            os.close(rec.fd)
            rec.fd = -1
            self._checkpoint(rec)
        path = self.archive.dir / segment_name(rec.desc.recording_id, base)
        if not os.path.lexists(path):
            # Made at full length under a temporary name, then linked: a segment file is
            # never seen shorter than the segment length. Its space is reserved first, so a
            # full filesystem is a NoSpaceError here, and no half-made segment is linked.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = open_regular(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            try:
                reserve(fd, path, rec.desc.segment_length, hint=SPACE_HINT)
                try:
                    os.link(tmp, path)
                except OSError as e:
                    raise os_error(path, e, "create", hint=SPACE_HINT) from e
            finally:
                os.close(fd)
                os.unlink(tmp)
        fd = open_regular(path, os.O_RDWR)
        size = os.fstat(fd).st_size
        if size != rec.desc.segment_length:
            os.close(fd)
            raise LockstepError(f"{path}: length: expected {rec.desc.segment_length} bytes, found {size}")
        rec.fd, rec.seg_base = fd, base

    def _checkpoint(self, rec: _Recording, state: RecordingState = "active") -> None:
        """Write the recording's stop position into the catalog: with fsync durability, only
        what has been synced."""
        stop = rec.position if self.durability == "none" else rec.synced_position
        if stop == rec.desc.stop_position and state == rec.desc.state:
            return
        rec.desc = dataclasses.replace(rec.desc, stop_position=stop, stop_timestamp=now_ns(), state=state)
        self.archive.catalog.update(rec.desc, sync=self.durability != "none")

    def _housekeeping(self) -> None:
        self._sub.maintain()  # new images, ended images, dead publishers (rate-limited)
        now = time.monotonic_ns()
        for rec in self._recordings:
            if rec.image is not None and rec.image.closed:
                self._finish(rec)  # the log ended and everything in it is recorded
        if now >= self._next_checkpoint_ns:
            if self.durability == "interval":
                self._next_checkpoint_ns = now + self.fsync_interval_ns
                for rec in self._recordings:
                    if rec.fd >= 0 and rec.synced_position != rec.position:
                        os.fdatasync(rec.fd)
                        rec.synced_position = rec.position
                        self._checkpoint(rec)
            else:
                self._next_checkpoint_ns = now + _CHECKPOINT_NS
                if self.durability == "none":
                    for rec in self._recordings:
                        self._checkpoint(rec)

    def _finish(self, rec: _Recording) -> None:
        if rec.fd >= 0:
            if self.durability != "none":
                os.fdatasync(rec.fd)
            os.close(rec.fd)
            rec.fd = -1
        rec.synced_position = rec.position
        self._checkpoint(rec, "stopped")
        rec.image = None

    def doorbells(self, rings: list, images: list) -> None:
        """What an idle recorder sleeps on (`run`'s default idle): the logs it records."""
        self._sub.doorbells(rings, images)

    def run(self, stop: threading.Event | Callable[[], bool] | None = None, idle: IdleStrategy | None = None) -> None:
        """Record until `stop` is set (an Event or a callable returning True). An error in a
        duty cycle is recorded in the directory's error log and re-raised. For Ctrl-C /
        SIGTERM: `with lockstep.transport.idle.stop_on_signals() as stop: recorder.run(stop)`, then
        `close()` marks the recordings stopped (what `lockstep record` does)."""
        run_agent(self.do_work, stop, idle, error_dir=self.dir)

    # -- state ------------------------------------------------------------------------------

    @property
    def recording_id(self) -> int | None:
        """The id of the newest recording this recorder writes (None before a publisher appears)."""
        return self._recordings[-1].desc.recording_id if self._recordings else None

    @property
    def recording_ids(self) -> list[int]:
        return [r.desc.recording_id for r in self._recordings]

    @property
    def position(self) -> int:
        """Where the newest recording has got to (0 before a publisher appears)."""
        return self._recordings[-1].position if self._recordings else 0

    def recordings(self) -> list[RecordingDescriptor]:
        """Descriptors of this recorder's recordings, with their current positions."""
        return [dataclasses.replace(r.desc, stop_position=r.position) for r in self._recordings]

    def discover(self) -> int:
        """Look for new publishers now (do_work does it every 100 ms)."""
        return self._sub.discover()

    def close(self) -> None:
        """Stop recording: everything read is written (and synced unless durability is
        "none"); recordings are marked stopped; the stream's subscriber position goes."""
        super().close()

    def _teardown(self) -> None:  # (close())
        try:
            for rec in self._recordings:
                if rec.image is not None:
                    self._finish(rec)
        finally:
            self._sub.close()
            self.archive.catalog.close()
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __repr__(self) -> str:
        return f"Recorder(stream_id={self.stream_id}, recordings={self.recording_ids}, archive={str(self.archive.dir)!r})"
