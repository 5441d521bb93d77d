"""Read every sample once: hash its bytes, prove it decodes, and (optionally) keep its pixels.

The health check and the decode cache share this one pass, so a first run decodes each file
once. Files are spread over all cores in worker processes (Pillow's Python-side work holds the
GIL, so threads would use one core for small images).
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from cnnlab.data.arrays import ArrayPart
from cnnlab.data.decode import DecodeError, DecodeOptions, convert_array, read_image
from cnnlab.data.sources import Entry
from cnnlab.progress import progress_bar

CHUNK = 64  # files per task: large enough to hide inter-process overhead, small for progress
PARALLEL_FROM = 256  # below this many files a pool costs more than it saves

PARENT_POLL_S = 1.0  # where workers cannot ask for a signal, how often they look for it
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: a signal for this process when its parent dies

PixelSink = Callable[[int, np.ndarray], None]
# fork on Linux: workers start in milliseconds with the modules already imported; "spawn"
# re-runs the caller's script in every worker (seconds when it imports torch). Workers use
# only Pillow and numpy, never torch's thread pools, so forking a process that has them is safe.
_START_METHOD = "fork" if sys.platform == "linux" else "spawn"


@dataclass(frozen=True)
class FileCheck:
    """What one sample turned out to be; `reason` is None when it is usable."""

    sha256: str
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    reason: str | None = None


def check_entries(
    entries: Sequence[Entry], options: DecodeOptions | None, sink: PixelSink | None = None
) -> list[FileCheck]:
    """One FileCheck per entry, in order; with options, each usable image's pixels go to sink."""
    chunks = [list(entries[i : i + CHUNK]) for i in range(0, len(entries), CHUNK)]
    checks: list[FileCheck] = []
    with progress_bar("Reading images", total=len(entries)) as advance:
        for results in _map(chunks, options):
            for check, pixels in results:
                if pixels is not None and sink is not None:
                    sink(len(checks), pixels)
                checks.append(check)
            advance(len(results))
    return checks


def check_arrays(
    part: ArrayPart, options: DecodeOptions | None, sink: PixelSink | None, start: int = 0
) -> list[FileCheck]:
    """The same for pixels that are already arrays (IDX, digits): nothing can be corrupt."""
    height, width = part.images.shape[1:3]
    mode = "L" if part.images.ndim == 3 else "RGB"
    checks = [
        FileCheck(hashlib.sha256(row.tobytes()).hexdigest(), "array", mode, width, height)
        for row in part.images
    ]
    if options is not None and sink is not None:
        for index, pixels in enumerate(_convert_all(part.images, options)):
            sink(start + index, pixels)
    return checks


def _convert_all(images: np.ndarray, options: DecodeOptions) -> Iterator[np.ndarray]:
    native = options.target_size in (None, tuple(images.shape[1:3]))
    if native and images.ndim == 3:  # grayscale arrays: no resampling, only channel layout
        channels = 1 if options.color_mode == "grayscale" else 3
        yield from np.repeat(images[:, None], channels, axis=1)
        return
    for row in images:
        yield convert_array(row, options)


def _map(chunks: list[list[Entry]], options: DecodeOptions | None) -> Iterator[list]:
    files = sum(len(c) for c in chunks)
    workers = min(os.cpu_count() or 1, len(chunks))
    if files < PARALLEL_FROM or workers < 2:
        yield from (_check_chunk(c, options) for c in chunks)
        return
    context = multiprocessing.get_context(_START_METHOD)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
    ) as pool:
        yield from pool.map(_check_chunk, chunks, [options] * len(chunks))


def _start_worker(parent: int) -> None:
    """A worker ends with the process that started it, even one killed by SIGKILL or SIGBUS,
    which run no cleanup: orphaned, it would wait for ever on a queue nobody writes to."""
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before prctl: no signal will come
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no prctl (a libc without it): watch instead
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # an orphan gets a new parent (init or a subreaper)
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _check_chunk(
    entries: list[Entry], options: DecodeOptions | None
) -> list[tuple[FileCheck, np.ndarray | None]]:
    return [_check_one(entry, options) for entry in entries]


def _check_one(entry: Entry, options: DecodeOptions | None) -> tuple[FileCheck, np.ndarray | None]:
    try:
        data = entry.tree.read(entry.inner)
    except OSError as err:
        return FileCheck("", reason=f"cannot be read ({err.strerror or err})"), None
    digest = hashlib.sha256(data).hexdigest()
    try:
        info, pixels = read_image(data, options)
    except DecodeError as err:
        return FileCheck(digest, reason=err.reason), None
    return FileCheck(digest, info.format, info.mode, info.width, info.height), pixels
