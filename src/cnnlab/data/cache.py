"""The decode cache: every sample decoded once into a uint8 (N, C, H, W) array on disk.

Keyed by a fingerprint of the files (path and change stamp: size and mtime, or the zip
member's CRC) and of the decode options, so a changed setting, or a file whose stamp changed,
is decoded again. Contents are not hashed on a warm run (it would read the whole dataset): a
same-size edit with its old mtime put back keeps its old pixels (the README says so).
Per-file checks (hash, format, mode, size, or why unusable) are cached beside the pixels,
so a warm run skips the health pass too.

Nothing in the cache is trusted unread: a file whose header, shape or size is not what this
data gives is decoded again, with a warning. Nothing is written through a memory map: on a full
disk that kills the process with SIGBUS. A folder that refuses the cache (full, read-only, not
ours) costs the run its cache, with a warning, not the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import cast

import numpy as np
from rich.console import Console
from rich.markup import escape

from cnnlab.atomic import write_text
from cnnlab.data import npyfile
from cnnlab.data.decode import DecodeOptions
from cnnlab.data.ingest import FileCheck
from cnnlab.errors import DataError

FORMAT_VERSION = 2  # bump when decoding changes what pixels a file gives
ROWS_PER_WRITE = 1024  # a split's rows copied at a time: bounded memory per copy
_CHECK_FIELDS = {field.name for field in dataclasses.fields(FileCheck)}
_console = Console(stderr=True, soft_wrap=True, highlight=False)


def default_cache_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("CNNLAB_CACHE"):
        return Path(os.environ["CNNLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def fingerprint(items: list[tuple[str, str]]) -> str:
    """A short hash of (path, stamp) pairs; equal inputs give equal keys on any machine."""
    digest = hashlib.sha256(f"cnnlab-cache-v{FORMAT_VERSION}\n".encode())
    for path, stamp in items:
        digest.update(f"{path}\t{stamp}\n".encode())
    return digest.hexdigest()[:24]


def warn(message: str) -> None:
    _console.print(f"[yellow]warning:[/] {escape(message)}")


class DecodeCache:
    """Checks and pixels of one exact set of `count` files."""

    def __init__(self, root: Path, files_key: str, count: int):
        self.folder = root / files_key
        self.count = count

    def load_checks(self) -> list[FileCheck] | None:
        path = self.folder / "checks.json"
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rows, list) or len(rows) != self.count:
                raise ValueError(f"not {self.count} file checks")
            return [_check_of(row) for row in rows]
        except FileNotFoundError:
            return None
        except OSError as error:
            warn(f"{path} cannot be read ({error.strerror or error}); checking the images again")
        except (ValueError, TypeError, RecursionError) as error:  # JSON, UTF-8, shape, types
            warn(f"{path} is damaged ({error}); checking the images again")
        return None

    def save_checks(self, checks: list[FileCheck]) -> None:
        rows = [dataclasses.asdict(check) for check in checks]
        write_text(self.folder / "checks.json", json.dumps(rows))

    def pixels_path(self, options: DecodeOptions) -> Path:
        key = hashlib.sha256(repr(dataclasses.astuple(options)).encode()).hexdigest()[:16]
        return self.folder / f"pixels-{key}.npy"

    def load_pixels(self, options: DecodeOptions, ram_budget_bytes: int) -> np.ndarray | None:
        channels = 1 if options.color_mode == "grayscale" else 3
        height, width = options.target_size or (None, None)
        shape = (self.count, channels, height, width)
        return _read_or_warn(self.pixels_path(options), shape, ram_budget_bytes)

    def writer(self, options: DecodeOptions, ram_budget_bytes: int) -> PixelWriter:
        return PixelWriter(self.pixels_path(options), self.count, ram_budget_bytes)


def _check_of(row: object) -> FileCheck:
    if not isinstance(row, dict) or set(row) != _CHECK_FIELDS:
        raise ValueError("a row is not a file check")
    texts = [row[name] for name in ("sha256", "format", "mode")]
    sizes = [row["width"], row["height"]]
    reason = row["reason"]
    if not all(isinstance(text, str) for text in texts) or not (
        all(type(size) is int and size >= 0 for size in sizes)
        and (reason is None or isinstance(reason, str))
    ):
        raise ValueError("a file check holds values of the wrong type")
    return FileCheck(**row)


def _read_or_warn(
    path: Path, shape: tuple[int | None, ...], ram_budget_bytes: int
) -> np.ndarray | None:
    """`npyfile.read_npy`'s array; None when absent or damaged (with a warning): the caller
    decodes again and overwrites it."""
    try:
        return npyfile.read_npy(path, shape, ram_budget_bytes)
    except FileNotFoundError:
        return None
    except OSError as error:
        problem = f"cannot be read: {error.strerror or error}"
    except npyfile.DamagedFile as error:
        problem = str(error)
    warn(f"the decode cache file {path} is damaged ({problem}); decoding the images again")
    return None


class PixelWriter:
    """Receives decoded images by index into a temporary .npy file; `commit` publishes it with
    os.replace, so a killed decode never leaves a half-written cache.

    When the disk refuses the file (full, read-only, not ours), the images go on into memory
    with a warning, if they fit data.ram_budget_mb; over it a DataError says where to make room.
    """

    def __init__(self, path: Path, count: int, ram_budget_bytes: int):
        self.path, self.count, self.budget = path, count, ram_budget_bytes
        self.shape: tuple[int, ...] | None = None  # of one image, from the first one
        self.file: npyfile.NpyFile | None = None
        self.memory: np.ndarray | None = None  # the images, when the cache refused them
        self.published = False

    def __call__(self, index: int, pixels: np.ndarray) -> None:
        if self.shape is None:
            self.shape = pixels.shape
            try:
                self.file = npyfile.NpyFile(self.path, (self.count, *pixels.shape))
            except OSError as error:
                self._to_memory(error)
        elif pixels.shape != self.shape:
            first = self.shape
            self.abort()
            raise DataError(
                f"data.target_size: images differ in size ({_hw(first)} and {_hw(pixels.shape)});"
                " set data.target_size: [height, width]"
            )
        if self.file is not None:
            try:
                self.file.write(index, pixels[np.newaxis])
                return
            except OSError as error:
                self._to_memory(error)
        cast(np.ndarray, self.memory)[index] = pixels

    def give_up(self, error: OSError) -> None:
        """The cache folder refused another of its files (the checks): no cache this run."""
        if self.file is not None:
            self._to_memory(error)

    def commit(self) -> np.ndarray | None:
        """The images when they are in memory (the cache refused them); else None, and
        `published` says whether there is a cache file to load (no usable image: none)."""
        if self.file is not None:
            try:
                self.file.publish()
                self.file, self.published = None, True
            except OSError as error:
                self._to_memory(error)
        return self.memory

    def abort(self) -> None:
        self.memory = None
        if self.file is not None:
            self.file.discard()
            self.file = None

    def _to_memory(self, error: OSError) -> None:
        """The images decoded so far (read back from the temporary file) into memory, where
        the rest will go; the temporary file deleted either way."""
        shape = (self.count, *cast(tuple[int, ...], self.shape))
        file, self.file = self.file, None
        try:
            self.memory = in_memory_instead(self.path.parent, error, shape, self.budget)
            if file is not None:
                file.read_back(self.memory)
        except OSError as second:  # the disk fails reading too: no way to go on
            raise DataError(
                f"data.cache_dir: the decode cache folder {self.path.parent} fails"
                f" ({second.strerror or second}); set data.cache_dir to another folder"
            ) from second
        finally:
            if file is not None:
                file.discard()


def in_memory_instead(
    folder: Path, error: OSError, shape: tuple[int, ...], ram_budget_bytes: int
) -> np.ndarray:
    """A zeroed uint8 array of `shape` for pixels the cache `folder` refused, with a warning
    saying so; a DataError when they do not fit data.ram_budget_mb."""
    nbytes = math.prod(shape)
    what = f"the decode cache folder {folder} cannot be written ({_why(folder, error, nbytes)})"
    if nbytes > ram_budget_bytes:
        raise DataError(
            f"data.cache_dir: {what}, and its {_mb(nbytes)} of decoded images exceed"
            f" data.ram_budget_mb ({_mb(ram_budget_bytes)}), so they cannot be kept in memory"
            " instead; free space there, set data.cache_dir to a writable folder with room,"
            " or raise data.ram_budget_mb"
        ) from error
    warn(
        f"{what}; this run keeps its {_mb(nbytes)} of decoded images in memory instead and"
        " the next one decodes them again. To cache them, free space there or set"
        " data.cache_dir to a writable folder with room"
    )
    return np.zeros(shape, np.uint8)


def cached_rows(folder: Path, pixels: np.memmap, rows: np.ndarray, budget: int) -> np.ndarray:
    """pixels[rows] as a memory-mapped file of its own in `folder`, made once, never a RAM
    copy: unless the folder refuses it, then in memory as `in_memory_instead` allows."""
    key = hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    name = Path(cast(str, pixels.filename)).stem  # a memmap opened from a file has its name
    path = folder / f"rows-{name}-{key}.npy"
    shape = (len(rows), *pixels.shape[1:])
    found = _read_or_warn(path, shape, ram_budget_bytes=0)
    if found is not None:
        return found
    try:
        out = npyfile.NpyFile(path, shape)
        try:
            for start in range(0, len(rows), ROWS_PER_WRITE):
                out.write(start, pixels[rows[start : start + ROWS_PER_WRITE]])
            out.publish()
        finally:
            out.discard()  # nothing left once published
    except OSError as error:
        memory = in_memory_instead(folder, error, shape, budget)
        memory[:] = pixels[rows]
        return memory
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _why(folder: Path, error: OSError, nbytes: int) -> str:
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOSPC:
        reason += f": {_mb(nbytes)} needed"
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        with contextlib.suppress(OSError):
            reason += f", {_mb(shutil.disk_usage(existing or folder).free)} free"
    return reason


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MB"


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}"
