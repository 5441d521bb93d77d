"""Sources that are already pixel arrays: MNIST-style IDX files and scikit-learn's digits."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

BUILTIN_DATASETS = ("digits",)
_IDX_IMAGES = re.compile(r"^(?P<prefix>.+)-images[-.]idx3-ubyte(?P<gz>\.gz)?$")
_IDX_SPLITS = {"train": "train", "t10k": "test", "test": "test", "val": "val"}


@dataclass(frozen=True)
class ArrayPart:
    """One split's pixels: uint8 (N, H, W) or (N, H, W, C), integer labels, and where from."""

    name: str  # paths are `name#index`
    split: str | None
    images: np.ndarray
    labels: np.ndarray


def is_array_source(source: str) -> bool:
    return source in BUILTIN_DATASETS or bool(_idx_files(Path(source)))


def read_array_source(source: str) -> list[ArrayPart]:
    if source == "digits":
        return [_digits()]
    return [_read_idx_pair(images, split) for images, split in _idx_files(Path(source))]


def _digits() -> ArrayPart:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    bunch = load_digits()
    # 8x8 values 0..16; spread onto 0..255 so every source is uint8 alike.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ArrayPart("digits", None, images, bunch.target.astype(np.int64))


def _idx_files(folder: Path) -> list[tuple[Path, str | None]]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        match = _IDX_IMAGES.match(path.name)
        if match:
            found.append((path, _IDX_SPLITS.get(match["prefix"].lower())))
    return found


def _read_idx_pair(images_path: Path, split: str | None) -> ArrayPart:
    labels_name = re.sub(r"images([-.])idx3", r"labels\1idx1", images_path.name)
    labels_path = images_path.with_name(labels_name)
    if not labels_path.is_file():
        raise DataError(
            f"data.source: {images_path} has no labels file {labels_path.name} beside it"
        )
    images = _read_idx(images_path, expected_dims=3)
    labels = _read_idx(labels_path, expected_dims=1).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(
            f"data.source: {images_path.name} holds {len(images):,} images but "
            f"{labels_path.name} holds {len(labels):,} labels"
        )
    return ArrayPart(images_path.name, split, images, labels)


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"data.source: cannot read {path} ({err})") from None
    # IDX header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    # then one big-endian uint32 per dimension.
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != expected_dims:
        raise DataError(f"data.source: {path} is not a uint8 IDX file with {expected_dims} dims")
    dims = np.frombuffer(raw, dtype=">u4", count=expected_dims, offset=4).astype(int)
    offset = 4 + 4 * expected_dims
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"data.source: {path} is truncated ({len(raw):,} bytes for shape {dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
