"""A real Aeron C media driver (`aeronmd`) for lockstep's Aeron client: built once from the
Aeron 1.53 source inside PyPI's pyaeron 0.1.0 sdist, cached, and run as a child process
(`MediaDriver`) or in the foreground (`lockstep driver`) with small-machine defaults."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Mapping, Sequence

from .._closing import Closing
from ..errors import LockstepError
from .cnc import CNC_FILE, default_aeron_dir, read_cnc_header

__all__ = ["DriverBuildError", "DriverBuild", "MediaDriver", "build_driver", "cache_dir", "driver_env",
           "SMALL_MACHINE_DEFAULTS", "TEST_DEFAULTS"]

PYAERON_VERSION = "0.1.0"
PYAERON_SDIST = f"pyaeron-{PYAERON_VERSION}.tar.gz"
# What PyPI served for pyaeron 0.1.0 when this was written: a different file is refused.
PYAERON_SDIST_SHA256 = "65fad0d4ca6926a24620c712fdebe8db8589a4d42a8dc52f15910a868c318af0"
AERON_SOURCE = f"pyaeron-{PYAERON_VERSION}/third_party/aeron"
MIN_CMAKE = (3, 30)
_BUILD_ID = f"aeron-1.53.0-pyaeron-{PYAERON_VERSION}"

# One thread for the whole driver, backing off to 1 ms parks when idle (spec §8.3: about 2 % of
# a core), 1 MiB terms and counters instead of 16/64 MiB logs and a 48 MB cnc.dat, and the
# directory removed on a clean exit. `-D name=value` overrides any of them.
SMALL_MACHINE_DEFAULTS: dict[str, str] = {
    "AERON_THREADING_MODE": "SHARED",
    "AERON_SHARED_IDLE_STRATEGY": "backoff",
    "AERON_TERM_BUFFER_LENGTH": "1m",
    "AERON_IPC_TERM_BUFFER_LENGTH": "1m",
    "AERON_COUNTERS_BUFFER_LENGTH": "1m",
    "AERON_DIR_DELETE_ON_SHUTDOWN": "true",
}

# Tests: small logs, quick timeouts (spec §8.6), so lifecycles finish in a second, not ten.
TEST_DEFAULTS: dict[str, str] = {
    **SMALL_MACHINE_DEFAULTS,
    "AERON_TERM_BUFFER_LENGTH": "64k",
    "AERON_IPC_TERM_BUFFER_LENGTH": "64k",
    "AERON_TIMER_INTERVAL": "100ms",
    "AERON_CLIENT_LIVENESS_TIMEOUT": "3s",
    "AERON_PUBLICATION_LINGER_TIMEOUT": "500ms",
    "AERON_IMAGE_LIVENESS_TIMEOUT": "2s",
    "AERON_PUBLICATION_CONNECTION_TIMEOUT": "2s",
    "AERON_DRIVER_TERMINATION_VALIDATOR": "allow",
}


class DriverBuildError(LockstepError):
    """aeronmd could not be built or found (no compiler, no cmake >= 3.30, no network...)."""


def cache_dir() -> Path:
    """Where the built driver lives: $LOCKSTEP_CACHE_DIR, else $XDG_CACHE_HOME/lockstep, else ~/.cache/lockstep."""
    env = os.environ.get("LOCKSTEP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lockstep"


@dataclass(frozen=True)
class DriverBuild:
    """A built Aeron: the driver binary and, when built here, the C client (for interop programs)."""

    aeronmd: Path
    client_include: Path | None = None  # directory holding aeronc.h
    client_library: Path | None = None  # libaeron_static.a

    def cflags(self) -> list[str]:
        """Compiler arguments that build a program against the Aeron C client."""
        if self.client_include is None or self.client_library is None:
            raise DriverBuildError(f"{self.aeronmd}: no Aeron C client next to this driver (build it: unset LOCKSTEP_AERONMD)")
        return [f"-I{self.client_include}", str(self.client_library), "-lpthread", "-lm", "-ldl"]


def _log(out: IO[str] | None, text: str) -> None:
    if out is not None:
        print(text, file=out, flush=True)


def _run(cmd: Sequence[str], what: str, log_path: Path, env: Mapping[str, str] | None = None) -> None:
    """Run a build step, its output into log_path; a failure names the step and shows the log's tail."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            rc = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=None if env is None else dict(env)).returncode
        except FileNotFoundError as e:
            raise DriverBuildError(f"{what}: {e}") from None
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise DriverBuildError(f"{what} failed (exit {rc}); full log: {log_path}\n{tail}")


def _cmake_version(cmake: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _find_cmake(root: Path, log_path: Path, out: IO[str] | None) -> str:
    """A cmake >= 3.30: on PATH, else PyPI's cmake wheel installed into the cache."""
    on_path = shutil.which("cmake")
    if on_path and (_cmake_version(on_path) or (0,)) >= MIN_CMAKE:
        return on_path
    tools = root / "tools"
    cached = tools / "cmake" / "data" / "bin" / "cmake"
    if not cached.exists():
        _log(out, "lockstep: fetching cmake >= 3.30 from PyPI (pip install --target, into the cache)")
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(tools),
              "cmake>=3.30"], "pip install cmake>=3.30 (Aeron's CMakeLists.txt needs it; "
             f"{'found ' + on_path + ' too old' if on_path else 'none on PATH'})", log_path)
    if not cached.exists() or (_cmake_version(str(cached)) or (0,)) < MIN_CMAKE:
        raise DriverBuildError(f"no usable cmake >= 3.30 at {cached} (install one: pip install cmake)")
    return str(cached)


def _find_compiler() -> str:
    """Aeron's CMake project needs a C and a C++ compiler (it builds C only)."""
    c = next((n for n in (os.environ.get("CC"), "cc", "gcc", "clang") if n and shutil.which(n)), None)
    cxx = next((n for n in (os.environ.get("CXX"), "c++", "g++", "clang++") if n and shutil.which(n)), None)
    if c is None or cxx is None:
        missing = " and ".join(k for k, v in (("C (CC, cc, gcc, clang)", c), ("C++ (CXX, c++, g++, clang++)", cxx))
                               if v is None)
        raise DriverBuildError(f"no {missing} compiler found: building aeronmd needs both "
                               "(Debian/Ubuntu: apt-get install build-essential uuid-dev)")
    return c


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_backend(root: Path, log_path: Path, out: IO[str] | None) -> Path | None:
    """None when this Python has scikit-build-core >= 1.0, else a directory holding it (from PyPI)."""
    try:
        import scikit_build_core

        if int(scikit_build_core.__version__.split(".")[0]) >= 1:
            return None
    except (ImportError, ValueError, AttributeError):
        pass
    target = root / "pylib"
    if not (target / "scikit_build_core").is_dir():
        _log(out, "lockstep: fetching scikit-build-core (pyaeron's build backend, to read its sdist) from PyPI")
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
              str(target), "scikit-build-core>=1.0"], "pip install scikit-build-core>=1.0", log_path)
    return target


def _fetch_sdist(root: Path, cmake: str, log_path: Path, out: IO[str] | None) -> Path:
    """pyaeron's sdist from PyPI with pip (its metadata step needs cmake >= 3.30 on PATH)."""
    dl = root / "download"
    sdist = dl / PYAERON_SDIST
    if not sdist.exists():
        _log(out, f"lockstep: downloading the pyaeron {PYAERON_VERSION} sdist (Aeron 1.53 C source) with pip")
        dl.mkdir(parents=True, exist_ok=True)
        # pip reads the sdist's metadata with its build backend (scikit-build-core, which wants
        # cmake >= 3.30 on PATH). Without build isolation: an isolated environment would also
        # fetch (and perhaps compile) ninja for a build we never ask pip to do.
        env = dict(os.environ, PATH=f"{Path(cmake).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        backend = _build_backend(root, log_path, out)
        if backend is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(backend), os.environ.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-build-isolation", "--no-binary", ":all:", "--ignore-requires-python",
               f"pyaeron=={PYAERON_VERSION}", "-d", str(dl)]
        _run(cmd, f"pip download pyaeron=={PYAERON_VERSION}", log_path, env)
    digest = _sha256(sdist)
    if digest != PYAERON_SDIST_SHA256:
        sdist.unlink()
        raise DriverBuildError(f"{sdist}: sha256 {digest}, expected {PYAERON_SDIST_SHA256} (removed; not building it)")
    return sdist


def build_driver(*, out: IO[str] | None = sys.stderr, jobs: int = 2) -> DriverBuild:
    """The cached driver build, building it first if needed (once per cache; concurrent callers wait).
    $LOCKSTEP_AERONMD names an aeronmd to use instead (e.g. from Aeron's own releases)."""
    given = os.environ.get("LOCKSTEP_AERONMD")
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DriverBuildError(f"LOCKSTEP_AERONMD={given}: not an executable file")
        return DriverBuild(path)
    root = cache_dir() / _BUILD_ID
    include, library = root / "include", root / "lib" / "libaeron_static.a"
    done = DriverBuild(root / "bin" / "aeronmd", include, library)
    stamp = root / "built"
    if stamp.exists():
        return done
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if stamp.exists():
            return done
        _find_compiler()
        log_path = root / "build.log"
        log_path.write_text("")
        cmake = _find_cmake(root, log_path, out)
        sdist = _fetch_sdist(root, cmake, log_path, out)
        _log(out, f"lockstep: building aeronmd and the Aeron C client from {sdist.name} (once; about a minute)")
        work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
        try:
            with tarfile.open(sdist) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith(AERON_SOURCE + "/")]
                tar.extractall(work, members=members, filter="data")
            source = work / AERON_SOURCE
            build = work / "build"
            _run([cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DAERON_TESTS=OFF",
                  "-DAERON_UNIT_TESTS=OFF", "-DAERON_SYSTEM_TESTS=OFF", "-DAERON_BUILD_SAMPLES=OFF",
                  "-DBUILD_AERON_ARCHIVE_API=OFF", "-DAERON_BUILD_DOCUMENTATION=OFF", "-DAERON_INSTALL_TARGETS=OFF"],
                 "cmake configure of Aeron", log_path)
            _run([cmake, "--build", str(build), f"-j{jobs}", "--target", "aeronmd_s", "aeron_static"],
                 "cmake build of aeronmd", log_path)
            for sub in ("bin", "lib", "include"):
                shutil.rmtree(root / sub, ignore_errors=True)
                (root / sub).mkdir()
            shutil.copy2(build / "binaries" / "aeronmd_s", done.aeronmd)
            shutil.copy2(build / "lib" / "libaeron_static.a", library)
            client_src = source / "aeron-client" / "src" / "main" / "c"
            shutil.copytree(client_src, include, dirs_exist_ok=True,
                            ignore=lambda d, names: [n for n in names if n.endswith(".c")])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stamp.write_text(f"{_BUILD_ID}\n")
        _log(out, f"lockstep: built {done.aeronmd}")
        return done


def driver_env(dir: str | os.PathLike[str], overrides: Mapping[str, str] | None = None,
               defaults: Mapping[str, str] = SMALL_MACHINE_DEFAULTS) -> dict[str, str]:
    """The environment aeronmd runs with: ours, the defaults (unless already set), AERON_DIR, overrides."""
    env = dict(os.environ)
    for key, value in defaults.items():
        env.setdefault(key, value)
    env["AERON_DIR"] = os.fspath(dir)
    for key, value in (overrides or {}).items():
        env[_env_name(key)] = value
    return env


def _env_name(name: str) -> str:
    """aeronmd's -D rule: `aeron.dir` -> AERON_DIR."""
    return name.upper().replace(".", "_")


def parse_defines(defines: Sequence[str]) -> dict[str, str]:
    """`name=value` strings (as for -D) -> {ENV_NAME: value}."""
    out: dict[str, str] = {}
    for item in defines:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LockstepError(f"-D {item!r}: expected name=value, e.g. aeron.threading.mode=SHARED")
        out[_env_name(name)] = value
    return out


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux), so
    a killed test run leaves no driver behind."""
    try:
        import ctypes

        ulong = ctypes.c_ulong
        ctypes.CDLL(None, use_errno=True).prctl(1, ulong(signal.SIGTERM), ulong(0), ulong(0), ulong(0))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class MediaDriver(Closing):
    """aeronmd as a child process in directory `dir` (tests, examples): started, waited for until
    its cnc.dat is live, stopped with SIGTERM (or killed) on close."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                 defaults: Mapping[str, str] = TEST_DEFAULTS, ready_timeout: float = 30.0,
                 output: str | os.PathLike[str] | None = None, command_prefix: Sequence[str] = ()) -> None:
        """`command_prefix` runs the driver through another command that execs it, e.g.
        ["ip", "netns", "exec", "hostb"] for a driver in a network namespace."""
        self.dir = Path(dir) if dir is not None else default_aeron_dir()
        self.build = build_driver()
        self.env = driver_env(self.dir, env, defaults)
        self._own_output = output is None  # a temporary file, removed when the driver is stopped
        if output is None:
            fd, name = tempfile.mkstemp(prefix="aeronmd-", suffix=".log")
            os.close(fd)
            output = name
        self.output_path = Path(output)
        self._output = open(self.output_path, "w")
        self.process = subprocess.Popen([*command_prefix, str(self.build.aeronmd)], env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=self._output, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        self.pid = self.process.pid
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        cnc = self.dir / CNC_FILE
        delay = 0.001
        while True:
            if self.process.poll() is not None:
                raise LockstepError(f"aeronmd in {self.dir} exited with status {self.process.returncode}: "
                                    f"{self.output().strip()[-2000:]}")
            header = read_cnc_header(cnc)
            if header is not None and header.version != 0 and header.pid == self.pid and header.consumer_heartbeat_ms > 0:
                return
            if time.monotonic() > deadline:
                raise LockstepError(f"aeronmd in {self.dir}: no live cnc.dat after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def output(self) -> str:
        """What the driver printed so far."""
        if not self._output.closed:
            self._output.flush()
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _done(self) -> None:
        self._output.close()
        if self._own_output:
            self.output_path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (a clean shutdown: heartbeat -1, directory removed), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._done()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a driver that dies without cleaning up (its cnc.dat stays, heartbeat frozen)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._done()

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MediaDriver(dir={str(self.dir)!r}, pid={self.pid}, running={self.running})"
