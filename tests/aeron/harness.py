"""Fixtures and helpers for the Aeron-driver tests: real aeronmd processes in private
directories, the interop program built against the real Aeron C client, peer processes, and
the message sequence every peer sends and checks (message i: LENGTHS[i % 8] bytes, byte j =
(i * 31 + j) & 0xFF, the same rule as interop.c)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from lockstep.aeron.netns import NetnsPair
from lockstep.errors import LockstepError
from lockstep.aeron.driver import TEST_DEFAULTS, DriverBuildError, MediaDriver, build_driver

HERE = Path(__file__).resolve().parent
PEER = HERE / "peer.py"
INTEROP_SOURCE = HERE / "interop.c"
LENGTHS = (8, 100, 1376, 1377, 4000, 8192, 33, 1)  # 1376 fills one 1408-byte frame, 1377 needs two
_PATTERN = bytes(range(256)) * 34
_counter = itertools.count()


def message(i: int) -> bytes:
    """Message number i of the test sequence."""
    start = (i * 31) & 0xFF
    return _PATTERN[start:start + LENGTHS[i % len(LENGTHS)]]


def check_sequence(received: list[bytes], count: int) -> None:
    """Every message once, in order, intact."""
    assert len(received) == count, f"received {len(received)} messages, expected {count}"
    for i, data in enumerate(received):
        assert data == message(i), f"message {i}: {len(data)} bytes differ from the {len(message(i))} sent"


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_dir(tag: str) -> Path:
    """A fresh driver directory on /dev/shm (where Aeron puts them), unique to this test run."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / f"lockstep-aeron-test-{os.getpid()}-{next(_counter)}-{tag}"


class Drivers:
    """Starts media drivers for one test and stops them (and removes their dirs) afterwards."""

    def __init__(self) -> None:
        self.started: list[MediaDriver] = []

    def start(self, tag: str = "d", *, netns: str | None = None, **env: str) -> MediaDriver:
        """A driver with the test settings (plus `env`), in network namespace `netns` if given."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        driver = MediaDriver(unique_dir(tag), env=env, defaults=TEST_DEFAULTS, command_prefix=prefix)
        self.started.append(driver)
        return driver

    def cleanup(self) -> None:
        for driver in self.started:
            if driver.running:
                driver.stop()
            else:
                driver.kill()
            shutil.rmtree(driver.dir, ignore_errors=True)


@pytest.fixture
def drivers() -> Iterator[Drivers]:
    """`drivers.start()` starts a real aeronmd in a private directory; all are stopped after the test."""
    pool = Drivers()
    yield pool
    pool.cleanup()


@pytest.fixture
def driver(drivers: Drivers) -> MediaDriver:
    """One running media driver (test settings: 64 KiB terms, quick timeouts)."""
    return drivers.start()


@pytest.fixture(scope="session")
def interop_binary(tmp_path_factory) -> Path:
    """tests/aeron/interop.c built against the real Aeron C client (from the same sdist as the driver)."""
    build = build_driver()
    try:
        flags = build.cflags()
    except DriverBuildError as e:  # LOCKSTEP_AERONMD names a driver without its C client
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("interop") / "interop"
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    result = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", str(INTEROP_SOURCE), "-o", str(out),
                             *flags], capture_output=True, text=True)
    assert result.returncode == 0, f"building {INTEROP_SOURCE} failed:\n{result.stderr}"
    return out


class Peer:
    """A peer process speaking the test protocol: prints `ready`, then `sent N` or `ok N`;
    a publisher stays until its stdin closes (so late subscribers can still catch up)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[str] = []

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The next stdout line, which must start with `prefix` (fails with the peer's stderr)."""
        import selectors

        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    line = self.process.stdout.readline()
                    if not line:
                        break
                    self.lines.append(line.strip())
                    assert line.startswith(prefix), f"{self.argv}: expected {prefix!r}, got {line!r}; {self.stderr()}"
                    return line.strip()
                if self.process.poll() is not None:
                    break
        raise AssertionError(f"{self.argv}: no {prefix!r} line (exit {self.process.poll()}); stderr: {self.stderr()}")

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()

    def finish(self, timeout: float = 60.0) -> int:
        """Close stdin (a publisher then leaves) and wait for the exit status."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.argv}: did not exit within {timeout} s")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Start peers with `start_peer(peers, argv)`; leftovers are killed after the test."""
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.kill()


def start_peer(peers: list[Peer], argv: list[str]) -> Peer:
    peer = Peer(argv)
    peers.append(peer)
    return peer


def lockstep_peer(mode: str, dir: Path, channel: str, stream_id: int, count: int, *extra: str) -> list[str]:
    """argv of a lockstep peer process (tests/aeron/peer.py)."""
    return [sys.executable, str(PEER), mode, str(dir), channel, str(stream_id), str(count), *extra]


def c_peer(binary: Path, mode: str, dir: Path, channel: str, stream_id: int, count: int) -> list[str]:
    """argv of an Aeron C client peer (interop.c)."""
    return [str(binary), mode, str(dir), channel, str(stream_id), str(count)]


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two network namespaces joined by veth; the test is skipped where they cannot be made."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    try:
        pair = NetnsPair()
    except LockstepError as e:
        pytest.skip(f"cannot create network namespaces here: {e}")
    yield pair
    pair.cleanup()
