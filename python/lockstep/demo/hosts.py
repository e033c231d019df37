"""The two hosts of `lockstep demo --hosts 2`: a media driver each (Aeron's own, from
`lockstep driver`), in network namespaces joined by a veth pair when they can be made (root),
else both on loopback; the channels between them; clean-up of drivers and namespaces.

Host 1 runs the sequencer, recorder (with the archive's replay service), risk monitor and one
Algo and one SOR replica; host 2 the other Algo and SOR replicas and the three gateways. Only
the drivers live in the namespaces: a process reaches its host's driver through its files."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.aeron.driver import MediaDriver, SMALL_MACHINE_DEFAULTS
from lockstep.aeron.netns import NetnsPair, netns_unavailable
from lockstep.errors import LockstepError
from lockstep.transport.counters import pid_alive

__all__ = ["Hosts", "HOST1_PROCESSES", "HOST2_PROCESSES"]

HOST1_PROCESSES = ("sequencer", "recorder", "risk", "algo-1", "sor-1")
HOST2_PROCESSES = ("algo-2", "sor-2", "alpha", "beta", "gamma")
LOG_PORT, INGRESS_PORT, REPLAY_PORT, PRIORITY_PORT = 40100, 40101, 40102, 40103
_NS_PREFIX = "lsdemo"
# The driver settings of the demo: its defaults for a small machine, timeouts a cut link
# outlasts within seconds, and a receiver window that lets a 16 MiB-term log stream.
DEMO_DRIVER_DEFAULTS = {**SMALL_MACHINE_DEFAULTS, "AERON_IMAGE_LIVENESS_TIMEOUT": "3s",
                        "AERON_PUBLICATION_CONNECTION_TIMEOUT": "3s", "AERON_PUBLICATION_LINGER_TIMEOUT": "1s",
                        "AERON_RCV_INITIAL_WINDOW_LENGTH": "2m", "AERON_SOCKET_SO_RCVBUF": "2m",
                        "AERON_SOCKET_SO_SNDBUF": "2m"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_stale_namespaces() -> int:
    """Remove the namespaces of demos that were killed (SIGKILL leaves them): named with the
    demo's pid, removed when that pid is gone."""
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    swept = 0
    for line in result.stdout.splitlines():
        m = re.match(rf"({_NS_PREFIX}(\d+)[ab])\b", line.strip())
        if m and not pid_alive(int(m.group(2))):
            subprocess.run(["ip", "netns", "del", m.group(1)], capture_output=True)
            swept += 1
    return swept


@dataclass
class Host:
    name: str
    address: str
    aeron_dir: Path
    processes: tuple[str, ...]
    netns: str | None = None
    driver: MediaDriver | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "aeron_dir": str(self.aeron_dir), "netns": self.netns,
                "processes": list(self.processes), "driver_pid": self.driver.pid if self.driver else None}


@dataclass
class Hosts:
    """Both hosts, their drivers and the channels; `close()` stops and removes everything."""

    base: Path
    loss: float = 0.0
    network: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    _pair: NetnsPair | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, base: Path, *, loss: float = 0.0, netns: bool | None = None) -> "Hosts":
        """Start the two drivers under `base` (namespaces unless `netns=False` or they cannot
        be made: then loopback, and `network` says why)."""
        self = cls(base, loss)
        try:
            why = netns_unavailable() if netns is not False else "loopback asked for"
            if why is None:
                sweep_stale_namespaces()
                try:
                    self._pair = NetnsPair(f"{_NS_PREFIX}{os.getpid()}")
                except LockstepError as e:
                    why = str(e)
            if self._pair is not None:
                a, b = self._pair.address_a, self._pair.address_b
                self.network = f"network namespaces {self._pair.a} ({a}) and {self._pair.b} ({b}) joined by a veth pair"
                self.ports = {"log": LOG_PORT, "ingress": INGRESS_PORT, "replay": REPLAY_PORT, "priority": PRIORITY_PORT}
            else:
                a = b = "127.0.0.1"
                self.network = f"loopback (no network namespaces: {why})"
                self.ports = {k: _free_port() for k in ("log", "ingress", "replay", "priority")}
            self.hosts = {
                "host1": Host("host1", a, base / "aeron-host1", HOST1_PROCESSES, self._pair.a if self._pair else None),
                "host2": Host("host2", b, base / "aeron-host2", HOST2_PROCESSES, self._pair.b if self._pair else None),
            }
            for host in self.hosts.values():
                prefix = self._pair.exec_prefix(host.netns) if self._pair and host.netns else []
                host.driver = MediaDriver(host.aeron_dir, env=self._loss_env(), defaults=DEMO_DRIVER_DEFAULTS,
                                          command_prefix=prefix, output=base / f"aeronmd-{host.name}.log")
        except BaseException:
            self.close()
            raise
        return self

    def _loss_env(self) -> dict[str, str]:
        """The receiving driver drops this fraction of DATA frames (Aeron's loss generator)."""
        if not self.loss:
            return {}
        return {"AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS": "loss",
                "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS": f"rate={self.loss}|seed=17|recv-msg-mask=0x2"}

    def _endpoint(self, host: str, port: str) -> str:
        return f"aeron:udp?endpoint={self.hosts[host].address}:{self.ports[port]}"

    @property
    def log_channel(self) -> str:
        """Where the sequenced log goes: host 2's endpoint (unicast)."""
        return self._endpoint("host2", "log")

    @property
    def ingress_channel(self) -> str:
        return self._endpoint("host1", "ingress")

    @property
    def replay_channel(self) -> str:
        return self._endpoint("host1", "replay")

    @property
    def priority_channel(self) -> str:
        return self._endpoint("host2", "priority")

    def host_of(self, process: str) -> Host:
        return next(h for h in self.hosts.values() if process in h.processes)

    def set_link(self, up: bool) -> None:
        """Cut or restore the link (namespaces only)."""
        if self._pair is None:
            raise LockstepError("the link between the hosts can be cut only in network namespaces")
        self._pair.set_link(up)

    def as_dict(self) -> dict[str, Any]:
        return {"network": self.network, "loss": self.loss,
                **{name: host.as_dict() for name, host in self.hosts.items()},
                "channels": {"log": self.log_channel, "ingress": self.ingress_channel,
                             "replay": self.replay_channel, "priority": self.priority_channel}}

    def close(self) -> None:
        for host in self.hosts.values():
            if host.driver is not None:
                try:
                    host.driver.close()
                finally:
                    shutil.rmtree(host.aeron_dir, ignore_errors=True)
                host.driver = None
        if self._pair is not None:
            self._pair.close()
            self._pair = None
