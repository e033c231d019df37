"""Two "hosts" on one machine: network namespaces joined by a veth pair, for running a media
driver in each (`MediaDriver(command_prefix=pair.exec_prefix(ns))`). Only the drivers need to
be inside: lockstep processes reach their driver through its mapped files, never a socket."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

from .._closing import Closing
from ..errors import LockstepError

__all__ = ["NetnsPair", "netns_unavailable"]

_counter = itertools.count()


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can be tried)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip"
    return None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


class NetnsPair(Closing):
    """Namespaces `a` (at `address_a`) and `b` (at `address_b`) joined by a veth pair; made at
    once, removed by `close()` (deleting a namespace deletes its end of the pair, so both)."""

    def __init__(self, tag: str | None = None) -> None:
        n = next(_counter)
        tag = tag or f"ls{os.getpid() % 100000}n{n}"
        subnet = f"10.{200 + os.getpid() % 50}.{(os.getpid() // 50 + n) % 250}"
        self.a, self.b = f"{tag}a", f"{tag}b"
        self.address_a, self.address_b = f"{subnet}.1", f"{subnet}.2"
        self.veth_a, self.veth_b = f"{tag}va", f"{tag}vb"
        self.created: list[str] = []
        steps = [
            ("netns", "add", self.a), ("netns", "add", self.b),
            ("link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b),
            ("link", "set", self.veth_a, "netns", self.a), ("link", "set", self.veth_b, "netns", self.b),
            ("-n", self.a, "addr", "add", f"{self.address_a}/24", "dev", self.veth_a),
            ("-n", self.b, "addr", "add", f"{self.address_b}/24", "dev", self.veth_b),
            ("-n", self.a, "link", "set", self.veth_a, "up"), ("-n", self.b, "link", "set", self.veth_b, "up"),
            ("-n", self.a, "link", "set", "lo", "up"), ("-n", self.b, "link", "set", "lo", "up"),
        ]
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                self.close()
                raise LockstepError(f"ip {' '.join(step)}: {result.stderr.strip()}")
            if step[:2] == ("netns", "add"):
                self.created.append(step[2])

    def exec_prefix(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside namespace `ns`."""
        return ["ip", "netns", "exec", ns]

    def set_link(self, up: bool) -> None:
        """Cut (`up=False`) or restore the link between the two hosts (both ends of the veth)."""
        state = "up" if up else "down"
        for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b)):
            result = _ip("-n", ns, "link", "set", dev, state)
            if result.returncode != 0:
                raise LockstepError(f"ip -n {ns} link set {dev} {state}: {result.stderr.strip()}")

    def _teardown(self) -> None:  # (close())
        for ns in self.created:
            _ip("netns", "del", ns)
        self.created.clear()

    cleanup = Closing.close
