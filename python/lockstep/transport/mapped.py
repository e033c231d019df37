"""Memory-mapped files in lockstep's directory: created 0600 in a 0700 directory, never
through a symlink, never another user's, and never seen half-made by another process."""

from __future__ import annotations

import errno
import fcntl
import getpass
import os
import resource
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from .._native import ffi, lib
from ..errors import (ClosedError, FileAccessError, FileFormatError, LockstepError, NoSpaceError,
                      ResourceLimitError)

__all__ = ["MappedFile", "default_dir", "resolve_dir"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SPACE_HINT = "free space there, or point LOCKSTEP_DIR at a larger filesystem"


def default_dir() -> Path:
    """`$LOCKSTEP_DIR`, else `/dev/shm/lockstep-$USER`, else `<tempdir>/lockstep-$USER`."""
    env = os.environ.get("LOCKSTEP_DIR")
    if env:
        return Path(env)
    user = _user_name()
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"lockstep-{user}"
    return Path(tempfile.gettempdir()) / f"lockstep-{user}"


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.geteuid())


def resolve_dir(dir: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the directory to use, creating it 0700 if needed; refuse a symlink, a directory
    of another user (root's is fine), or one others may write to, sticky (/tmp) or not."""
    path = Path(dir) if dir is not None else default_dir()
    if create:
        try:
            path.mkdir(mode=_DIR_MODE, parents=True)
        except FileExistsError:
            pass
        except OSError as e:
            raise FileAccessError(f"{path}: cannot create directory: {e.strerror}") from e
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        raise FileAccessError(f"{path}: no such directory") from e
    if stat.S_ISLNK(st.st_mode):
        raise FileAccessError(f"{path}: is a symlink; lockstep refuses linked directories")
    if not stat.S_ISDIR(st.st_mode):
        raise FileAccessError(f"{path}: not a directory")
    # Whoever owns a directory, or may write to it, can swap our files (or plant logs, sticky
    # or not: discovery would find them).
    if st.st_uid not in (os.geteuid(), 0):
        raise FileAccessError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
    if st.st_mode & 0o022:
        raise FileAccessError(
            f"{path}: others may write here (mode {stat.S_IMODE(st.st_mode):o}); run chmod 700 on it")
    return path


def _size(n: int) -> str:
    """`n` bytes as text a person reads: '4194304 bytes (4.0 MiB)'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n} bytes ({n / (1 << shift):.1f} {unit})"
    return f"{n} bytes"


def _limit(which: int) -> str:
    """The soft limit of `resource.RLIMIT_*` `which` as text ('unlimited' or the number)."""
    soft = resource.getrlimit(which)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def _space_free(path: Path) -> str:
    """'N bytes free of M on DIR' for the filesystem holding `path` (its nearest existing parent)."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError:
        return "free space unknown"
    return f"{_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)} on {where}"


def _address_space_in_use() -> str:
    """This process's mapped address space (what RLIMIT_AS counts) as text."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return _size(int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return "unknown"


def os_error(path: str | os.PathLike[str], error: OSError, action: str, *, needed: int | None = None,
             hint: str = _SPACE_HINT) -> LockstepError:
    """The LockstepError for `error`, met while trying to `action` `path` (e.g. "create",
    "map 3 MiB of"): a full filesystem names the bytes needed and free, a hit limit names the
    limit; anything else is a FileAccessError. The OSError becomes its cause."""
    path = Path(path)
    code = error.errno
    what = f"{path}: cannot {action} it"
    result: LockstepError
    if code in _NO_SPACE:
        kind = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
        need = f"needs {_size(needed)}, " if needed is not None else ""
        result = NoSpaceError(f"{what}: {kind}: {need}{_space_free(path.parent)}; {hint}")
    elif code == errno.EMFILE:
        result = ResourceLimitError(f"{what}: too many open files: the limit RLIMIT_NOFILE of this process is "
                                    f"{_limit(resource.RLIMIT_NOFILE)} (ulimit -n); close objects or raise it")
    elif code == errno.ENFILE:
        result = ResourceLimitError(f"{what}: too many open files in the system (fs.file-max)")
    elif code == errno.ENOMEM:
        need = f" {_size(needed)}" if needed is not None else ""
        result = ResourceLimitError(
            f"{what}: out of memory for{need or ' it'}: the address space limit RLIMIT_AS of this process is "
            f"{_limit(resource.RLIMIT_AS)} (ulimit -v, in KiB there), {_address_space_in_use()} in use; or "
            f"vm.max_map_count mappings are reached")
    elif code == errno.EFBIG:
        result = ResourceLimitError(f"{what}: file too large: the file size limit RLIMIT_FSIZE of this process is "
                                    f"{_limit(resource.RLIMIT_FSIZE)} (ulimit -f)")
    else:
        result = FileAccessError(f"{what}: {error.strerror or error}")
    result.errno = code
    result.__cause__ = error
    return result


def reserve(fd: int, path: str | os.PathLike[str], length: int, *, hint: str = _SPACE_HINT) -> None:
    """Give the file open at `fd` `length` bytes of real storage (posix_fallocate), so a full
    filesystem is a NoSpaceError now, naming `path`, never a SIGBUS at a later touch of a
    mapped page. Only for a file no other process writes yet (the fallback of filesystems
    without fallocate writes zeros)."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, length)
        else:  # macOS: no reservation to be had; at least the length
            os.ftruncate(fd, length)
    except OSError as e:
        raise os_error(path, e, "create", needed=length, hint=hint) from e


def _fill_holes(fd: int, path: Path, st: os.stat_result) -> None:
    """A file another program made sparse gets its holes allocated before it is mapped shared
    (ls_fill_holes: no byte changes), so a full filesystem is a NoSpaceError at the open
    instead of a SIGBUS at some later write. Files lockstep makes have none: no call then."""
    missing = st.st_size - st.st_blocks * 512
    if missing > 0 and lib.ls_fill_holes(fd, st.st_size) < 0:
        code = lib.ls_errno()
        raise os_error(path, OSError(code, os.strerror(code)), "fill the holes of", needed=missing)


def _map(fd: int, path: Path, length: int, shared: bool) -> Any:
    """Map `length` bytes of `fd` (see ls_map_file): a uint8_t* that unmaps itself when the last
    reference to it (the file, a view, an array) goes. The fd may be closed right after."""
    # Pre-faulting a private writable mapping would copy every page (a COW break per page):
    # only shared mappings, the hot ones, are populated.
    base = lib.ls_map_file(fd, length, shared, shared)
    if base == ffi.NULL:
        code = lib.ls_errno()
        raise os_error(path, OSError(code, os.strerror(code)), f"map {_size(length)} of", needed=length)
    return ffi.gc(ffi.cast("uint8_t *", base), lambda p: lib.ls_unmap_file(p, length))


def check_name(name: str) -> str:
    """A file name inside lockstep's directory: no path separators, no '..'."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise FileAccessError(f"{name!r}: not a plain file name inside the lockstep directory")
    return name


def open_regular(path: str | os.PathLike[str], flags: int, *, owned: bool = False) -> int:
    """os.open that refuses symlinks and anything but a regular file, and a file of another
    user when writing (or always, with `owned`). Created 0600. FileNotFoundError passes
    through (callers treat a missing file as such); other failures are FileAccessErrors."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    except FileNotFoundError:
        raise
    except OSError as e:
        if os.path.islink(path):
            raise FileAccessError(f"{path}: is a symlink; lockstep refuses linked files") from e
        raise os_error(path, e, "open") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileAccessError(f"{path}: not a regular file")
    if (owned or flags & (os.O_WRONLY | os.O_RDWR)) and st.st_uid != os.geteuid():
        os.close(fd)
        raise FileAccessError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
    return fd


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """os.open for lockstep's small files (lock files, hash logs): `open_regular` of a file
    that must be this user's, a missing one included in the FileAccessErrors."""
    try:
        return open_regular(path, flags, owned=True)
    except FileNotFoundError as e:
        raise FileAccessError(f"{path}: cannot open: {e.strerror}") from e


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """An exclusive flock on `path` (a private file, created if need be): its open fd, or None
    when another holder has it. The lock goes with the process, however it dies."""
    fd = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def take_pid_lock(path: str | os.PathLike[str], what: str) -> TextIO:
    """Hold `try_lock(path)` with our pid in the file, so only one `what` runs; a second is
    told the holder's pid. Returns the open file."""
    fd = try_lock(path)
    if fd is None:
        with open(path) as held:
            owner = held.read().strip() or "?"
        raise LockstepError(f"{Path(path).parent}: another {what} is running here (pid {owner})")
    f = os.fdopen(fd, "r+")
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class MappedFile:
    """A whole file mapped shared (or copy-on-write when read-only), with numpy and cffi views.
    The mapping holds no file descriptor; it is unmapped when the file is closed and the last
    view of it is gone."""

    __slots__ = ("path", "length", "writable", "_buffer", "_array", "_pointer")

    def __init__(self, path: Path, base: Any, length: int, writable: bool) -> None:
        self.path = path
        self.length = length
        self.writable = writable
        self._pointer = base  # uint8_t*, unmapped by its destructor (see _map)
        self._buffer = ffi.buffer(base, length)  # keeps `base` alive, as do views of it
        self._array: np.ndarray | None = np.frombuffer(self._buffer, dtype=np.uint8)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = True) -> "MappedFile":
        """Map an existing file. A writable open refuses symlinks and other users' files."""
        path = Path(path)
        fd = open_regular(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if st.st_size == 0:
                raise FileFormatError(path, "length: expected a mapped structure, found an empty file")
            # Shared when writable, private copy-on-write otherwise (a reader never changes the
            # file). Shared ones pre-faulted (MAP_POPULATE, as Aeron pre-touches): a first touch
            # of each page would otherwise cost a fault on the hot path, every 4 KiB of a fresh log.
            if writable:
                _fill_holes(fd, path, st)
            return cls(path, _map(fd, path, st.st_size, writable), st.st_size, writable)
        finally:
            os.close(fd)  # the mapping needs no descriptor

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        length: int,
        init: Callable[[np.ndarray], None] | None = None,
    ) -> tuple["MappedFile", bool]:
        """Open `path`, or create it with `length` zero bytes (then `init` fills it) and
        publish it by hard link, so no other process sees it before it is complete.
        Returns the file and whether this call created it."""
        path = Path(path)
        resolve_dir(path.parent)
        try:
            return cls.open(path), False
        except FileNotFoundError:
            pass
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        except OSError as e:
            raise os_error(path, e, "create", needed=length) from e
        try:
            # Every byte reserved before anything is linked: a full filesystem is an error
            # here, naming the file, and leaves nothing behind.
            reserve(fd, path, length)
            if init is not None:
                init(np.frombuffer(ffi.buffer(_map(fd, path, length, True), length), dtype=np.uint8))
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                created = False  # another process won the race: use its file
        finally:
            os.close(fd)
            os.unlink(tmp)
        return cls.open(path), created

    @property
    def array(self) -> np.ndarray:
        """The file's bytes as a uint8 numpy array (shares memory with the file)."""
        if self._array is None:
            raise ClosedError(f"{self.path}: closed")
        return self._array

    @property
    def pointer(self):  # cffi uint8_t[] cdata
        """A cffi pointer to the first byte, for the C core."""
        if self._array is None:
            raise ClosedError(f"{self.path}: closed")
        return self._pointer

    def memoryview(self) -> memoryview:
        """A writable (or read-only) memoryview of the whole file."""
        if self._array is None:
            raise ClosedError(f"{self.path}: closed")
        return memoryview(self._buffer)

    @property
    def closed(self) -> bool:
        return self._array is None

    def close(self) -> None:
        """Unmap. Views still held by the caller keep the mapping alive until they go."""
        self._array = self._buffer = self._pointer = None  # the last reference unmaps


__all__ += ["check_name", "open_private", "open_regular", "os_error", "reserve", "take_pid_lock", "try_lock"]
