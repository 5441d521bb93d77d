"""A real folder of JPEGs from the shared cats_vs_dogs zips, extracted with path checks."""

from __future__ import annotations

import shutil
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

ZIPS = ("train.zip", "validation.zip")
TOP = "cats_and_dogs_filtered"


def missing(dataset: Path) -> list[Path]:
    """The zips this benchmark needs that are not there."""
    return [dataset / name for name in ZIPS if not (dataset / name).is_file()]


def extract(dataset: Path, target: Path, per_class: int | None = None) -> Path:
    """Extract train.zip and validation.zip into `target`, giving
    `target/cats_and_dogs_filtered/{train,validation}/{cats,dogs}/*.jpg`; with `per_class`,
    only the first that many files (by name) of each split and class. Returns `target`."""
    for archive in ZIPS:
        with zipfile.ZipFile(dataset / archive) as bundle:
            for member in _chosen(bundle, per_class):
                _extract_one(bundle, member, target)
    return target


def _chosen(bundle: zipfile.ZipFile, per_class: int | None) -> list[zipfile.ZipInfo]:
    files = sorted((m for m in bundle.infolist() if not m.is_dir()), key=lambda m: m.filename)
    if per_class is None:
        return files
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    for member in files:
        folder = str(PurePosixPath(member.filename).parent)
        if taken[folder] < per_class:
            taken[folder] += 1
            chosen.append(member)
    return chosen


def _extract_one(bundle: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    name = PurePosixPath(member.filename)
    if name.is_absolute() or ".." in name.parts:
        raise ValueError(f"refusing to extract {member.filename!r}: it leaves the target folder")
    path = target.joinpath(*name.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with bundle.open(member) as source, open(path, "wb") as sink:
        shutil.copyfileobj(source, sink)
