"""Memory-mapped files in lockstep's directory: created 0600 in a 0700 directory, never
through a symlink, never another user's, and never seen half-made by another process."""

from __future__ import annotations

import fcntl
import getpass
import mmap
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .._native import ffi
from ..errors import ClosedError, FileAccessError, FileFormatError, LockstepError

__all__ = ["MappedFile", "default_dir", "resolve_dir"]

_DIR_MODE = 0o700
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux
_FILE_MODE = 0o600


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
        raise FileAccessError(f"{path}: cannot open: {e.strerror}") from e
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


def take_pid_lock(path: str | os.PathLike[str], what: str):
    """Hold an exclusive flock on `path` (a private file) with our pid in it, so only one
    `what` runs; the lock goes with the process, however it dies. Returns the open file."""
    f = os.fdopen(open_private(path, os.O_RDWR | os.O_CREAT), "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "?"
        f.close()
        raise LockstepError(f"{Path(path).parent}: another {what} is running here (pid {owner})") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class MappedFile:
    """A whole file mapped shared (or copy-on-write when read-only), with numpy and cffi views."""

    __slots__ = ("path", "length", "writable", "_mmap", "_array", "_pointer")

    def __init__(self, path: Path, mapping: mmap.mmap, writable: bool) -> None:
        self.path = path
        self.length = len(mapping)
        self.writable = writable
        self._mmap: mmap.mmap | None = mapping
        self._array = np.frombuffer(mapping, dtype=np.uint8)
        self._pointer = ffi.from_buffer("uint8_t[]", mapping)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = True) -> "MappedFile":
        """Map an existing file. A writable open refuses symlinks and other users' files."""
        path = Path(path)
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise
        except OSError as e:
            if os.path.islink(path):
                raise FileAccessError(f"{path}: is a symlink; lockstep refuses linked files") from e
            raise FileAccessError(f"{path}: cannot open: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileAccessError(f"{path}: not a regular file")
            if writable and st.st_uid != os.geteuid():
                raise FileAccessError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
            if st.st_size == 0:
                raise FileFormatError(path, "length: expected a mapped structure, found an empty file")
            # Shared when writable, private copy-on-write otherwise (a reader never changes the
            # file). Pre-faulted (MAP_POPULATE, as Aeron pre-touches): a first touch of each
            # page would otherwise cost a fault on the hot path, every 4 KiB of a fresh log.
            flags = (mmap.MAP_SHARED if writable else mmap.MAP_PRIVATE) | _POPULATE
            return cls(path, mmap.mmap(fd, st.st_size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE), writable)
        finally:
            os.close(fd)

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
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        try:
            os.ftruncate(fd, length)
            if init is not None:
                with mmap.mmap(fd, length) as m:
                    init(np.frombuffer(m, dtype=np.uint8))
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
        if self._mmap is None:
            raise ClosedError(f"{self.path}: closed")
        return self._array

    @property
    def pointer(self):  # cffi uint8_t[] cdata
        """A cffi pointer to the first byte, for the C core."""
        if self._mmap is None:
            raise ClosedError(f"{self.path}: closed")
        return self._pointer

    def memoryview(self) -> memoryview:
        """A writable (or read-only) memoryview of the whole file."""
        if self._mmap is None:
            raise ClosedError(f"{self.path}: closed")
        return memoryview(self._mmap)

    @property
    def closed(self) -> bool:
        return self._mmap is None

    def close(self) -> None:
        """Unmap. Views still held by the caller keep the mapping alive until they go."""
        mapping, self._mmap = self._mmap, None
        if mapping is None:
            return
        ffi.release(self._pointer)
        self._array = None
        try:
            mapping.close()
        except BufferError:
            pass  # a view is still exported; the mapping goes with the last view


__all__ += ["check_name", "open_private", "open_regular", "take_pid_lock"]
