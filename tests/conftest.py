"""Shared fixtures: a fresh lockstep directory per test, and real worker processes.

Worker processes are started with the "spawn" start method (a fresh interpreter, as a
user's separate program would be) and run functions from `workers.py`; they map the same
files as the test. Nothing here is mocked. Plain helpers (isolated interpreters, a
draining consumer loop) are in `helpers.py`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lockstep.transport.mapped import resolve_dir


@pytest.fixture(scope="session", autouse=True)
def _session_archive(tmp_path_factory):
    """No test (nor a module fixture) records into the user's real archive on disk."""
    os.environ["LOCKSTEP_ARCHIVE_DIR"] = str(tmp_path_factory.mktemp("archive-session") / "archive")


@pytest.fixture(autouse=True)
def _archive_dir(tmp_path, monkeypatch) -> None:
    """$LOCKSTEP_ARCHIVE_DIR per test: `<lsdir>/archive`, where the recorder's default goes."""
    monkeypatch.setenv("LOCKSTEP_ARCHIVE_DIR", str(tmp_path / "lockstep" / "archive"))


@pytest.fixture
def lsdir(tmp_path, monkeypatch) -> Path:
    """A fresh lockstep directory (0700, ours), also set as $LOCKSTEP_DIR for the test and
    the processes it starts."""
    path = tmp_path / "lockstep"
    monkeypatch.setenv("LOCKSTEP_DIR", str(path))
    return resolve_dir()


@pytest.fixture(scope="session")
def mp():
    """The spawn multiprocessing context."""
    return multiprocessing.get_context("spawn")


class Procs:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.started: list = []

    def start(self, target, *args, **kwargs):
        p = self.ctx.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        p.start()
        self.started.append(p)
        return p

    def kill(self, p) -> None:
        """SIGKILL a worker (a crash: no cleanup, no atexit), reap it, forget it."""
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL, f"worker {p.name} exit code {p.exitcode}, expected SIGKILL"
        self.started.remove(p)

    def join_all(self, timeout: float = 120.0) -> None:
        """Wait for every started process and require a clean exit."""
        deadline = time.monotonic() + timeout
        for p in self.started:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.started:
            assert p.exitcode is not None, f"worker {p.name} (pid {p.pid}) did not finish in {timeout} s"
            assert p.exitcode == 0, f"worker {p.name} (pid {p.pid}) exited with {p.exitcode}"

    def cleanup(self) -> None:
        for p in self.started:
            if p.is_alive():
                p.kill()
            p.join(10)


@pytest.fixture
def procs(mp):
    """Start real processes with `procs.start(workers.fn, *args)`; leftovers are killed."""
    pool = Procs(mp)
    yield pool
    pool.cleanup()


@pytest.fixture
def small_fs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (e.g. "1m"), unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir(mode=0o700)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a {size} tmpfs is not permitted here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)
