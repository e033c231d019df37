"""Test helpers: run code in a fresh interpreter (for opens that could crash), and a
consumer loop that drains a ring with back-off and a no-progress safety net."""

from __future__ import annotations

import json
import os
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
