"""Test helpers: run code in a fresh interpreter (for opens that could crash), a consumer
loop that drains a ring with back-off and a no-progress safety net, and a child process on
a real pseudo-terminal (`Terminal`, for the step debugger)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import lockstep


def run_python(code: str, *args: str, timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (`sys.executable -c`) with `args` in sys.argv[1:].
    Used where a failure could be a crash (segfault) that must not take the test run down."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


_OPEN_CODE = r"""
import json, sys
import lockstep
kind, path, capacity, action = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cls = {"one": lockstep.OneToOneRing, "many": lockstep.ManyToOneRing}[kind]
result = {"ok": True, "error": None, "message": None, "is_lockstep_error": None}
try:
    ring = cls(path, None if capacity == "none" else int(capacity))
    if action == "read":
        result["read"] = ring.read(lambda t, d: None)
    ring.close()
except Exception as e:
    result = {"ok": False, "error": type(e).__name__, "message": str(e),
              "is_lockstep_error": isinstance(e, lockstep.LockstepError)}
print(json.dumps(result))
"""


def open_ring_isolated(path, *, kind: str = "many", capacity: int | None = None, action: str = "open") -> dict:
    """Open (and with action="read", read) a ring in a child interpreter; return what
    happened as a dict. Fails the test if the child crashed instead of raising."""
    proc = run_python(_OPEN_CODE, kind, str(path), "none" if capacity is None else str(capacity), action)
    assert proc.returncode == 0, (
        f"opening {path} crashed the interpreter (exit {proc.returncode}); stderr:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def drain(ring, handler, *, expected: int, stall_timeout: float = 60.0, idle=None, on_stall=None) -> int:
    """Read from `ring` until `expected` messages have been handled. Backs off when idle;
    fails with a clear assertion when nothing arrives for `stall_timeout` seconds (unless
    `on_stall()` returns True, meaning it dealt with the stall)."""
    idle = idle or lockstep.BackoffIdleStrategy()
    got = 0
    last_progress = time.monotonic()
    while got < expected:
        n = ring.read(handler)
        if n:
            got += n
            last_progress = time.monotonic()
            idle.reset()
            continue
        if time.monotonic() - last_progress > stall_timeout:
            if on_stall is not None and on_stall():
                last_progress = time.monotonic()
                continue
            raise AssertionError(
                f"no progress for {stall_timeout} s: {got} of {expected} messages read; "
                f"ring size {ring.size()}, producer position {ring.producer_position}, "
                f"consumer position {ring.consumer_position}")
        idle.idle(0)
    return got


class Terminal:
    """A child process on a pseudo-terminal (stdlib pty), expect-style."""

    def __init__(self, argv: list[str], cwd: str | None = None) -> None:
        import fcntl
        import pty
        import struct
        import termios
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal's size
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, cwd=cwd)
        os.close(slave)
        self.buffer = ""

    def expect(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {text!r} within {timeout} s; got:\n{self.buffer}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}; got:\n{self.buffer}")
                self.buffer += chunk.decode(errors="replace").replace("\r\n", "\n")
        i = self.buffer.index(text) + len(text)
        seen, self.buffer = self.buffer[:i], self.buffer[i:]
        return seen

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(30)
        finally:
            os.close(self.master)


def drive(until, *steps, what: str, stall_s: float = 60.0) -> None:
    """Call steps until `until()`; fail after `stall_s` seconds in which no step did work
    (a hang guard, never a speed limit)."""
    idle = lockstep.BackoffIdleStrategy()
    last = time.monotonic()
    while not until():
        work = sum(step() for step in steps)
        if work:
            last = time.monotonic()
        elif time.monotonic() - last > stall_s:
            raise AssertionError(f"{what}: no progress for {stall_s} s")
        idle.idle(work)
