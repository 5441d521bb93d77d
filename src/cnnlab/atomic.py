"""Atomic file writes: a temporary file in the same folder, then os.replace.

A crash leaves either the old file or the new one, never half of one. The file gets the mode
`open()` would give it (the existing file's, or 0666 less the umask), not mkstemp's private 0600,
so a colleague, a web server or another container user can read a run's report.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Errors of the place written to (full, read-only, not permitted, a file where a folder must
# be, a name too long), not of the program: the CLI reports them naming the path (exit 2)
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
    }
)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` only if the block finishes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _named_as(target):
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
        try:
            yield Path(temp)
            os.chmod(temp, _mode_for(target))
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder to fill; it becomes `path` (which must not exist) only if the block
    finishes, so a reader finds all of its files or none."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _named_as(target):
        temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            yield temp
            os.chmod(temp, 0o777 & ~_umask())  # mkdtemp's is private (0700)
            os.rename(temp, target)  # refuses a non-empty target on POSIX
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def _named_as(target: Path) -> Iterator[None]:
    """An OSError about the hidden temporary file (or folder, or a file in it) names the file
    being written instead, the one the user asked for; so does one naming no file, as a write
    on a full disk raises (ENOSPC from write(), no file name)."""
    try:
        yield
    except OSError as err:
        shown = _user_path(err.filename, target)
        if err.errno is None or shown is None:
            raise
        raise type(err)(err.errno, err.strerror, shown) from err


def _user_path(filename: object, target: Path) -> str | None:
    if filename is None:
        return str(target)
    name = os.path.abspath(os.fsdecode(filename))  # type: ignore[arg-type]
    hidden = os.path.join(os.path.abspath(target.parent), f".{target.name}.")
    if not name.startswith(hidden) or ".tmp" not in name[len(hidden) :]:
        return None  # another file: its own name is the right one
    inside = name[len(hidden) :].partition(".tmp")[2].lstrip(os.sep)
    return str(target / inside) if inside else str(target)


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)  # replacing a file keeps its mode, as open()
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask: from /proc where it can be read, since reading it with os.umask
    means setting it for a moment, which another thread could notice."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")
