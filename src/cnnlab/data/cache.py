"""The decode cache: every sample decoded once into a uint8 (N, C, H, W) array on disk.

Keyed by a fingerprint of the files (path and change stamp: size and mtime, or the zip
member's CRC) and of the decode options, so a changed file or setting never gets old pixels.
Per-file checks (hash, format, mode, size, or why unusable) are cached beside the pixels,
so a warm run skips the health pass too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cnnlab.atomic import write_text
from cnnlab.data.decode import DecodeOptions
from cnnlab.data.ingest import FileCheck
from cnnlab.errors import DataError

FORMAT_VERSION = 1  # bump when decoding changes what pixels a file gives


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


class DecodeCache:
    """Checks and pixels of one exact set of files."""

    def __init__(self, root: Path, files_key: str):
        self.folder = root / files_key

    def load_checks(self) -> list[FileCheck] | None:
        try:
            rows = json.loads((self.folder / "checks.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return [FileCheck(**row) for row in rows]

    def save_checks(self, checks: list[FileCheck]) -> None:
        rows = [dataclasses.asdict(check) for check in checks]
        write_text(self.folder / "checks.json", json.dumps(rows))

    def pixels_path(self, options: DecodeOptions) -> Path:
        key = hashlib.sha256(repr(dataclasses.astuple(options)).encode()).hexdigest()[:16]
        return self.folder / f"pixels-{key}.npy"

    def load_pixels(self, options: DecodeOptions, ram_budget_bytes: int) -> np.ndarray | None:
        path = self.pixels_path(options)
        if not path.is_file():
            return None
        try:
            big = path.stat().st_size > ram_budget_bytes
            return np.load(path, mmap_mode="r" if big else None, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable: decode again and overwrite it

    def writer(self, options: DecodeOptions, count: int) -> PixelWriter:
        return PixelWriter(self.pixels_path(options), count)


class PixelWriter:
    """Receives decoded images by index into a temporary memory-mapped file; `commit`
    publishes it with os.replace, so a killed decode never leaves a half-written cache."""

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count
        self.array: np.memmap | None = None
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __call__(self, index: int, pixels: np.ndarray) -> None:
        if self.array is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shape = (self.count, *pixels.shape)
            self.array = np.lib.format.open_memmap(self._temp, "w+", np.uint8, shape)
        if pixels.shape != self.array.shape[1:]:
            first = self.array.shape[1:]
            self.abort()
            raise DataError(
                f"data.target_size: images differ in size ({_hw(first)} and {_hw(pixels.shape)});"
                " set data.target_size: [height, width]"
            )
        self.array[index] = pixels

    def commit(self) -> None:
        if self.array is not None:
            self.array.flush()
            self.array = None
            os.replace(self._temp, self.path)

    def abort(self) -> None:
        self.array = None
        self._temp.unlink(missing_ok=True)


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}"
