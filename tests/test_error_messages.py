"""Error messages are set, fresh and relevant: a failing C call never shows the text of an
earlier, unrelated failure (or nothing, on a fresh thread), a failed creation never hides its
cause behind a BufferError, and each C error carries its Aeron-style C trace. A limit of the
process (open files, address space) is a LockstepError naming the file and the limit, never a
bare OSError; mappings hold no file descriptors. The limits are set in child processes."""

from __future__ import annotations

import json
import os
import threading

import pytest

import lockstep
from helpers import run_python
from lockstep import FileFormatError, InvalidArgumentError, LockstepError
from lockstep.transport.logbuffer import LogBuffer


def _unrelated_failure(lsdir) -> None:
    """Leave a C error behind in this thread: an offer too long for a 64 KiB term."""
    with lockstep.Publication(99, lsdir, term_length=1 << 16) as pub:
        with pytest.raises(InvalidArgumentError, match="found 9000"):
            pub.offer(b"x" * 9000)


def _garbage(path, size: int = 4096) -> str:
    path.write_bytes(b"\x7f" * size)
    os.chmod(path, 0o600)
    return str(path)


# (what to do, expected exception, text the message must hold): each fails in a C entry point.
CASES = {
    "term length": (lambda d: lockstep.Publication(8, d, term_length=1000), InvalidArgumentError,
                    "term length / page size: expected powers of two in [65536, 1073741824] / "
                    "[4096, 1073741824], found 1000 / 4096"),
    "mtu": (lambda d: lockstep.Publication(8, d, mtu_length=33), InvalidArgumentError,
            "mtu length: expected a multiple of 32 in [64, 65504], found 33"),
    "log garbage": (lambda d: LogBuffer.open(_garbage(d / "7-1.logbuffer")), FileFormatError,
                    "7-1.logbuffer: length: expected at least"),
    "ring garbage": (lambda d: lockstep.OneToOneRing(_garbage(d / "ring", 4096 + 768)), FileFormatError,
                     "ring: trailer: expected zero padding"),
    "ring type id": (lambda d: lockstep.OneToOneRing(d / "ring2", 1024).write(0, b"x"), InvalidArgumentError,
                     "msg_type_id: expected >= 1, found 0"),
}


@pytest.mark.parametrize("case", CASES)
def test_c_error_is_fresh_and_relevant(lsdir, case):
    action, kind, text = CASES[case]
    _unrelated_failure(lsdir)
    with pytest.raises(kind) as info:
        action(lsdir)
    assert text in str(info.value)
    assert "9000" not in str(info.value)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert notes.startswith("C trace:\n[ls_") and ".c:" in notes, notes


@pytest.mark.parametrize("case", CASES)
def test_c_error_on_a_fresh_thread_is_not_empty(lsdir, case):
    action, kind, text = CASES[case]
    caught: list[BaseException] = []

    def run() -> None:
        try:
            action(lsdir)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            caught.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(caught) == 1 and isinstance(caught[0], kind), caught
    assert text in str(caught[0])


def test_failed_format_raises_its_cause_and_leaves_no_file(lsdir):
    with pytest.raises(InvalidArgumentError) as info:
        lockstep.Publication(8, lsdir, mtu_length=33)
    assert "mtu length" in str(info.value)  # not "BufferError: cannot close exported pointers exist"
    assert info.value.__context__ is None or not isinstance(info.value.__context__, BufferError)
    assert not [n for n in os.listdir(lsdir) if n.endswith((".logbuffer", ".tmp"))]
    with lockstep.Publication(8, lsdir, mtu_length=64):  # and the stream is usable after it
        pass


_FDS = r"""
import json, os, sys
import lockstep
dir = sys.argv[1]
before = len(os.listdir("/proc/self/fd"))
pubs = [lockstep.Publication(i, dir, exclusive=True, term_length=1 << 16) for i in range(20)]
subs = [lockstep.Subscription(i, dir) for i in range(20)]
assert sum(len(s.images) for s in subs) == 20, [len(s.images) for s in subs]
print(json.dumps({"before": before, "after": len(os.listdir("/proc/self/fd"))}))
"""


def test_mappings_hold_no_file_descriptors(lsdir):
    proc = run_python(_FDS, str(lsdir))
    assert proc.returncode == 0, proc.stderr
    fds = json.loads(proc.stdout.strip().splitlines()[-1])
    # 20 publications + 20 images + cnc.dat: 41 mappings, no fd for any of them.
    assert fds["after"] - fds["before"] <= 2, fds


_LIMIT = r"""
import json, os, resource, sys
import lockstep
dir, which = sys.argv[1], sys.argv[2]
lockstep.Publication(1, dir, term_length=1 << 16).close()  # cnc.dat and the directory exist
result = {"error": None}
if which == "nofile":
    lowest_free = os.open("/dev/null", os.O_RDONLY)  # the fd a next open would get
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    action = lambda: lockstep.Publication(2, dir, term_length=1 << 16)
else:
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (in_use + (16 << 20), resource.RLIM_INFINITY))
    action = lambda: lockstep.Publication(2, dir, term_length=16 << 20)  # a 48 MiB log
try:
    action()
except Exception as e:
    result = {"error": type(e).__name__, "message": str(e), "lockstep": isinstance(e, lockstep.LockstepError)}
print(json.dumps(result))
"""


@pytest.mark.parametrize("which, limit", [("nofile", "RLIMIT_NOFILE"), ("as", "RLIMIT_AS")])
def test_a_process_limit_is_a_lockstep_error_naming_file_and_limit(lsdir, which, limit):
    proc = run_python(_LIMIT, str(lsdir), which)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] == "ResourceLimitError" and result["lockstep"], result
    assert str(lsdir) in result["message"] and ".logbuffer" in result["message"], result
    assert limit in result["message"], result
    assert not [n for n in os.listdir(lsdir) if n.startswith("2-") or n.endswith(".tmp")]


def test_os_error_translation_names_file_and_errno(tmp_path):
    import errno
    from lockstep.transport.mapped import os_error
    error = os_error(tmp_path / "f", OSError(errno.EMFILE, "Too many open files"), "open")
    assert isinstance(error, lockstep.ResourceLimitError) and isinstance(error, LockstepError)
    assert error.errno == errno.EMFILE and str(tmp_path / "f") in str(error)
    other = os_error(tmp_path / "f", OSError(errno.EACCES, "Permission denied"), "open")
    assert isinstance(other, lockstep.FileAccessError) and "Permission denied" in str(other)


def test_c_error_without_a_message_says_so_and_keeps_errno():
    import errno
    from lockstep._native import c_error, lib
    lib.ls_clear_error()
    assert "without setting its error message" in str(c_error("some.file"))
    assert lib.ls_fill_holes(1000, 4096) == -1  # fd 1000 is not open
    error = c_error("some.file")
    assert str(error).startswith("some.file: fallocate of 4096 bytes: ") and error.errno == errno.EBADF
