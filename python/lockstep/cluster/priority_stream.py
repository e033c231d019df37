"""The priority side channel across hosts: each remote gateway host has a priority stream of
its own (an Aeron stream to that host, unordered with respect to the sequenced log) that its
gateways drain first on every duty cycle, as they drain their `priority-<name>.ring`.

Each message: the gateway it is for (32 bytes, NUL-padded; empty: every gateway of the host),
the side channel's message type (int32), 4 reserved bytes, then the command. Which hosts there
are comes from the directory's `deployment.json` (`write_deployment`), so `lockstep halt --all`
on the sequencer's host reaches gateways on the others."""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._closing import Closing
from ..errors import FileFormatError
from ..transport.mapped import open_regular, resolve_dir

__all__ = ["PriorityReceiver", "RemoteHost", "Deployment", "read_deployment", "write_deployment",
           "send_priority", "PrioritySender", "DEFAULT_PRIORITY_STREAM", "DEPLOYMENT_FILE"]

DEFAULT_PRIORITY_STREAM = 103
DEPLOYMENT_FILE = "deployment.json"
_PRIORITY = struct.Struct("<32si4x")  # target gateway ("" = all), message type
_MAX_DEPLOYMENT_BYTES = 1 << 20


class PriorityReceiver(Closing):
    """A gateway's end of its host's priority stream: `read(handler, limit)` calls
    `handler(msg_type, data)` for each message addressed to `gateway` or to all."""

    def __init__(self, aeron: Any, channel: str, gateway: str, *, stream_id: int = DEFAULT_PRIORITY_STREAM) -> None:
        self.channel = channel
        self.stream_id = stream_id
        self.subscription = aeron.add_subscription(channel, stream_id)
        self._name = gateway.encode()
        self._handler: Callable[[int, memoryview], Any] | None = None

    def read(self, handler: Callable[[int, memoryview], Any], limit: int = 64) -> int:
        self._handler = handler
        try:
            return self.subscription.poll(self._on_fragment, limit)
        finally:
            self._handler = None

    def reattach(self, aeron: Any) -> None:
        """The driver came back (a new client): subscribe again."""
        self.subscription.close()
        self.subscription = aeron.add_subscription(self.channel, self.stream_id)

    def _on_fragment(self, data: memoryview, header: Any) -> None:
        if len(data) < _PRIORITY.size:
            return  # an unordered channel tolerates junk
        target, msg_type = _PRIORITY.unpack_from(data)
        target = target.rstrip(b"\0")
        if target and target != self._name:
            return
        assert self._handler is not None
        self._handler(msg_type, data[_PRIORITY.size:])

    def _teardown(self) -> None:  # (close())
        self.subscription.close()


@dataclass(frozen=True)
class RemoteHost:
    """A host with gateways, as the sequencer's host knows it."""

    name: str
    priority_channel: str
    gateways: tuple[str, ...] = ()
    priority_stream_id: int = DEFAULT_PRIORITY_STREAM


@dataclass(frozen=True)
class Deployment:
    """The other hosts of a deployment, and the media driver this host reaches them through."""

    aeron_dir: str
    hosts: tuple[RemoteHost, ...] = field(default_factory=tuple)


def write_deployment(dir: str | os.PathLike[str] | None, deployment: Deployment) -> Path:
    """Write `deployment.json` into `dir` (atomically)."""
    path = resolve_dir(dir) / DEPLOYMENT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(deployment), indent=2))
    os.replace(tmp, path)
    return path


def read_deployment(dir: str | os.PathLike[str] | None) -> Deployment | None:
    """The directory's deployment (None when it has none); a bad file is a FileFormatError."""
    path = resolve_dir(dir, create=False) / DEPLOYMENT_FILE
    try:
        fd = open_regular(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(_MAX_DEPLOYMENT_BYTES + 1)
    try:
        if len(raw) > _MAX_DEPLOYMENT_BYTES:
            raise ValueError(f"longer than {_MAX_DEPLOYMENT_BYTES} bytes")
        doc = json.loads(raw)
        hosts = tuple(RemoteHost(str(h["name"]), str(h["priority_channel"]), tuple(str(g) for g in h.get("gateways", ())),
                                 int(h.get("priority_stream_id", DEFAULT_PRIORITY_STREAM))) for h in doc["hosts"])
        return Deployment(str(doc["aeron_dir"]), hosts)
    except (ValueError, KeyError, TypeError) as e:
        raise FileFormatError(path, f"expected a deployment (aeron_dir, hosts: [name, priority_channel, gateways]): "
                                    f"{type(e).__name__}: {e}") from None


class PrioritySender(Closing):
    """Publications to every remote host's priority stream, made once and kept (a risk monitor
    keeps one, so its halt does not wait for connections): `send(gateway, msg_type, payload)`."""

    def __init__(self, deployment: Deployment, *, aeron: Any = None) -> None:
        from ..aeron import Aeron

        self.deployment = deployment
        self._own_aeron = aeron is None
        self._aeron = Aeron(deployment.aeron_dir) if aeron is None else aeron
        try:
            self._pubs = [self._aeron.add_publication(h.priority_channel, h.priority_stream_id) for h in deployment.hosts]
        except BaseException:
            self.close()
            raise

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every host's gateways are there; True when they are."""
        deadline = time.monotonic() + timeout_s
        while not all(p.is_connected for p in self._pubs):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def send(self, gateway: str | None, msg_type: int, payload_for: Callable[[], bytes], *,
             retry_s: float = 1.0) -> list[dict]:
        """Send one command to `gateway` (None: every gateway) on each host that has it; a
        back-pressured stream is retried for up to `retry_s`. One {host, gateway, delivered,
        connected} per host."""
        chosen = [(h, p) for h, p in zip(self.deployment.hosts, self._pubs) if gateway is None or gateway in h.gateways]
        if not chosen:
            return []
        header = _PRIORITY.pack((gateway or "").encode(), msg_type)
        message = header + payload_for()
        results = []
        for host, pub in chosen:
            result = pub.offer(message)
            deadline = time.monotonic() + retry_s
            while result < 0 and pub.is_connected and time.monotonic() < deadline:
                time.sleep(0.0001)
                result = pub.offer(message)
            results.append({"host": host.name, "gateway": gateway or "*", "delivered": result > 0,
                            "connected": bool(pub.is_connected)})
        return results  # (closing right after loses nothing: the driver lingers, sending what it holds)

    def _teardown(self) -> None:  # (close())
        for pub in getattr(self, "_pubs", ()):
            pub.close()
        if self._own_aeron:
            self._aeron.close()


def send_priority(deployment: Deployment, gateway: str | None, msg_type: int, payload_for: Callable[[], bytes], *,
                  connect_timeout_s: float = 2.0) -> list[dict]:
    """One command through a `PrioritySender` made for it (waiting up to `connect_timeout_s`
    for the hosts' gateways to be there)."""
    with PrioritySender(deployment) as sender:
        sender.wait_connected(connect_timeout_s)
        return sender.send(gateway, msg_type, payload_for)
