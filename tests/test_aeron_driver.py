"""`lockstep driver`: the real aeronmd, built once from PyPI's pyaeron sdist and cached, run in
the foreground with small-machine defaults; a clear error when it cannot be built."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockstep import Aeron, LockstepError
from lockstep.aeron.cnc import read_cnc_header
from lockstep.aeron.driver import DriverBuildError, build_driver

from aeron.harness import unique_dir

LOCKSTEP = [sys.executable, "-m", "lockstep.cli"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600,
            unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([*LOCKSTEP, *args], capture_output=True, text=True, timeout=timeout, env={**full, **(env or {})})


def test_help_describes_the_command():
    result = run_cli("driver", "--help")
    assert result.returncode == 0
    for text in ("--dir", "-D", "name=value", "pyaeron", "cmake"):
        assert text in result.stdout


def test_build_only_prints_the_cached_binary():
    build = build_driver()
    result = run_cli("driver", "--build-only")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(build.aeronmd)
    version = subprocess.run([str(build.aeronmd), "-v"], capture_output=True, text=True, timeout=30)
    assert "aeron version=1.53" in version.stdout + version.stderr


def test_print_config_shows_defaults_and_overrides():
    result = run_cli("driver", "--print-config", "--dir", "/dev/shm/x", "-D", "aeron.threading.mode=DEDICATED",
                     "-Daeron.term.buffer.length=128k")
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.split())
    assert {"AERON_DIR=/dev/shm/x", "AERON_THREADING_MODE=DEDICATED", "AERON_TERM_BUFFER_LENGTH=128k",
            "AERON_SHARED_IDLE_STRATEGY=backoff"} <= lines


def test_bad_define_is_a_clear_error():
    result = run_cli("driver", "--print-config", "-D", "novalue")
    assert result.returncode == 1
    assert "expected name=value" in result.stderr and "Traceback" not in result.stderr


def test_runs_in_the_foreground_until_sigterm():
    directory = unique_dir("cli")
    proc = subprocess.Popen([*LOCKSTEP, "driver", "--dir", str(directory), "-D", "aeron.ipc.term.buffer.length=64k"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            header = read_cnc_header(directory / "cnc.dat")
            if header is not None and header.version and header.consumer_heartbeat_ms > 0:
                break
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no driver came up"
            time.sleep(0.05)
        assert header.pid == proc.pid  # exec'd: the driver is the command's own process
        with Aeron(directory) as aeron:
            sub = aeron.add_subscription("aeron:ipc", 1)
            pub = aeron.add_publication("aeron:ipc", 1)
            got = []
            deadline = time.monotonic() + 30
            while not got:
                pub.offer(b"through lockstep driver")
                sub.poll(lambda d, h: got.append(bytes(d)), 1)
                assert time.monotonic() < deadline
                time.sleep(0.001)
            assert got == [b"through lockstep driver"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == signal.SIGTERM  # aeronmd exits with the signal's number after a clean shutdown
        assert "Shutting down driver" in proc.stdout.read() + proc.stderr.read()
        assert not directory.exists()  # AERON_DIR_DELETE_ON_SHUTDOWN by default
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _tool_dir(tmp_path: Path, *names: str) -> Path:
    """A PATH directory holding only the named tools (symlinks to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        real = shutil.which(name)
        if real:
            (bin_dir / name).symlink_to(real)
    return bin_dir


def test_no_compiler_is_a_clear_error(tmp_path):
    env = {"LOCKSTEP_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(_tool_dir(tmp_path)), "CC": "", "CXX": ""}
    result = run_cli("driver", "--build-only", env=env, timeout=120, unset=("LOCKSTEP_AERONMD",))
    assert result.returncode == 1
    assert "no C (CC, cc, gcc, clang) and C++" in result.stderr and "Traceback" not in result.stderr


def test_no_cmake_and_no_registry_is_a_clear_error(tmp_path):
    env = {"LOCKSTEP_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(_tool_dir(tmp_path, "cc", "c++")),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}
    result = run_cli("driver", "--build-only", env=env, timeout=300, unset=("LOCKSTEP_AERONMD",))
    assert result.returncode == 1
    assert "cmake>=3.30" in result.stderr and "Traceback" not in result.stderr


def test_lockstep_aeronmd_names_another_driver(tmp_path):
    fake = tmp_path / "aeronmd"
    fake.write_text("#!/bin/sh\necho fake\n")
    fake.chmod(0o755)
    result = run_cli("driver", "--build-only", env={"LOCKSTEP_AERONMD": str(fake)})
    assert result.returncode == 0 and result.stdout.strip() == str(fake)
    result = run_cli("driver", "--build-only", env={"LOCKSTEP_AERONMD": str(tmp_path / "missing")})
    assert result.returncode == 1 and "not an executable file" in result.stderr


def test_driver_error_is_a_lockstep_error():
    assert issubclass(DriverBuildError, LockstepError)


def test_stat_and_errors_read_a_real_driver(tmp_path):
    import json

    from aeron.harness import Drivers
    from lockstep import DriverError

    pool = Drivers()
    try:
        driver = pool.start("stat")
        with Aeron(driver.dir) as aeron:
            sub = aeron.add_subscription("aeron:ipc", 5)
            pub = aeron.add_publication("aeron:ipc", 5)
            with pytest.raises(DriverError):
                aeron.add_publication("aeron:tcp?endpoint=x", 5)
            result = run_cli("stat", "--aeron-dir", str(driver.dir), "--once")
            assert result.returncode == 0, result.stderr
            assert f"pid {driver.pid}" in result.stdout and "running" in result.stdout
            for label in ("NAKs sent", "Errors", f"pub-lmt: {pub.registration_id}",
                          f"sub-pos: {sub.registration_id}", f"client-heartbeat: id={aeron.client_id}"):
                assert label in result.stdout, label
            reading = json.loads(run_cli("stat", "--aeron-dir", str(driver.dir), "--once", "--json").stdout)
            limits = [c for c in reading["counters"] if c["type"] == "pub-lmt"]
            assert [c["registration_id"] for c in limits] == [pub.registration_id]
            errors = run_cli("errors", "--aeron-dir", str(driver.dir), "--json")
            assert errors.returncode == 0, errors.stderr
            texts = [json.loads(line)["text"] for line in errors.stdout.splitlines()]
            assert any("invalid URI scheme or transport: aeron:tcp?endpoint=x" in t for t in texts)
        missing = run_cli("stat", "--aeron-dir", str(tmp_path), "--once")
        assert missing.returncode == 1 and "no Aeron media driver" in missing.stderr
    finally:
        pool.cleanup()
