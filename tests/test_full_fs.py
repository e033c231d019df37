"""A full filesystem is an error at the call that needs the space, never a SIGBUS: every mapped
file (log buffers, rings, cnc.dat with its counters and error log) and the archive's segments
and catalog reserve their space when they are made, on a real small tmpfs mounted here. The
error is a `NoSpaceError` naming the file, the bytes needed and the bytes free, and nothing
half-made is left linked. The risky steps run in a child interpreter, so a SIGBUS would show
as its exit code instead of taking the test run down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import lockstep
from helpers import run_python
from lockstep.archive import Recorder

TERM = 1 << 20
LOG_BYTES = 3 * TERM + 4096  # a log buffer of 1 MiB terms


_CHILD = r"""
import json, sys
import lockstep
dir, what = sys.argv[1], sys.argv[2]
result = {"error": None, "message": None}
try:
    if what == "publication":  # the issue's case: a log that does not fit, then offers
        pub = lockstep.Publication(7, dir, exclusive=True)
        sub = lockstep.Subscription(7, dir)
        for i in range(20_000):
            while pub.offer(b"x" * 1000) < 0:
                sub.poll(lambda d, h: None, 100)
            sub.poll(lambda d, h: None, 100)
    elif what == "sparse log":  # a shared log some other program made sparse: open, then write
        pub = lockstep.Publication(7, dir)
        sub = lockstep.Subscription(7, dir)
        for i in range(5_000):
            while pub.offer(b"x" * 1000) < 0:
                sub.poll(lambda d, h: None, 100)
            sub.poll(lambda d, h: None, 100)
    elif what == "ring":
        lockstep.ManyToOneRing(dir + "/ring", 2 << 20)
    elif what == "counters":
        lockstep.Counters(dir)
    elif what == "errorlog":
        from lockstep.transport.errorlog import ErrorLog
        ErrorLog(dir)
except lockstep.LockstepError as e:
    result = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(result))
"""


def _run_child(dir: Path, what: str) -> dict:
    proc = run_python(_CHILD, str(dir), what, timeout=120)
    assert proc.returncode != -signal.SIGBUS, f"{what} on a full filesystem: SIGBUS\n{proc.stderr}"
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _leftovers(dir: Path) -> list[str]:
    """Temporary (half-made) files left in `dir`."""
    return sorted(name for name in os.listdir(dir) if name.endswith(".tmp"))


def test_a_log_that_does_not_fit_is_a_no_space_error_at_creation(small_fs):
    # 4 MiB: cnc.dat (1.6 MiB) fits, a log of 1 MiB terms (3 MiB) does not.
    fs = small_fs("4m")
    result = _run_child(fs, "publication")
    assert result["error"] == "NoSpaceError", result
    message = result["message"]
    assert ".logbuffer" in message and str(fs) in message
    assert f"needs {LOG_BYTES} bytes" in message
    assert "free of" in message and "LOCKSTEP_DIR" in message
    assert not [n for n in os.listdir(fs) if n.endswith(".logbuffer")], "a half-made log is linked"
    assert _leftovers(fs) == []


def test_a_log_that_fits_is_written_to_the_end(small_fs):
    fs = small_fs("8m")
    result = _run_child(fs, "publication")  # 20 MB through 1 MiB terms: every page touched, often
    assert result == {"error": None, "message": None}


def test_a_sparse_log_on_a_full_filesystem_is_refused_at_open(lsdir, small_fs):
    fs = small_fs("8m")
    with lockstep.Publication(7, lsdir) as pub:  # made elsewhere, then copied with holes
        source = pub.path
        lockstep.Counters(fs).close()
        subprocess.run(["cp", "--sparse=always", str(source), str(fs / source.name)], check=True)
    os.chmod(fs / source.name, 0o600)
    st = os.stat(fs / source.name)
    assert st.st_blocks * 512 < st.st_size, "cp made no holes"
    _fill(fs)
    result = _run_child(fs, "sparse log")
    assert result["error"] == "NoSpaceError", result
    assert f"{fs / source.name}: cannot fill the holes of it: no space left" in result["message"]


def test_a_ring_that_does_not_fit_is_refused_and_not_linked(small_fs):
    fs = small_fs("1m")
    result = _run_child(fs, "ring")
    assert result["error"] == "NoSpaceError", result
    assert f"{fs}/ring: cannot create it: no space left: needs {(2 << 20) + 768} bytes" in result["message"]
    assert os.listdir(fs) == []


@pytest.mark.parametrize("what", ["counters", "errorlog"])
def test_cnc_that_does_not_fit_is_refused_not_sparse(small_fs, what):
    fs = small_fs("1m")
    result = _run_child(fs, what)
    assert result["error"] == "NoSpaceError", result
    assert f"{fs}/cnc.dat: cannot create it: no space left" in result["message"]
    assert "free of 1048576 bytes (1.0 MiB)" in result["message"]
    assert os.listdir(fs) == []


def test_no_space_error_is_a_lockstep_error_with_errno(small_fs):
    import errno
    fs = small_fs("1m")
    with pytest.raises(lockstep.NoSpaceError) as info:
        lockstep.OneToOneRing(fs / "ring", 1 << 20)
    assert isinstance(info.value, lockstep.LockstepError)
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, OSError)


def _fill(fs: Path, leave: int = 0) -> None:
    """Take all of `fs`'s free space but `leave` bytes."""
    st = os.statvfs(fs)
    fd = os.open(fs / "filler", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - leave)
    finally:
        os.close(fd)


def test_archive_segment_that_does_not_fit_is_a_no_space_error(lsdir, small_fs):
    fs = small_fs("1m")
    _fill(fs, leave=64 << 10)  # room for the catalog, not for a 128 KiB segment
    with lockstep.Publication(9, lsdir, exclusive=True, term_length=1 << 16) as pub, \
            Recorder(lsdir, stream_id=9, archive_dir=fs / "archive", segment_length=1 << 17) as rec:
        assert pub.offer(b"recorded") > 0
        with pytest.raises(lockstep.NoSpaceError) as info:
            for _ in range(1000):
                rec.do_work()
        message = str(info.value)
        assert f"{fs}/archive/0-0.rec: cannot create it: no space left: needs {1 << 17} bytes" in message
        assert "--archive-dir" in message
    assert not [n for n in os.listdir(fs / "archive") if n.endswith((".rec", ".tmp"))]


def test_archive_catalog_on_a_full_filesystem_is_a_no_space_error(lsdir, small_fs):
    fs = small_fs("1m")
    (fs / "archive").mkdir(mode=0o700)
    _fill(fs)
    with lockstep.Publication(9, lsdir, exclusive=True, term_length=1 << 16):
        with pytest.raises(lockstep.NoSpaceError) as info:
            Recorder(lsdir, stream_id=9, archive_dir=fs / "archive", segment_length=1 << 17)
    assert f"{fs}/archive/archive.catalog: cannot create it: no space left: needs 64 bytes, 0 bytes free" \
        in str(info.value)
    assert not (fs / "archive" / "archive.catalog").exists()
    assert _leftovers(fs / "archive") == []
