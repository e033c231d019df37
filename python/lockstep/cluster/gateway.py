"""Execution gateways and their priority side channel.

A gateway sits at the edge: it reads execution requests addressed to it from the sequenced
log, sends them to its venue, and sends the venue's responses back through the sequencer.
It is not a state machine, so it may act on a message out of the log's order. That is
what the **priority side channel** is for: one `ManyToOneRing` per gateway
(`priority-<name>.ring` in the directory), unordered, that the gateway drains first on
every duty cycle, before it polls the log, and again before every send to its venue. Any
process allowed to write the directory can put a command there::

    from lockstep.gateway import halt, resume
    halt(all=True, reason="order rate")     # every gateway of the directory
    resume(gateway="alpha")

or from a shell: ``lockstep halt --all`` / ``lockstep resume --gateway alpha``.

A halted gateway is disconnected from its venue and *declines* every request it receives,
sending each decline back through the sequencer, so every state machine learns of it in
total order. Each halt carries the time it was sent (CLOCK_MONOTONIC, comparable across
processes on the host) and the sequenced log's position at that moment; the gateway keeps
when it acted and when its log reading reached that position: the halt's latency through
the side channel, next to the delay it would have had queued in the log behind a backlog.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .. import codec
from .._closing import Closing
from ..transport.client import client_for
from ..errors import InvalidArgumentError, LockstepError
from ..transport.idle import BACK_PRESSURE_RETRY_NS, REMOTE_POLL_NS, IdleStrategy, run_agent
from ..transport.logbuffer import LogBuffer
from ..transport.mapped import check_name, default_dir, resolve_dir, take_pid_lock
from ..transport.ring import ManyToOneRing
from .priority_stream import DEPLOYMENT_FILE, PriorityReceiver, PrioritySender, read_deployment, send_priority
from .remote import RemoteLink
from .sequenced import DEFAULT_LOG_STREAM, SEQUENCED_HEADER_LENGTH
from .sequencer_client import SequencerClient
from ..transport.stream_files import stream_logs
from ..transport.subscription import Subscription

__all__ = ["Gateway", "HaltRecord", "GatewayInfo", "PRIORITY_SCHEMA", "Halt", "Resume", "halt", "resume",
           "gateways", "priority_path", "sequenced_position", "find_gateway_dirs"]

PRIORITY_PREFIX = "priority-"
PRIORITY_SUFFIX = ".ring"
PRIORITY_CAPACITY = 1 << 16
TYPE_GATEWAY = 1020  # counters: halted (0/1), halts, requests, to venue, declined
HEARTBEAT_INTERVAL_NS = 100_000_000
LIVENESS_TIMEOUT_MS = 3_000
NO_POSITION = -1

PRIORITY_SCHEMA = codec.Schema(7400, name="lockstep.gateway.priority")
Halt = PRIORITY_SCHEMA.message("Halt", 1, [
    ("sent_ns", "i8"),        # CLOCK_MONOTONIC when written (for the latency)
    ("log_position", "i8"),   # the sequenced log's tail when written; -1 unknown
    ("sender_pid", "i4"),
    ("reason", "S32"),
])
Resume = PRIORITY_SCHEMA.message("Resume", 2, [("sent_ns", "i8"), ("sender_pid", "i4"), ("reason", "S32")])


def priority_path(dir: str | os.PathLike[str] | None, gateway: str) -> Path:
    """The side channel file of gateway `gateway` in `dir`."""
    return resolve_dir(dir) / f"{PRIORITY_PREFIX}{check_name(gateway)}{PRIORITY_SUFFIX}"


def sequenced_position(dir: str | os.PathLike[str] | None = None, stream_id: int = DEFAULT_LOG_STREAM) -> int:
    """The tail of the directory's sequenced log now (the position the sequencer has
    reached), or -1 when there is no sequenced log."""
    logs = stream_logs(resolve_dir(dir), stream_id)
    if len(logs) != 1:
        return NO_POSITION
    try:
        log = LogBuffer.open(logs[0])
    except (FileNotFoundError, LockstepError):
        return NO_POSITION
    try:
        return log.tail_position
    finally:
        log.close()


@dataclass(frozen=True)
class GatewayInfo:
    """A gateway's side channel as found in a directory."""

    name: str
    path: str
    alive: bool              # its consumer heartbeat is fresh
    heartbeat_age_ms: int    # since its last heartbeat (-1: never)
    pending_bytes: int       # commands written and not read yet


def gateways(dir: str | os.PathLike[str] | None = None) -> list[GatewayInfo]:
    """The gateways of `dir` (those that created a side channel there), by name."""
    directory = resolve_dir(dir, create=False)
    found = []
    now_ms = int(time.time() * 1000)
    for path in sorted(directory.glob(f"{PRIORITY_PREFIX}*{PRIORITY_SUFFIX}")):
        name = path.name[len(PRIORITY_PREFIX):-len(PRIORITY_SUFFIX)]
        try:
            with ManyToOneRing(path) as ring:
                beat = ring.consumer_heartbeat_time
                pending = ring.size()
        except (LockstepError, FileNotFoundError):
            continue
        age = now_ms - beat if beat > 0 else -1
        found.append(GatewayInfo(name, str(path), 0 <= age <= LIVENESS_TIMEOUT_MS, age, pending))
    return found


def _has_remote_gateways(dir: Path) -> bool:
    deployment = read_deployment(dir)
    return deployment is not None and any(h.gateways for h in deployment.hosts)


def find_gateway_dirs() -> list[Path]:
    """Directories with a live gateway, or other hosts with gateways in their deployment: the
    default one, and the private directories of running demos (`lockstep-demo-*` beside it).
    For `lockstep halt` without --dir."""
    base = default_dir()
    candidates = [base] + sorted(base.parent.glob("lockstep-demo-*"))
    found = []
    for d in candidates:
        try:
            if d.is_dir() and (any(g.alive for g in gateways(d)) or _has_remote_gateways(d)):
                found.append(d)
        except LockstepError:
            continue
    return found


def _send(dir: str | os.PathLike[str] | None, gateway: str | None, all: bool, msg_type: int,
          payload_for: Callable[[], bytes], sender: PrioritySender | None = None) -> list[dict]:
    """Write one side-channel command to the named gateway or all: those of `dir` through their
    rings, those of other hosts in the directory's deployment through their hosts' priority streams."""
    if (gateway is None) == (not all):
        raise InvalidArgumentError("name one gateway or all of them (gateway=NAME or all=True), not both")
    known = {g.name: g for g in gateways(dir)}
    deployment = read_deployment(dir)
    remote_names = {g for h in deployment.hosts for g in h.gateways} if deployment is not None else set()
    if gateway is not None:
        check_name(gateway)
        if gateway not in known and gateway not in remote_names:
            names = ", ".join(sorted(set(known) | remote_names)) or "none"
            raise LockstepError(f"{resolve_dir(dir)}: no gateway {gateway!r} here (gateways: {names})")
        targets = [known[gateway]] if gateway in known else []
    else:
        if not known and not (deployment is not None and deployment.hosts):
            raise LockstepError(f"{resolve_dir(dir)}: no gateways here (no {PRIORITY_PREFIX}*{PRIORITY_SUFFIX} files, "
                                f"no other hosts in {DEPLOYMENT_FILE})")
        targets = list(known.values())
    stamped: list[bytes] = []  # one payload (one send time) for every target

    def payload_once() -> bytes:
        if not stamped:
            stamped.append(payload_for())
        return stamped[0]

    rings = [ManyToOneRing(info.path) for info in targets]  # opened first: the latency starts at the write
    try:
        payload = payload_once()
        written = [ring.write(msg_type, payload) for ring in rings]
    finally:
        for ring in rings:
            ring.close()
    sent = [{"gateway": info.name, "delivered": ok, "alive": info.alive} for info, ok in zip(targets, written)]
    if deployment is not None and (gateway is None or gateway in remote_names):  # after the local ones: slower
        if sender is not None:
            sent += sender.send(gateway, msg_type, payload_once)
        else:
            sent += send_priority(deployment, gateway, msg_type, payload_once)
    if any(written):
        # The gateways just woken are often queued on this CPU (the scheduler puts a wakee by
        # its waker); a sender that goes on working (the risk monitor reads the flood) would
        # keep them waiting. Give way once.
        os.sched_yield()
    return sent


def halt(dir: str | os.PathLike[str] | None = None, gateway: str | None = None, *, all: bool = False,
         reason: str = "", log_position: int | None = None, stream_id: int = DEFAULT_LOG_STREAM,
         sender: PrioritySender | None = None) -> dict:
    """Halt one gateway (`gateway=NAME`) or every gateway of `dir` (`all=True`) through the
    side channel: each disconnects from its venue and declines requests until resumed.
    `log_position` (default: the sequenced log's tail now) is where the halt would have
    been in the log, for the gateways to measure the delay they would have had.
    Returns {"command", "dir", "sent_ns", "log_position", "gateways": [{gateway, delivered, alive}]}."""
    directory = resolve_dir(dir, create=False)
    position = sequenced_position(directory, stream_id) if log_position is None else log_position
    stamp: dict[str, int] = {}

    def payload() -> bytes:
        stamp["sent_ns"] = time.monotonic_ns()
        return Halt.encode(sent_ns=stamp["sent_ns"], log_position=position, sender_pid=os.getpid(),
                           reason=reason.encode()[:32])

    sent = _send(directory, gateway, all, Halt.template_id, payload, sender)
    return {"command": "halt", "dir": str(directory), "sent_ns": stamp["sent_ns"], "log_position": position,
            "gateways": sent}


def resume(dir: str | os.PathLike[str] | None = None, gateway: str | None = None, *, all: bool = False,
           reason: str = "", sender: PrioritySender | None = None) -> dict:
    """Resume one gateway or all: each reconnects to its venue and sends requests again."""
    directory = resolve_dir(dir, create=False)
    stamp: dict[str, int] = {}

    def payload() -> bytes:
        stamp["sent_ns"] = time.monotonic_ns()
        return Resume.encode(sent_ns=stamp["sent_ns"], sender_pid=os.getpid(), reason=reason.encode()[:32])

    sent = _send(directory, gateway, all, Resume.template_id, payload, sender)
    return {"command": "resume", "dir": str(directory), "sent_ns": stamp["sent_ns"], "gateways": sent}


@dataclass
class HaltRecord:
    """One halt as a gateway saw it. Times are CLOCK_MONOTONIC ns; positions are of the
    sequenced log (after a message)."""

    sent_ns: int                 # when the sender wrote it into the side channel
    acted_ns: int                # when this gateway had disconnected from its venue
    log_position: int            # the sequencer's position when it was sent (-1 unknown)
    position_at_act: int         # how far this gateway had read the log when it acted
    reached_ns: int = 0          # when this gateway's reading reached log_position (0: not yet)
    backlog_messages: int = 0    # messages it read from acting until reaching log_position
    declined: int = 0            # requests it declined while this halt lasted
    reason: str = ""
    resumed_ns: int = 0          # when a resume ended it (0: never)
    position_at_resume: int = -1
    check_gap_ns: int = 0        # since this gateway's look at its side channel before the one that found it

    @property
    def latency_ns(self) -> int:
        return self.acted_ns - self.sent_ns

    @property
    def sequenced_delay_ns(self) -> int | None:
        return self.reached_ns - self.sent_ns if self.reached_ns else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_ns"] = self.latency_ns
        d["sequenced_delay_ns"] = self.sequenced_delay_ns
        return d


class Gateway(Closing):
    """The agent loop of an execution gateway; subclass it for a venue.

    Each duty cycle (`do_work`): drain the side channel, then `poll_venue()`, then send
    queued responses to the sequencer, then — unless `ready_for_log()` says the venue
    cannot take more — poll the sequenced log, handing each command to
    `on_command(command, sequence, position)`. Subclasses call `check_priority()` right
    before each send to the venue, `send(command)` to send a response or decline through
    the sequencer (queued, never dropped, when its ingress is full), and override
    `on_halt`/`on_resume` (disconnect / reconnect the venue: called first thing on a halt)."""

    def __init__(self, name: str, dir: str | os.PathLike[str] | None = None, *,
                 stream_id: int = DEFAULT_LOG_STREAM, origin_id: int | None = None, fragment_limit: int = 32,
                 start: Any = "earliest", channel: str | None = None, ingress_channel: str | None = None,
                 replay_channel: str | None = None, priority_channel: str | None = None,
                 aeron_dir: str | os.PathLike[str] | None = None, aeron: Any = None,
                 replay_response_channel: str | None = None) -> None:
        """On another host than the sequencer's: `channel` is where the log arrives (through
        the media driver of `aeron_dir`, or the client `aeron`), `ingress_channel` where
        responses go, `replay_channel` the archive replay service that fills a gap,
        `priority_channel` this host's priority stream (drained with the side channel ring)."""
        self.name = check_name(name)
        self.dir = resolve_dir(dir)
        self.fragment_limit = fragment_limit
        # One gateway per name and directory: its side channel has one consumer.
        self._lock = take_pid_lock(self.dir / f"gateway-{self.name}.lock", f"gateway {self.name!r}")
        try:
            path = priority_path(self.dir, name)
            self.side_channel = ManyToOneRing(path) if path.exists() else ManyToOneRing(path, PRIORITY_CAPACITY)
            self.side_channel.heartbeat()
            self._link: RemoteLink | None = None
            self.remote_priority: PriorityReceiver | None = None
            if channel is None:
                self.subscription: Any = Subscription(stream_id, self.dir, start=start, join="earliest")
                self.client: Any = SequencerClient(self.dir, origin_id=origin_id)
            else:
                self._link = RemoteLink(channel=channel, stream_id=stream_id, position=0,
                                        ingress_channel=ingress_channel, replay_channel=replay_channel, aeron=aeron,
                                        aeron_dir=aeron_dir, dir=self.dir, name=f"gateway {self.name}",
                                        origin_id=origin_id, replay_response_channel=replay_response_channel)
                self.subscription, self.client = self._link.follower, self._link.client
            if priority_channel is not None:
                link_aeron = self._link.aeron if self._link is not None else aeron
                if link_aeron is None:
                    raise InvalidArgumentError("priority_channel: give the media driver (aeron_dir= or aeron=)")
                self.remote_priority = PriorityReceiver(link_aeron, priority_channel, self.name)
                if self._link is not None:
                    self._link.attach(self.remote_priority)  # (re-created with the rest after a driver restart)
        except BaseException:
            link = getattr(self, "_link", None)
            if link is not None:
                link.close()
            self._lock.close()
            raise
        self.halted = False
        self.halts: list[HaltRecord] = []
        self.position = 0           # of the log, after the last message read
        self.messages_read = 0
        self.requests = 0           # requests addressed to this gateway (counted by subclasses)
        self.declined = 0
        self.to_venue = 0
        self._outbox: deque[bytes] = deque()
        self._awaiting: HaltRecord | None = None  # a halt whose log position we have not reached
        self._awaiting_from = 0
        self._next_heartbeat_ns = 0
        self._checking_ns = self._checked_ns = time.monotonic_ns()  # (the side channel's looks: check_gap_ns)
        counters = client_for(self.dir).counters
        self._counters = {k: counters.allocate(TYPE_GATEWAY, f"gateway {name}: {k}")
                          for k in ("halted", "halts", "requests", "to venue", "declined")}

    # -- for subclasses -----------------------------------------------------------------

    def on_command(self, command: memoryview, sequence: int, position: int) -> None:
        """One command of the sequenced log (after its sequencer header); a view valid only
        during the call. Requests addressed here: `self.requests += 1`, then submit or decline."""

    def poll_venue(self) -> int:
        """Take the venue's responses (and send queued requests it now accepts). Work done."""
        return 0

    def ready_for_log(self) -> bool:
        """Whether to read more of the log this cycle (False while requests wait for the venue)."""
        return True

    def on_halt(self, record: HaltRecord) -> None:
        """Disconnect from the venue (called as soon as a halt is read)."""

    def after_halt(self, record: HaltRecord) -> None:
        """Book-keeping after the disconnect (decline what waits, tell the sequencer)."""

    def on_resume(self) -> None:
        """Reconnect to the venue."""

    def send(self, command: bytes) -> None:
        """Send a response (ack, fill, reject, decline) back through the sequencer."""
        if self._outbox or not self.client.send(command):
            self._outbox.append(command)

    def decline(self, command: bytes) -> None:
        """Send a decline through the sequencer and count it."""
        self.declined += 1
        if self.halts:
            self.halts[-1].declined += 1
        self.send(command)

    # -- the loop -----------------------------------------------------------------------

    def check_priority(self) -> bool:
        """Drain the side channel now; True when the gateway is (now) halted."""
        self._checking_ns = time.monotonic_ns()
        self.side_channel.read(self._on_priority, 64)
        self._checked_ns = self._checking_ns
        if self.remote_priority is not None:
            self.remote_priority.read(self._on_priority, 64)
        return self.halted

    def _on_priority(self, msg_type: int, data: memoryview) -> None:
        try:
            msg = PRIORITY_SCHEMA.decode(data)
        except codec.CodecError:
            return  # not ours: an unordered channel tolerates junk
        if msg.type is Halt:
            if self.halted:
                return
            self.halted = True
            record = HaltRecord(sent_ns=msg.sent_ns, acted_ns=0, log_position=msg.log_position,
                                position_at_act=self.position, reason=msg.reason.decode(errors="replace"),
                                check_gap_ns=self._checking_ns - self._checked_ns)
            self.on_halt(record)
            record.acted_ns = time.monotonic_ns()
            self.halts.append(record)
            self._counters["halted"].set(1)
            self._counters["halts"].add(1)
            if record.log_position >= 0:
                if self.position >= record.log_position:
                    record.reached_ns = record.acted_ns
                else:
                    self._awaiting, self._awaiting_from = record, self.messages_read
            self.after_halt(record)
            # A halt goes to every gateway at once (`halt --all`): the others, woken with this
            # one, may wait on this CPU behind the log this one drains next. Give way once.
            os.sched_yield()
        elif msg.type is Resume:
            if not self.halted:
                return
            self.halted = False
            self.halts[-1].resumed_ns = time.monotonic_ns()
            self.halts[-1].position_at_resume = self.position
            self._counters["halted"].set(0)
            self.on_resume()

    def _on_fragment(self, data: memoryview, header: Any) -> None:
        position = header.position
        self.position = position
        self.messages_read += 1
        self.on_command(data[SEQUENCED_HEADER_LENGTH:], int.from_bytes(data[:8], "little"), position)
        awaiting = self._awaiting
        if awaiting is not None and position >= awaiting.log_position:
            awaiting.reached_ns = time.monotonic_ns()
            awaiting.backlog_messages = self.messages_read - self._awaiting_from
            self._awaiting = None

    def flush(self) -> int:
        """Send the responses queued for the sequencer now (each duty cycle does it); returns how
        many went (the rest wait for room in the ingress)."""
        sent = 0
        outbox, client = self._outbox, self.client
        while outbox and client.send(outbox[0]):
            outbox.popleft()
            sent += 1
        return sent

    def do_work(self) -> int:
        """One duty cycle: side channel first, then the venue, responses, and the log."""
        self._checking_ns = time.monotonic_ns()
        work = self.side_channel.read(self._on_priority, 64)
        self._checked_ns = self._checking_ns
        if self.remote_priority is not None:
            work += self.remote_priority.read(self._on_priority, 64)
        work += self.poll_venue()
        if self._outbox:
            work += self.flush()
        if self.ready_for_log():
            work += self.subscription.poll(self._on_fragment, self.fragment_limit)
        now = time.monotonic_ns()
        if now >= self._next_heartbeat_ns:
            self._next_heartbeat_ns = now + HEARTBEAT_INTERVAL_NS
            self.side_channel.heartbeat()
            c = self._counters
            c["requests"].set(self.requests)
            c["to venue"].set(self.to_venue)
            c["declined"].set(self.declined)
        return work

    def doorbells(self, rings: list, images: list) -> None:
        """What an idle gateway sleeps on: its side channel always (a halt wakes it whatever
        the log holds), the log only while it would read it (`ready_for_log`): a log with
        unread requests the venue cannot take yet must not keep it from sleeping."""
        self.side_channel.doorbells(rings, images)
        if self.ready_for_log():
            self.subscription.doorbells(rings, images)

    def venue_timer_ns(self) -> int | None:
        """When the venue next needs the gateway (CLOCK_MONOTONIC ns; None: only when told):
        subclasses with timed venue work override it, so an idle gateway sleeps until then."""
        return None

    def next_timer_ns(self) -> int | None:
        """The idle strategy's timer: room to retry responses, the venue's timer, driver streams."""
        if self._outbox:  # responses waiting for room in the ingress: look again soon
            return time.monotonic_ns() + BACK_PRESSURE_RETRY_NS
        at = self.venue_timer_ns()
        if self._link is not None or self.remote_priority is not None:  # driver streams ring no doorbell
            remote = time.monotonic_ns() + REMOTE_POLL_NS
            at = remote if at is None else min(at, remote)
        return at

    def run(self, stop: threading.Event | Callable[[], bool] | None = None,
            idle: IdleStrategy | None = None) -> None:
        """Run duty cycles until `stop`; idle by default asleep on the side channel's and the
        log's doorbells (`default_idle`): a halt wakes it at once. An error in a duty cycle is
        recorded in the directory's error log and re-raised. For Ctrl-C / SIGTERM: `with
        lockstep.idle.stop_on_signals() as stop: gateway.run(stop)`, then `close()`."""
        run_agent(self.do_work, stop, idle, error_dir=self.dir)

    @property
    def pending_responses(self) -> int:
        return len(self._outbox)

    def _teardown(self) -> None:  # (close())
        for counter in self._counters.values():
            counter.free_quietly()
        if self.remote_priority is not None:
            self.remote_priority.close()
        if self._link is not None:
            self._link.close()
        else:
            self.subscription.close()
            self.client.close()
        self.side_channel.close()
        self._lock.close()

