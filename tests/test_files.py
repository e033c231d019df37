"""Bad files and unsafe places: a clear LockstepError naming the file and the field, never
a crash. Opens of damaged files run in a child interpreter so that a segfault would fail
the test instead of killing the run."""

from __future__ import annotations

import os
import stat
import struct

import pytest

import lockstep
from helpers import open_ring_isolated, run_python
from lockstep import (
    Counters,
    FileAccessError,
    FileFormatError,
    LockstepError,
    ManyToOneRing,
    OneToOneRing,
)
from lockstep.transport.mapped import resolve_dir

TRAILER = 768
TAIL, HEAD_CACHE, HEAD = 128, 256, 384  # trailer field offsets (spec section 1)

KINDS = ["one", "many"]


def make_ring(path, capacity=1024, messages=3):
    with ManyToOneRing(path, capacity) as r:
        for i in range(messages):
            r.write(1, bytes([i]) * 20)


def patch(path, offset, data: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def assert_format_error(result, path, field):
    assert result["ok"] is False, result
    assert result["error"] == "FileFormatError", result
    assert result["is_lockstep_error"] is True
    assert str(path) in result["message"], result
    assert field in result["message"], result


# -- ring files ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_valid_ring_opens_in_child(lsdir, kind):
    path = lsdir / "ok"
    make_ring(path)
    result = open_ring_isolated(path, kind=kind, action="read")
    assert result["ok"] is True, result
    assert result["read"] == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size,field", [(1024 + TRAILER - 1, "capacity"), (1000, "capacity"),
                                        (700, "length"), (8, "length"), (1, "length")])
def test_truncated_ring_file(lsdir, kind, size, field):
    path = lsdir / "truncated"
    make_ring(path)
    os.truncate(path, size)
    assert_format_error(open_ring_isolated(path, kind=kind), path, field)
    # Also when the caller passes the capacity it expects.
    assert_format_error(open_ring_isolated(path, kind=kind, capacity=1024), path, field)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("capacity", [1000, 3 * 1024, 48, 2**31])
def test_capacity_not_a_power_of_two(lsdir, kind, capacity):
    path = lsdir / "odd"
    with open(path, "wb") as f:
        f.truncate(capacity + TRAILER)
    os.chmod(path, 0o600)
    assert_format_error(open_ring_isolated(path, kind=kind), path, "capacity")


def test_empty_file(lsdir):
    path = lsdir / "empty"
    path.touch(mode=0o600)
    assert_format_error(open_ring_isolated(path), path, "length")
    with pytest.raises(FileFormatError):
        ManyToOneRing(path)
    with pytest.raises(FileFormatError):  # not silently re-created either
        ManyToOneRing(path, 1024)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1024 + TRAILER, 64 + TRAILER, 65536 + TRAILER, 4096, 777, 3])
def test_random_bytes(lsdir, kind, size):
    path = lsdir / "random"
    path.write_bytes(os.urandom(size))
    os.chmod(path, 0o600)
    result = open_ring_isolated(path, kind=kind, action="read")
    assert result["ok"] is False, result
    assert result["error"] == "FileFormatError"
    assert str(path) in result["message"]


@pytest.mark.parametrize("offset", [0, 3, 127, 136, 200, 300, 500, 700, 767])
def test_garbage_in_trailer_padding(lsdir, offset):
    path = lsdir / "trailer"
    make_ring(path)
    patch(path, 1024 + offset, b"\x5a")
    assert_format_error(open_ring_isolated(path), path, "trailer")


@pytest.mark.parametrize("field_offset,value,field", [
    (TAIL, 1024 * 3, "tail position"),  # tail beyond head + capacity
    (TAIL, 13, "tail position"),  # not a multiple of 8
    (HEAD, -8, "head position"),
    (HEAD, 12, "head position"),
    (HEAD, 64 * 8, "tail position"),  # head beyond tail
    (HEAD_CACHE, 1 << 40, "head cache position"),
])
def test_corrupt_positions(lsdir, field_offset, value, field):
    path = lsdir / "positions"
    make_ring(path)
    patch(path, 1024 + field_offset, struct.pack("<q", value))
    assert_format_error(open_ring_isolated(path), path, field)


@pytest.mark.parametrize("header", [
    struct.pack("<ii", 4096, 1),  # longer than the rest of the buffer
    struct.pack("<ii", 28, 0),  # type id 0
    struct.pack("<ii", 28, -7),  # negative type id other than padding
    struct.pack("<ii", 4, 1),  # shorter than a header
    struct.pack("<ii", 8 + 129, 1),  # over max message length
])
def test_corrupt_record_header_fails_the_read(lsdir, header):
    path = lsdir / "record"
    make_ring(path)
    patch(path, 0, header)
    result = open_ring_isolated(path, action="read")
    assert_format_error(result, path, "record at index 0")
    with ManyToOneRing(path) as r:
        with pytest.raises(FileFormatError, match="record at index 0"):
            r.read(lambda t, d: None)


def test_capacity_mismatch_names_file_and_field(lsdir):
    path = lsdir / "mismatch"
    make_ring(path, 2048)
    assert_format_error(open_ring_isolated(path, capacity=1024), path, "capacity")


def test_errors_are_lockstep_errors():
    for cls in (FileFormatError, FileAccessError, lockstep.InvalidArgumentError, lockstep.ClosedError):
        assert issubclass(cls, LockstepError)


# -- directory and file security -----------------------------------------------------------

def test_created_directory_is_private(tmp_path, monkeypatch):
    path = tmp_path / "fresh" / "lockstep"
    monkeypatch.setenv("LOCKSTEP_DIR", str(path))
    with ManyToOneRing(path / "r", 1024):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert os.stat(path).st_uid == os.geteuid()
    assert resolve_dir() == path


def test_created_files_are_private(lsdir):
    with OneToOneRing(lsdir / "r", 1024), Counters():
        pass
    for name in ("r", "cnc.dat"):
        st = os.stat(lsdir / name)
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert st.st_uid == os.geteuid()
    assert sorted(p.name for p in lsdir.iterdir()) == ["cnc.dat", "r"]  # no temp files left


def test_files_are_private_even_with_a_permissive_umask(tmp_path):
    code = (
        "import os, sys, stat, lockstep\n"
        "os.umask(0)\n"
        "d = sys.argv[1]\n"
        "lockstep.ManyToOneRing(d + '/r', 1024).close()\n"
        "print(oct(stat.S_IMODE(os.stat(d).st_mode)), oct(stat.S_IMODE(os.stat(d + '/r').st_mode)))\n"
    )
    proc = run_python(code, str(tmp_path / "d"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o700", "0o600"]


@pytest.mark.parametrize("cls", [OneToOneRing, ManyToOneRing])
def test_symlink_in_place_of_ring_file_refused(lsdir, tmp_path, cls):
    target = lsdir / "real"
    make_ring(target)
    link = lsdir / "link"
    link.symlink_to(target)
    with pytest.raises(FileAccessError, match="symlink"):
        cls(link)
    with pytest.raises(FileAccessError, match="symlink"):
        cls(link, 1024)
    dangling = lsdir / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileAccessError):
        cls(dangling, 1024)
    assert not (tmp_path / "nowhere").exists()  # nothing created through the link


def test_symlinked_directory_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setenv("LOCKSTEP_DIR", str(link))
    with pytest.raises(FileAccessError, match="symlink"):
        resolve_dir()
    with pytest.raises(FileAccessError):
        Counters()


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777, 0o720])
def test_directory_writable_by_others_refused(lsdir, mode):
    os.chmod(lsdir, mode)
    with pytest.raises(FileAccessError, match="others may write"):
        ManyToOneRing(lsdir / "r", 1024)
    with pytest.raises(FileAccessError):
        Counters(lsdir)
    assert not (lsdir / "r").exists()


def test_directory_readable_by_others_is_accepted(lsdir):
    os.chmod(lsdir, 0o755)
    with ManyToOneRing(lsdir / "r", 1024) as r:
        assert r.write(1, b"ok")


def test_not_a_directory_refused(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_bytes(b"")
    monkeypatch.setenv("LOCKSTEP_DIR", str(f))
    with pytest.raises(FileAccessError):
        resolve_dir()


def test_not_a_regular_file_refused(lsdir):
    os.mkfifo(lsdir / "fifo", 0o600)
    with pytest.raises(FileAccessError, match="regular"):
        ManyToOneRing(lsdir / "fifo")
    (lsdir / "subdir").mkdir(mode=0o700)
    with pytest.raises(FileAccessError):
        ManyToOneRing(lsdir / "subdir")


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")


@root_only
def test_directory_of_another_user_refused(lsdir):
    os.chown(lsdir, 65534, 65534)
    with pytest.raises(FileAccessError, match="owned by uid 65534"):
        ManyToOneRing(lsdir / "r", 1024)
    with pytest.raises(FileAccessError, match="owned by uid 65534"):
        Counters(lsdir)


@root_only
def test_file_of_another_user_refused(lsdir):
    make_ring(lsdir / "theirs")
    os.chown(lsdir / "theirs", 65534, 65534)
    with pytest.raises(FileAccessError, match="owned by uid 65534"):
        ManyToOneRing(lsdir / "theirs")
    with pytest.raises(FileAccessError, match="owned by uid 65534"):
        ManyToOneRing(lsdir / "theirs", 1024)


# -- counters file -------------------------------------------------------------------------

def test_cnc_corrupt_version(lsdir):
    Counters().close()
    path = lsdir / "cnc.dat"
    patch(path, 0, struct.pack("<i", 7))
    with pytest.raises(FileFormatError, match="cnc version") as info:
        Counters()
    assert info.value.path == str(path)
    assert "expected 512, found 7" in str(info.value)


@pytest.mark.parametrize("offset,value,field", [
    (12, 1000, "metadata length"),  # metadata length not 4 x values
    (16, 100, "values length"),  # not a multiple of 128
    (16, 1 << 30, "length"),  # sections larger than the file
    (4, -1, "section lengths"),
])
def test_cnc_corrupt_header(lsdir, offset, value, field):
    Counters().close()
    path = lsdir / "cnc.dat"
    patch(path, offset, struct.pack("<i", value))
    code = (
        "import sys, lockstep\n"
        "try:\n"
        "    lockstep.Counters(sys.argv[1])\n"
        "    print('opened')\n"
        "except lockstep.FileFormatError as e:\n"
        "    print('FileFormatError:', e)\n"
    )
    proc = run_python(code, str(lsdir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("FileFormatError:"), proc.stdout
    assert str(path) in proc.stdout and field in proc.stdout, proc.stdout


def test_cnc_corrupt_counter_record(lsdir):
    with Counters() as c:
        c.allocate(1001, "x")
    path = lsdir / "cnc.dat"
    meta_at = 128  # header, then (empty driver rings) the metadata section
    patch(path, meta_at, struct.pack("<i", 99))  # state of counter 0
    with pytest.raises(FileFormatError, match="counter 0 state"):
        Counters()


@pytest.mark.parametrize("size", [0, 10, 127, 4096])
def test_cnc_truncated_or_random(lsdir, size):
    path = lsdir / "cnc.dat"
    path.write_bytes(os.urandom(size))
    os.chmod(path, 0o600)
    code = (
        "import sys, lockstep\n"
        "try:\n"
        "    lockstep.Counters(sys.argv[1])\n"
        "    print('opened')\n"
        "except lockstep.LockstepError as e:\n"
        "    print(type(e).__name__)\n"
    )
    proc = run_python(code, str(lsdir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "FileFormatError"
