"""A real folder of JPEGs from the shared cats_vs_dogs zips, extracted with path checks."""

from __future__ import annotations

from pathlib import Path

from bench.common import extract_subset

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
        extract_subset(dataset / archive, target, per_class)
    return target
