"""One cnnlab process at a time in a run folder: an exclusive lock for as long as it runs.

Two `--resume`s of the same run would both train and overwrite each other's checkpoints; the
second one is refused instead, naming the first one's process. The lock is the kernel's
(`flock` on `.cnnlab.lock` in the folder), so a killed process never leaves a stale lock: the
file may stay behind (it is removed when a run ends normally) but nobody holds it. Where the
platform has no `flock` (Windows), runs are not locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import CnnlabError

LOCK = ".cnnlab.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunInUse(CnnlabError):
    """Another process holds the run folder."""


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the block; RunInUse when another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    handle = _acquire(folder / LOCK, folder)
    try:
        yield
    finally:
        # removed before it is released: a process that opens the name afterwards makes a
        # new file, and _acquire's inode check turns away one that opened the old one
        (folder / LOCK).unlink(missing_ok=True)
        os.close(handle)


def _acquire(path: Path, folder: Path) -> int:
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(handle)
            raise RunInUse(
                f"{folder} is in use by another cnnlab process (pid {holder}); wait for it to "
                "end, or stop it, before running or resuming this run again"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:  # its holder removed it as we locked it: try again
            same = False
        if same:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode("ascii"))
            return handle
        os.close(handle)
