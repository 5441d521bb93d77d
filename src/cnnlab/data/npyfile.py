"""uint8 .npy files written so that a full disk is an OSError, and read only when whole.

Not numpy's memory-mapped writing: storing into a mapped page of a sparse file that the disk
has no room for kills the process with SIGBUS (no message, the temporary file left filling the
disk). Reading checks the header, the shape and the file's size before numpy sees the file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import re
import shutil
import socket
from pathlib import Path
from typing import BinaryIO

import numpy as np

# posix_fallocate's answers for "this file system cannot reserve space": check the free space
_CANNOT_RESERVE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class DamagedFile(ValueError):
    """Not the .npy file expected; the message says how."""


def read_npy(path: Path, shape: tuple[int | None, ...], ram_budget_bytes: int) -> np.ndarray:
    """The uint8 array in `path`, memory-mapped over the budget, when it has `shape` (None:
    any length on that axis) and its file holds exactly that many bytes; else DamagedFile.
    OSError (FileNotFoundError included) when it cannot be read."""
    with open(path, "rb") as handle:
        try:
            dims, header = _npy_shape(handle)
        except (ValueError, TypeError, SyntaxError) as error:  # numpy's answers to a bad header
            raise DamagedFile(f"not a .npy file: {error}") from error
        size = os.fstat(handle.fileno()).st_size
    fits = len(dims) == len(shape) and all(
        w is None or w == d for d, w in zip(dims, shape, strict=True)
    )
    if not fits:
        wanted = ", ".join("any" if w is None else str(w) for w in shape)
        raise DamagedFile(f"shape {dims}, this data needs ({wanted})")
    if size != header + math.prod(dims):
        raise DamagedFile(f"{size:,} bytes, its shape {dims} needs {header + math.prod(dims):,}")
    big = size > ram_budget_bytes
    return np.load(path, mmap_mode="r" if big else None, allow_pickle=False)


def _npy_shape(handle: BinaryIO) -> tuple[tuple[int, ...], int]:
    """(shape, header length) of a C-order uint8 .npy file; ValueError for anything else."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    if fortran or dtype != np.uint8:
        raise ValueError(f"holds {dtype}{' in Fortran order' if fortran else ''}, not uint8")
    return shape, handle.tell()


class NpyFile:
    """A new uint8 .npy file of `shape`, written with ordinary writes into space reserved up
    front, under a temporary name until `publish`. A full, read-only or forbidden folder is an
    OSError: at the reservation when the disk cannot hold the file, else at the write."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        self.temp = path.with_name(f".{path.name}.{owner()}.tmp")
        self.row_bytes = math.prod(shape[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(path.parent.parent)  # its folder and their siblings (the cache's)
        self._file: BinaryIO | None = open(self.temp, "wb", buffering=0)  # noqa: SIM115
        try:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "|u1", "fortran_order": False, "shape": shape}
            )
            _write_all(self._file, memoryview(header.getvalue()))
            self.offset = self._position = len(header.getvalue())
            _reserve(self._file, self.offset + shape[0] * self.row_bytes, path.parent)
        except BaseException:
            self.discard()
            raise

    def write(self, start: int, rows: np.ndarray) -> None:
        assert self._file is not None
        position = self.offset + start * self.row_bytes
        if position != self._position:
            self._file.seek(position)
        data = np.ascontiguousarray(rows, dtype=np.uint8).data.cast("B")
        _write_all(self._file, data)
        self._position = position + len(data)

    def read_back(self, into: np.ndarray) -> None:
        """What was written so far (zeros where nothing was) into `into`."""
        with open(self.temp, "rb") as handle:
            handle.seek(self.offset)
            handle.readinto(into.data.cast("B"))

    def publish(self) -> None:
        assert self._file is not None
        os.fsync(self._file.fileno())  # on disk before it has its name: no zeros after a crash
        self._file.close()
        self._file = None
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # a close that cannot flush: the file goes anyway
                self._file.close()
            self._file = None
        self.temp.unlink(missing_ok=True)


def _write_all(handle: BinaryIO, data: memoryview) -> None:
    while data:
        written = handle.write(data)
        if not written:  # a short write is how some file systems say "full"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data = data[written:]


def _reserve(handle: BinaryIO, size: int, folder: Path) -> None:
    """Claim the file's blocks now: a disk without room fails here, before any decoding, and
    no later write finds the disk full because someone else filled it meanwhile."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
            return
        except OSError as error:
            if error.errno not in _CANNOT_RESERVE:
                raise
    if size > shutil.disk_usage(folder).free:  # no reservation here: at least look first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    handle.truncate(size)


def owner() -> str:
    """This process, as temporary names carry it: host and pid (a cache folder can be
    shared between machines, and pids mean something only on their own)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', socket.gethostname())}-{os.getpid()}"


def remove_dead_temps(root: Path) -> None:
    """Temporary files of killed writers on this machine, in any folder under `root`: reserved
    in full, they would keep the disk full for ever. Older cnnlabs named them by pid alone."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness check only there
        return
    host = owner().rsplit("-", 1)[0]
    for temp in root.glob("*/.*.npy.*.tmp"):
        tag = temp.name[: -len(".tmp")].rsplit(".", 1)[-1]
        where, _, pid = tag.rpartition("-")
        if pid.isdigit() and where in ("", host) and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True
