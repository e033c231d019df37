"""`lockstep stat --once --json` on a running demo: the gateways a `lockstep halt` stopped
show as halted, and the streams have moved."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time


def _lockstep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True, timeout=120)


def test_stat_on_a_running_demo_shows_halted_gateways_and_positions(lsdir):
    demo = subprocess.Popen([sys.executable, "-m", "lockstep.cli", "demo", "--keep-running"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        directory = None
        deadline = time.monotonic() + 120
        while directory is None:  # the demo names its directory once it is trading
            assert time.monotonic() < deadline, "the demo never reached keep-running"
            line = demo.stderr.readline()
            assert line or demo.poll() is None, f"the demo exited: {demo.returncode}"
            m = re.search(r"--dir (\S+)", line)
            directory = m and m.group(1)
        halt = _lockstep("halt", "--all", "--dir", directory)
        assert halt.returncode == 0, halt.stderr
        while True:
            assert time.monotonic() < deadline, "stat never showed every gateway halted"
            proc = _lockstep("stat", "--once", "--json", "--dir", directory)
            assert proc.returncode == 0, proc.stderr
            reading = json.loads(proc.stdout)
            halted = {c["label"].split()[1].rstrip(":"): c["value"] for c in reading["counters"]
                      if c["label"].startswith("gateway ") and c["label"].endswith(": halted")}
            if len(halted) == 3 and all(v == 1 for v in halted.values()):
                break
            time.sleep(0.1)
        positions = [s["position"] for s in reading["streams"] if "position" in s]
        assert positions and all(p > 0 for p in positions)
        assert reading["sequencer"]["last sequence"] > 0
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # ends the demo normally: drain, summary
        demo.communicate(timeout=120)
    assert demo.returncode == 0
