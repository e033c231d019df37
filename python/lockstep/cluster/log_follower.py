"""`LogFollower`: the sequenced log read on another host, from any position, with no gap and
no repeat. It reads the live stream (an Aeron subscription to where the sequencer host's
`LogPublisher` sends it); when the live stream starts past the follower's position (it joined
late, or the publisher restarted after being lapped, or the link was down past the driver's
timeouts) the gap comes first from the archive's replay service on the sequencer host (sent
over the network, positions kept), then the live stream goes on — Aeron Archive's replay-merge.

`poll(handler, limit)` and `position` as a subscription image; `state` says what it is doing."""

from __future__ import annotations

import time
from typing import Any, Callable, Literal

from .._closing import Closing
from ..errors import LockstepError
from ..transport.client import client_for

__all__ = ["LogFollower", "WAITING", "CATCHING_UP", "LIVE"]

FollowerState = Literal["waiting for the log", "catching up from the archive", "live"]
WAITING: FollowerState = "waiting for the log"
CATCHING_UP: FollowerState = "catching up from the archive"
LIVE: FollowerState = "live"
_STATES = (WAITING, CATCHING_UP, LIVE)  # the "state" counter: 0, 1, 2
RETRY_REPLAY_NS = 1_000_000_000  # after a failed replay
TYPE_LOG_FOLLOWER = 1031  # counters: position, state, catch-ups, replayed
_COUNTERS_EVERY_NS = 50_000_000

Replay = Any  # .poll(handler, limit), .position, .is_done, .close()
StartReplay = Callable[[int, int], Replay]  # (from position, to position) -> Replay


class LogFollower(Closing):
    """Reads `stream_id` on `channel` through `aeron` from `position` (after the last message
    the caller has). `start_replay(from, to)` returns a replay of the archive's recording
    between those positions (e.g. `ReplayClient.start_replay`); without it a gap is an error."""

    def __init__(self, aeron: Any, channel: str, stream_id: int, position: int = 0, *,
                 start_replay: StartReplay | None = None, counters_dir: Any = None, name: str = "",
                 observer: Callable[[memoryview], Any] | None = None,
                 before_poll: Callable[[], Any] | None = None) -> None:
        """`counters_dir`: a lockstep directory whose counters show this reader (`lockstep stat`);
        `observer(data)` sees each message before the handler; `before_poll()` runs first in each poll."""
        self.channel = channel
        self.stream_id = stream_id
        self.position = position
        self._start_replay = start_replay
        self._observer = observer
        self._before_poll = before_poll
        self._lost: set[int] = set()  # correlation ids of images that went away
        self.subscription = aeron.add_subscription(channel, stream_id, on_unavailable_image=self._on_unavailable)
        self._image: Any = None
        self._replay: Replay = None
        self._replay_to = 0
        self._gap_to: int | None = None   # a gap to fill whose replay failed: tried again at _retry_ns
        self._retry_ns = 0
        self.last_error: str | None = None  # why the last replay failed
        self._delivered_handler: Callable[..., Any] | None = None
        self.state: FollowerState = WAITING
        self.catch_ups = 0   # gaps filled from the archive
        self.replayed = 0    # messages that came from the archive
        self.skipped = 0     # live messages at or before `position` (already had them)
        self._counters: dict[str, Any] = {}
        if counters_dir is not None:
            counters = client_for(counters_dir).counters
            self._counters = {k: counters.allocate(TYPE_LOG_FOLLOWER, f"log follower {name or channel}: {k}")
                              for k in ("position", "state", "catch-ups", "replayed")}
        self._next_counters_ns = 0

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client): subscribe again from where we are (a replay
        under way is dropped; the gap to the new stream is found as on any new image)."""
        if self._replay is not None:
            self._close_replay()
        self._gap_to = None
        self.subscription.close()
        self._lost.clear()
        self._image = None
        self.state = WAITING
        self.subscription = aeron.add_subscription(self.channel, self.stream_id, on_unavailable_image=self._on_unavailable)

    def _on_unavailable(self, image: Any) -> None:
        self._lost.add(image.correlation_id)
        if self._image is image:
            self._image = None

    # -- reading ------------------------------------------------------------------------

    def poll(self, handler: Callable[[memoryview, Any], Any], fragment_limit: int = 10) -> int:
        """Hand up to `fragment_limit` messages after `position` to `handler(data, header)`."""
        if self._before_poll is not None:
            self._before_poll()
        if self._counters:
            now = time.monotonic_ns()
            if now >= self._next_counters_ns:
                self._next_counters_ns = now + _COUNTERS_EVERY_NS
                self._update_counters()
        if self._replay is not None:
            return self._poll_replay(handler, fragment_limit)
        if self._gap_to is not None:  # the archive failed us: again, later
            if time.monotonic_ns() >= self._retry_ns:
                self._catch_up(self._gap_to)
            return 0
        self.subscription.discover()  # (images gone are told here: `_on_unavailable`)
        image = self._image
        if image is None:
            image = self._choose_image()
            if image is None:
                return 0
            if image.position > self.position:  # a gap before it (checked once: an image has none inside)
                self._catch_up(image.position)
                return 0
        self.state = LIVE
        self._delivered_handler = handler
        try:
            return image.poll(self._live, fragment_limit)
        finally:
            self._delivered_handler = None

    def _live(self, data: memoryview, header: Any) -> None:
        if header.position <= self.position:
            self.skipped += 1
            return
        self.position = header.position
        if self._observer is not None:
            self._observer(data)
        assert self._delivered_handler is not None
        self._delivered_handler(data, header)

    def _choose_image(self) -> Any:
        """The live image to read: one that goes on from our position if any, else the one
        starting nearest after it (the gap to it is replayed)."""
        images = [i for i in self.subscription.images if i.correlation_id not in self._lost]
        if not images:
            self.state = WAITING if self._replay is None else self.state
            return None
        contiguous = [i for i in images if i.position <= self.position]
        self._image = max(contiguous, key=lambda i: i.position) if contiguous else min(images, key=lambda i: i.position)
        return self._image

    def _catch_up(self, to_position: int) -> None:
        if self._start_replay is None:
            raise LockstepError(f"{self.channel} stream {self.stream_id}: the live stream starts at position "
                                f"{to_position}, past this reader's {self.position}, and no archive replay is "
                                f"configured to fill the gap")
        self._replay = self._start_replay(self.position, to_position)
        self._replay_to = to_position
        self.catch_ups += 1
        self.state = CATCHING_UP

    def _poll_replay(self, handler: Callable[[memoryview, Any], Any], limit: int) -> int:
        replay = self._replay
        self._delivered_handler = handler
        try:
            n = replay.poll(self._replayed, limit)
            done = self.position >= self._replay_to or replay.position >= self._replay_to
        except LockstepError as e:  # no server, refused, or the replay broke off: again in a while
            self.last_error = str(e)
            self._gap_to, self._retry_ns = self._replay_to, time.monotonic_ns() + RETRY_REPLAY_NS
            self._close_replay()
            return 0
        finally:
            self._delivered_handler = None
        if done:  # (a replay ends in the term's padding, or follows the recording past the gap)
            self._close_replay()
            self.position = max(self.position, self._replay_to)
            self._gap_to = None
            self.state = LIVE if self._image is not None else WAITING
        return n

    def _close_replay(self) -> None:
        replay, self._replay = self._replay, None
        try:
            replay.close()
        except LockstepError:
            pass

    def _replayed(self, data: memoryview, header: Any) -> None:
        if header.position <= self.position or header.position > self._replay_to:
            return
        self.position = header.position
        self.replayed += 1
        if self._observer is not None:
            self._observer(data)
        assert self._delivered_handler is not None
        self._delivered_handler(data, header)

    # -- for idle strategies and status --------------------------------------------------

    def _update_counters(self) -> None:
        c = self._counters
        c["position"].set(self.position)
        c["state"].set(_STATES.index(self.state))
        c["catch-ups"].set(self.catch_ups)
        c["replayed"].set(self.replayed)

    def doorbells(self, rings: list, images: list) -> None:
        """A driver's streams ring no doorbell: idle agents look again by their timer."""

    @property
    def is_connected(self) -> bool:
        return self._image is not None or bool(self.subscription.is_connected)

    def _teardown(self) -> None:  # (close())
        for counter in self._counters.values():
            counter.free_quietly()
        if self._replay is not None:
            self._replay.close()
        self.subscription.close()

    def __repr__(self) -> str:
        return (f"LogFollower({self.channel!r}, stream_id={self.stream_id}, position={self.position}, "
                f"state={self.state!r})")
