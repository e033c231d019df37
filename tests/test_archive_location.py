"""Where recordings live: on disk (`$LOCKSTEP_ARCHIVE_DIR`, else `$XDG_DATA_HOME/lockstep/archive`,
else `~/.local/share/lockstep/archive`), not in the shared-memory directory: the recorder, the
archive and `lockstep record/recordings/replay/dump` agree on it, `--archive-dir` overrides it;
`lockstep dump --recording`; progress bars on a terminal only; the demo's kept directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from helpers import Terminal
from lockstep.archive import Archive, default_archive_dir
from lockstep.transport.mapped import default_dir
from test_archive import MACHINE, _record_orderbook


def _cli(*args: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockstep.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def _env(**changes: str | None) -> dict:
    env = dict(os.environ)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def test_the_default_archive_is_on_disk_and_every_command_uses_it(lsdir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.delenv("LOCKSTEP_ARCHIVE_DIR")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    assert default_archive_dir() == home / ".local" / "share" / "lockstep" / "archive"
    assert default_dir() not in default_archive_dir().parents
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "lockstep" / "archive"
    assert default_archive_dir() == expected
    arch = _record_orderbook(lsdir, 200)  # Recorder(lsdir): no archive_dir given
    assert arch.dir == expected and Archive().dir == expected
    assert not (lsdir / "archive").exists(), "recorded into the shared-memory directory"
    env = _env()
    [listed] = [json.loads(line) for line in _cli("recordings", "--json", env=env).stdout.splitlines()]
    assert listed["recording_id"] == 0 and listed["state"] == "stopped"
    replayed = json.loads(_cli("replay", "0", "--machine", MACHINE, "--json", env=env).stdout)
    assert replayed["messages"] == 200
    frames = _cli("dump", "--recording", "0", "--json", env=env).stdout.splitlines()
    assert [json.loads(f)["sequence"] for f in frames] == list(range(1, 201))
    # $LOCKSTEP_ARCHIVE_DIR wins over $XDG_DATA_HOME; --archive-dir over both
    other = tmp_path / "other"
    assert _cli("recordings", "--json", env=_env(LOCKSTEP_ARCHIVE_DIR=str(other))).stdout == ""
    assert _cli("recordings", "--json", "--archive-dir", str(expected),
                env=_env(LOCKSTEP_ARCHIVE_DIR=str(other))).stdout.strip() != ""
    record = json.loads(_cli("record", "--duration", "0", "--json", env=_env(LOCKSTEP_ARCHIVE_DIR=str(other))).stdout)
    assert record["archive_dir"] == str(other)


def test_dump_of_a_recording_is_the_dump_of_its_segments(lsdir):
    arch = _record_orderbook(lsdir, 300)
    segments = arch.segment_files(0)
    assert segments
    env = _env()
    whole = _cli("dump", "--recording", "0", env=env)
    assert whole.returncode == 0, whole.stderr
    parts = "".join(_cli("dump", str(p), env=env).stdout for p in segments)
    assert whole.stdout == parts and whole.stderr == ""
    for args in ([], ["--recording", "0", str(segments[0])]):
        proc = _cli("dump", *args, env=env)
        assert proc.returncode == 2 and "give a FILE or --recording ID" in proc.stderr


_SLOW = """
import time
from lockstep.examples.orderbook import OrderBook

class Slow(OrderBook):
    '''The order book, 3 ms a message: a replay that takes seconds.'''
    def on_message(self, ctx, command):
        time.sleep(0.003)
        super().on_message(ctx, command)
"""


def test_a_long_replay_shows_progress_on_a_terminal_only(lsdir, tmp_path):
    _record_orderbook(lsdir, 600)
    (tmp_path / "slow.py").write_text(textwrap.dedent(_SLOW))
    term = Terminal([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", "slow:Slow"], cwd=str(tmp_path))
    try:
        out = term.expect("state hash ", timeout=120)
        assert "replay:" in out and "%|" in out  # tqdm's bar, on the terminal's stderr
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    for args in (["--json"], []):  # not a terminal (a pipe): no bar, with or without --json
        proc = _cli("replay", "0", "--machine", "slow:Slow", *args, env=_env(), cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == ""
    term = Terminal([sys.executable, "-m", "lockstep.cli", "replay", "0", "--machine", "slow:Slow", "--json"],
                    cwd=str(tmp_path))
    try:
        out = term.expect("}", timeout=120)
        assert "%|" not in out and json.loads(out[out.index("{"):])["messages"] == 600
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_a_kept_demo_directory_is_not_swept_by_the_next_demo(lsdir):
    from lockstep.demo.run import DRIVER_PID_FILE, _demo_dir

    kept, dropped = _demo_dir(keep=True), _demo_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that is gone: the driver was killed
    for d in (kept, dropped):
        (d / DRIVER_PID_FILE).write_text(dead)
    fresh = _demo_dir()  # what the next demo does first
    assert kept.exists() and not dropped.exists() and fresh.exists()
