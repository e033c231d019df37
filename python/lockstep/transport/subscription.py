"""`Subscription`: reads a stream from every publisher session in the directory (one
`Image` each), discovering new publishers while it runs and keeping its position in a
shared counter that back-pressures the publishers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Generic, Literal, TypeVar, overload


from .._closing import Closing, guarded
from .._native._fastpath import PollAny, ReceiveAny
from .._native import c_error, fast_method, ffi, lib
from .client import (DEFAULT_LIVENESS_TIMEOUT_MS, STREAM_KEY, TYPE_PUBLISHER_LIMIT, TYPE_SUBSCRIBER_POSITION,
                     TYPE_UNBLOCKS, check_timeout_ms, client_for, is_alive)
from ..errors import ImageLostError, InvalidArgumentError, LockstepError
from .counters import CounterInfo
from .logbuffer import LogBuffer
from .mapped import MappedFile, resolve_dir
from .controlled import ControlledAction
from .reader import Batch, Header, LogReader, _controlled
from .errorlog import record_error
from .stream_files import check_log_name, stream_logs

__all__ = ["Subscription", "Image", "Header", "Batch"]

_BATCH = 1024
_HOUSEKEEPING_INTERVAL_NS = 100_000_000
DEFAULT_UNBLOCK_TIMEOUT_MS = 15_000
# Blocking receive sleeps at most this long at once, so discovery and liveness checks go on.
_WAIT_SLICE_NS = _HOUSEKEEPING_INTERVAL_NS
_NO_IMAGE_WAIT_NS = 10_000_000
_MAX_BELLS: int = lib.LS_DOORBELL_MAX

Start = Literal["live", "earliest"] | int
ImageHandler = Callable[["Image"], Any]
# The images a subscription reads: `Image` (lockstep's logs) or `AeronImage` (a driver's).
ImageT = TypeVar("ImageT", bound=LogReader)


class Image(LogReader):
    """One publisher session's log as seen by one subscription; its position is a shared
    counter that holds that session's publishers back."""

    _unlink_if_done = False  # what close() asked for (the teardown may come later)

    def __init__(self, subscription: "Subscription[Image]", path: Path, start: Start) -> None:
        log = LogBuffer(MappedFile.open(path))
        try:
            check_log_name(path, log.stream_id, log.session_id)
        except BaseException:
            log.close()
            raise
        if start == "live":
            position = log.tail_position
        elif start == "earliest":
            position = log.retained_start_position
        else:
            position = int(start)
            first, tail = log.retained_start_position, log.tail_position
            if not first <= position <= tail or position % 32:
                log.close()  # (read the log before: it is unmapped now)
                raise InvalidArgumentError(
                    f"{path}: start position {position}: expected a frame boundary in the retained range "
                    f"[{first}, {tail}]")
        self._sub = subscription
        self.join_position = position
        self.lost: ImageLostError | None = None  # why it went away, when it was lost
        self._register(log.session_id, log.stream_id, position)
        try:
            super().__init__(log, position, self._position_addr())
        except BaseException:
            self._counter.free(0)
            raise
        # From now on every write of the position first checks the counter is still ours.
        if lib.ls_image_set_owner(self._image, self._counter._c, self._counter.id, self.registration_id) < 0:
            error = c_error(self.path)
            self.close()
            raise error
        self._blocked_since_ns = 0
        self._blocked_at = -1

    def _register(self, session_id: int, stream_id: int, position: int) -> None:
        """Allocate the position counter by which publishers find this image and wait for it."""
        client = self._sub._client
        self.registration_id = client.next_registration_id()
        self._counter = client.counters.allocate(
            TYPE_SUBSCRIBER_POSITION, f"sub-pos: {self.registration_id} {stream_id} {session_id} @{position}",
            key=STREAM_KEY.pack(self.registration_id, session_id, stream_id),
            registration_id=self.registration_id, reference_id=client.heartbeat.id)
        self._counter.set(position)  # before anyone bounds a publisher by it

    def _position_addr(self):
        return lib.ls_counters_value_addr(self._sub._client.counters.handle, self._counter.id)

    def _failed(self, status: int) -> None:
        """A read found the image lapped or evicted: the subscription closes it and tells the
        handler or raises ImageLostError; any other failure raises the C error."""
        if status not in (lib.LS_IMAGE_LAPPED, lib.LS_IMAGE_NOT_OWNER):
            super()._failed(status)
        self._sub._image_lost(self, *self._loss(status))

    def check(self, now_ns: int) -> str | None:
        """Unblock a writer that died mid-frame. Returns "ended" at the end of stream, "idle"
        when everything is read and no publisher of the log is alive (the log may yet be
        resumed, e.g. by a restarted sequencer), "lost" when a publisher evicted it (its
        position counter is no longer ours), else None."""
        if not lib.ls_image_is_owner(self._image):
            return "lost"
        if lib.ls_image_is_blocked(self._image):
            position = self.position
            if position != self._blocked_at:
                self._blocked_at, self._blocked_since_ns = position, now_ns
            elif now_ns - self._blocked_since_ns >= self._sub.unblock_timeout_ms * 1_000_000:
                if lib.ls_image_unblock(self._image):
                    self._sub._unblocks.add(1)
                self._blocked_at = -1
        else:
            self._blocked_at = -1
        position = self.position
        if position >= self.log.end_of_stream_position:
            return "ended"
        if position >= self.log.tail_position and not self._publisher_alive():
            return "idle"
        return None

    @property
    def has_more(self) -> bool:
        """Whether frames were written past our position (an idle log was resumed)."""
        return self.log.tail_position > self.position

    def _session_counters(self, type_id: int) -> list[CounterInfo]:
        return self._sub._client.counters.find_stream(type_id, self.session_id, self.stream_id)

    def _publisher_alive(self) -> bool:
        counters = self._sub._client.counters
        return any(is_alive(counters, info, self._sub.liveness_timeout_ms)
                   for info in self._session_counters(TYPE_PUBLISHER_LIMIT))

    def _others_behind(self) -> bool:
        """Another live subscriber of this session has not reached our position."""
        counters = self._sub._client.counters
        position = self.position
        return any(info.id != self._counter.id and info.value < position
                   and is_alive(counters, info, self._sub.liveness_timeout_ms)
                   for info in self._session_counters(TYPE_SUBSCRIBER_POSITION))

    def close(self, *, unlink_if_done: bool = False) -> None:
        """Detach (free the position counter); with unlink_if_done, remove the finished log
        file unless another subscriber still has to read it."""
        if not self._closed:
            self._unlink_if_done = unlink_if_done
        super().close()

    def _teardown(self) -> None:
        owned = lib.ls_image_is_owner(self._image)  # never free a counter that is someone else's now
        if self._unlink_if_done and owned and not self._others_behind():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if owned:
            self._counter.free_quietly()
        super()._teardown()


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, None when it is gone: tells a replaced file from the same one."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class Subscription(Closing, Generic[ImageT]):
    """Receives every message published on `stream_id` in the directory.

    `start`: "live" (default: from each publisher's current position), "earliest" (from
    the start of the retained log), or a position (applies to images present at creation).
    `join`: where images of publishers found later start ("live", or "earliest" for a
    consumer that must see everything, like a replica of the sequenced log).

    Lost images are never silent (Aeron's model): `on_available_image(image)` runs for each
    image that joins; `on_unavailable_image(image)` for each that goes: its publisher ended or
    died, or it was lost (evicted as dead by a publisher, or lapped: `image.lost` is the
    ImageLostError). Without `on_unavailable_image` a lost image makes the next poll, receive
    or poll_batch raise ImageLostError (once; later calls go on with the other images). A lost
    image is followed by a new image of the same log at its live position. `receive` checks
    each copy before returning it; `poll`/`poll_batch` hand out views, so a message that a
    handler read while its process was paused past the liveness timeout may be overwritten:
    the loss told next then starts at or before it (`from_position`): drop such messages.
    """

    __slots__ = ("_poll_any", "_controlled_any", "_rx")  # slots: the poll methods read them without a lookup

    # Generic in the image type: its handlers get, and `images` lists, Images here and the
    # AeronImages of AeronSubscription. The methods that find and check log files of the
    # directory (self: Subscription[Image]) are this class's own.
    on_available_image: Callable[[ImageT], Any] | None
    on_unavailable_image: Callable[[ImageT], Any] | None
    _image_list: list[ImageT]
    _wait_images: tuple[list[ImageT] | None, Any]  # (list, its ls_image_t *[])

    def __init__(self: Subscription[Image], stream_id: int, dir: str | os.PathLike[str] | None = None, *, start: Start = "live",
                 liveness_timeout_ms: int = DEFAULT_LIVENESS_TIMEOUT_MS,
                 unblock_timeout_ms: int = DEFAULT_UNBLOCK_TIMEOUT_MS,
                 join: Literal["live", "earliest"] = "live",
                 on_available_image: ImageHandler | None = None,
                 on_unavailable_image: ImageHandler | None = None) -> None:
        if join not in ("live", "earliest"):
            raise InvalidArgumentError(f"join: expected 'live' or 'earliest', found {join!r}")
        self.join = join
        if not (start in ("live", "earliest") or isinstance(start, int)):
            raise InvalidArgumentError(f"start: expected 'live', 'earliest' or a position, found {start!r}")
        self.stream_id = stream_id
        self.dir = resolve_dir(dir)
        self.liveness_timeout_ms = check_timeout_ms("liveness_timeout_ms", liveness_timeout_ms)
        self.unblock_timeout_ms = check_timeout_ms("unblock_timeout_ms", unblock_timeout_ms)
        self._client = client_for(self.dir)
        self._images: dict[Path, Image] = {}
        self._finished: set[Path] = set()
        self._parked: set[Path] = set()  # images whose publishers died, all read
        self.on_available_image = on_available_image
        self.on_unavailable_image = on_unavailable_image
        # Lost images not yet reported (ImageLostError, log path) and the images that follow
        # them, held back until the loss is raised: nothing after a gap goes out before it.
        self._pending: list[tuple[ImageLostError, Path]] = []
        self._held: dict[Path, Image] = {}
        self._bad: dict[Path, tuple[int, int, int]] = {}  # files skipped, by identity (recorded once)
        self._unblocks = self._client.counters.allocate(
            TYPE_UNBLOCKS, f"unblocks: stream {stream_id}", reference_id=self._client.heartbeat.id)
        self._image_list = []
        self._wait_images = (None, None)
        # receive(): one vectorcall into C (images in turn, housekeeping every 64 empty / 1024
        # busy calls, the blocking wait below when asked to wait).
        self._rx = ReceiveAny(self._housekeeping, self._receive_blocking)  # (the class's `receive` hands calls to it)
        # poll(): one vectorcall into C (images in turn, housekeeping — discovery, liveness, lost
        # images held back until reported — at the moments the Python poll below has it); the
        # class's `poll` hands calls to it.
        self._poll_any = PollAny(self._housekeeping, Subscription.poll.__get__(self))
        self._controlled_any = PollAny(self._housekeeping, Subscription.controlled_poll.__get__(self), controlled=True)
        self._next_image = 0
        self._next_housekeeping_ns = 0
        self._polls = 0  # housekeeping (discovery, liveness) runs every 64 idle / 1024 busy polls
        self._discover(start)

    # -- reading --------------------------------------------------------------------------

    def poll(self: Subscription[Image], handler: Callable[[memoryview, Header], Any], fragment_limit: int = 10) -> int:
        """Hand up to `fragment_limit` messages to `handler(data, header)`, fairly across
        images; `data` is a view valid only during the call. Returns the number handled."""
        if self._closed:  # (images guard their own calls; close() waits for them)
            raise self._closed_error()
        total = self._poll_images(handler, fragment_limit)
        self._polls += 1
        if not self._polls & (1023 if total else 63):
            self._housekeeping()
        return total

    poll = fast_method("_poll_any", poll)

    def controlled_poll(self, handler: Callable[[memoryview, Header], ControlledAction | None],
                        fragment_limit: int = 10) -> int:
        """Like `poll`, but `handler(data, header)` returns a `ControlledAction` (Aeron's
        controlledPoll, images in turn): ABORT leaves the message unread and stops reading its
        image, BREAK consumes it and stops that image, COMMIT stores the image's position past
        it now, CONTINUE (or None) goes on. Returns the messages consumed."""
        if self._closed:
            raise self._closed_error()
        return _controlled(self._controlled_any, handler, fragment_limit)

    controlled_poll = fast_method("_controlled_any", controlled_poll)

    def _poll_images(self, handler: Callable[[memoryview, Header], Any], fragment_limit: int) -> int:
        """Up to `fragment_limit` messages from the images in turn, each poll starting at the
        next one (fair when one image always has more); returns how many."""
        images = self._image_list
        if len(images) == 1:
            return images[0].poll(handler, fragment_limit)
        total = 0
        count = len(images)
        if count:
            start = self._next_image = (self._next_image + 1) % count
            for k in range(count):
                total += images[(start + k) % count].poll(handler, fragment_limit - total)
                if total >= fragment_limit:
                    break
        return total

    @overload
    def receive(self, timeout: None) -> bytes: ...
    @overload
    def receive(self, timeout: float = 0.0) -> bytes | None: ...

    def receive(self, timeout: float | None = 0.0) -> bytes | None:
        """The next whole message, copied out, or None. `timeout`: 0 (default) returns at once;
        a number of seconds, or None for no limit, waits *blocking* (a futex wake-up from the
        writer, no spinning) when nothing is there. The cheapest way to read one message at a
        time; images take turns. ClosedError once closed, also for a receive blocked in
        another thread when close() is called."""
        return self._rx(timeout)

    receive = fast_method("_rx", receive)

    @guarded
    def _receive_blocking(self: Subscription[Image], timeout: float | None) -> bytes | None:
        """Sleep until a writer signals (in slices: discovery, liveness and end of stream go
        on meanwhile), then read. close() wakes the sleep (ClosedError)."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise InvalidArgumentError(f"timeout: expected seconds >= 0 or None, found {timeout!r}")
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        while True:
            now = time.monotonic_ns()
            if deadline is not None and now >= deadline:
                return None
            slice_ns = _WAIT_SLICE_NS if deadline is None else min(_WAIT_SLICE_NS, deadline - now)
            self._wait(slice_ns)
            if self._closed:
                raise self._closed_error()
            data = self._rx()
            if data is not None:
                return data
            self._housekeeping()

    def _wait(self, timeout_ns: int) -> None:
        """Sleep until a publisher of any image commits (one futex wait over all their logs),
        at most `timeout_ns`; without images, a plain sleep of at most 10 ms."""
        images = self._image_list
        if not images:
            time.sleep(min(timeout_ns, _NO_IMAGE_WAIT_NS) / 1e9)
            return
        if self._wait_images[0] is not images:  # the list is replaced whenever it changes
            # (beyond LS_DOORBELL_MAX images the rest are seen within the slice)
            self._wait_images = (images, ffi.new("ls_image_t *[]", [i._image for i in images[:_MAX_BELLS]]))
        if lib.ls_wait_any(ffi.NULL, 0, self._wait_images[1], min(len(images), _MAX_BELLS), timeout_ns) < 0:
            raise c_error(self.dir)

    def doorbells(self, rings: list, images: list) -> None:
        """For `BlockingIdleStrategy`: the doorbells of every image read now."""
        images.extend(i._image for i in self._image_list)

    def poll_batch(self: Subscription[Image], handler: Callable[[Batch], Any], fragment_limit: int = _BATCH) -> int:
        """Like `poll`, but hands over whole `Batch`es (numpy offsets/lengths over the term
        buffer): no Python call per message."""
        if self._closed:  # (images guard their own calls; close() waits for them)
            raise self._closed_error()
        total = self._poll_batch_images(handler, fragment_limit)
        self._polls += 1
        if not self._polls & (1023 if total else 63):
            self._housekeeping()
        return total

    def _poll_batch_images(self, handler: Callable[[Batch], Any], fragment_limit: int) -> int:
        """poll_batch over the images in order, up to `fragment_limit` messages in all."""
        total = 0
        for image in self._image_list:
            total += image.poll_batch(handler, fragment_limit - total)
            if total >= fragment_limit:
                break
        return total

    # -- images ---------------------------------------------------------------------------

    @property
    def images(self) -> list[ImageT]:
        return list(self._image_list)

    @property
    def image_count(self) -> int:
        return len(self._image_list)

    @property
    def is_connected(self) -> bool:
        return bool(self._image_list)

    def maintain(self: Subscription[Image]) -> None:
        """What poll and receive do every 100 ms: find new publishers, end drained and dead
        ones, report lost images. For a reader of the images themselves (the archive's recorder)."""
        self._housekeeping()

    def _housekeeping(self: Subscription[Image]) -> None:
        if self._pending and not self._closed:
            self._raise_pending()
        now = time.monotonic_ns()
        if now < self._next_housekeeping_ns or self._closed:
            return  # (the common case, from receive(): before the guard, which costs a call)
        self._housekeep(now)

    @guarded(closed=None)
    def _housekeep(self: Subscription[Image], now: int) -> None:
        """Discovery, liveness and end of stream, every 100 ms."""
        self._next_housekeeping_ns = now + _HOUSEKEEPING_INTERVAL_NS
        self._discover(self.join)
        changed = False
        for path, image in list(self._images.items()):
            if path in self._parked:
                if image.has_more or image.position >= image.log.end_of_stream_position:
                    self._parked.discard(path)  # resumed (or ended): back to polling
                    changed = True
                    self._tell(self.on_available_image, image)
                continue
            state = image.check(now)
            if state == "ended":
                image.close(unlink_if_done=True)
                del self._images[path]
                self._finished.add(path)
                changed = True
                self._tell(self.on_unavailable_image, image)
            elif state == "idle":
                # Its publisher died: stop polling it, keep our place in case it resumes.
                self._parked.add(path)
                changed = True
                self._tell(self.on_unavailable_image, image)
            elif state == "lost":
                self._image_lost(image, "evicted: its position counter was freed by a publisher that took it "
                                 "for dead", image.position, raise_now=False)
        if changed:
            self._update_image_list()
        if self._pending:
            self._raise_pending()

    @staticmethod
    def _tell(handler: ImageHandler | None, image: Image) -> None:
        """Run an image handler (on_available_image / on_unavailable_image) if there is one."""
        if handler is not None:
            handler(image)

    def _image_lost(self: Subscription[Image], image: Image, reason: str, from_position: int, *, raise_now: bool = True) -> None:
        """Close a lost image (evicted or lapped), follow it with a new image of the log at its
        live position, and tell: `on_unavailable_image`, else ImageLostError (now, or with
        raise_now=False at the end of housekeeping), before the new image is read."""
        path = image.path
        tail = image.log.tail_position
        self._images.pop(path, None)
        self._parked.discard(path)
        image.close()
        self._update_image_list()
        new = self._rejoin(path)
        error = ImageLostError(path, self.stream_id, image.session_id, from_position,
                               tail if new is None else max(tail, new.join_position), reason)
        image.lost = error
        self._record(f"subscription to stream {self.stream_id}: image of session {image.session_id} lost, "
                     f"{reason.split(':', 1)[0]}")  # (one record per kind: counted, not one per loss)
        if self.on_unavailable_image is not None:
            if new is not None:
                self._images[path] = new
                self._update_image_list()
            self.on_unavailable_image(image)
            if new is not None:
                self._tell(self.on_available_image, new)
            return
        if new is not None:
            self._held[path] = new
        self._pending.append((error, path))
        if raise_now:
            self._raise_pending()

    def _rejoin(self: Subscription[Image], path: Path) -> Image | None:
        """A new image of a lost image's log, at its live position (None when the log is gone
        or ended)."""
        try:
            new = Image(self, path, "live")
        except FileNotFoundError:
            return None
        except LockstepError as e:
            self._skip_bad_file(path, e)
            return None
        if new.position >= new.log.end_of_stream_position:
            new.close()
            self._finished.add(path)
            return None
        return new

    def _raise_pending(self: Subscription[Image]) -> None:
        """Raise the oldest unreported loss; the image that follows it becomes readable."""
        error, path = self._pending.pop(0)
        new = self._held.pop(path, None)
        if new is not None:
            self._images[path] = new
            self._update_image_list()
            self._tell(self.on_available_image, new)
        raise error

    @guarded
    def discover(self: Subscription[Image]) -> int:
        """Look for new publishers now (poll also does it every 100 ms); returns the image count."""
        self._discover(self.join)
        return len(self._image_list)

    def _discover(self: Subscription[Image], start: Start) -> None:
        added = []
        for path in stream_logs(self.dir, self.stream_id):
            if path in self._images or path in self._finished or path in self._held or self._still_bad(path):
                continue
            try:
                image = self.new_image(path, start)
            except FileNotFoundError:
                continue  # removed meanwhile
            except LockstepError as e:
                if isinstance(e, InvalidArgumentError) and isinstance(start, int):
                    raise  # the caller's start position
                self._skip_bad_file(path, e)  # one bad or foreign file never stops the others
                continue
            if image.position >= image.log.end_of_stream_position:
                image.close()
                self._finished.add(path)
                continue
            self._images[path] = image
            added.append(image)
        self._update_image_list()
        for image in added:
            self._tell(self.on_available_image, image)

    def new_image(self: Subscription[Image], path: Path, start: Start) -> Image:
        """The Image of a log that discovery found, at `start` (the subscription's): the hook for
        a subclass whose images start elsewhere (the archive's recorder continues a recording).
        FileNotFoundError: the log went meanwhile."""
        return Image(self, path, start)

    def _still_bad(self, path: Path) -> bool:
        """Whether `path` is a file skipped before and unchanged since (a replaced one is retried)."""
        identity = self._bad.get(path)
        return identity is not None and identity == _identity(path)

    def _skip_bad_file(self, path: Path, error: LockstepError) -> None:
        """Leave a bad or foreign log file alone, recorded once in the directory's error log."""
        identity = _identity(path)
        if identity is None or self._bad.get(path) == identity:
            return
        self._bad[path] = identity
        self._record(f"subscription to stream {self.stream_id}: skipped {error}")

    def _record(self, text: str) -> None:
        """Note an event in the directory's error log (`lockstep errors`, `lockstep stat`)."""
        try:
            record_error(self.dir, text)
        except LockstepError:
            pass  # a full or damaged error log must not stop the stream

    def _update_image_list(self: Subscription[Image]) -> None:
        self._image_list = [i for p, i in self._images.items() if p not in self._parked]
        self._rx.set_images(tuple(i._rx for i in self._image_list))
        self._set_poll_images()

    def _set_poll_images(self) -> None:
        """Hand the images read now to the C polls (poll, controlled_poll)."""
        polls = tuple(i._fast_poll for i in self._image_list)
        self._poll_any.set_images(polls)
        self._controlled_any.set_images(polls)

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Detach: the position counters go, so publishers no longer wait for us. A call in
        flight on another thread finishes first (a blocked receive is woken and raises
        ClosedError); later calls raise ClosedError."""
        super().close()

    def _detach(self) -> None:
        self._rx.detach()  # receive() raises ClosedError from now on
        self._poll_any.detach()  # so does poll() (the Python poll)
        self._controlled_any.detach()  # and controlled_poll()
        for image in self._image_list:
            image.wake()  # a receive asleep on it wakes to see the close

    def _teardown(self) -> None:
        for image in [*self._images.values(), *self._held.values()]:
            image.close()
        self._images.clear()
        self._held.clear()
        self._pending.clear()
        self._parked.clear()
        self._image_list = []
        self._unblocks.free_quietly(0)

    def __repr__(self) -> str:
        return f"Subscription(stream_id={self.stream_id}, images={len(self._image_list)}, dir={str(self.dir)!r})"
