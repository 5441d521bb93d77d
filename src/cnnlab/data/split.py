"""The split manifest: which sample is train, val or test; stratified, seeded, saved as CSV.

Parts the source already has (train/, val/, test/) are kept. Missing val and test splits are
carved from the training pool per class, so each split keeps the class proportions. Identical
files move together: a duplicate can never end up on both sides of a split we made.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cnnlab.atomic import write_text
from cnnlab.data.health import Sample
from cnnlab.errors import ConfigError

DEFAULT_VALIDATION_SPLIT = 0.2  # S0's 80/20 hold-out when the source has no val part


def no_test_note(split_names: Iterable[str]) -> str | None:
    """The warning when validation is the only held-out split: its numbers then lead the run
    (and the report), although they chose the kept weights. A warning, not a default test
    carve-out: S0 and S2 report a Keras `validation_split` hold-out, which must stay 80/20."""
    names = set(split_names)
    if "test" in names or "val" not in names:
        return None
    return (
        "no test split: the run's final numbers will be the validation split's, which also "
        "chooses the kept weights, so they overstate the score on new images; set "
        "data.test_split (e.g. 0.2) or give the source a test part"
    )


def assign_splits(
    samples: Sequence[Sample],
    validation_split: float | None,
    test_split: float | None,
    seed: int,
) -> list[str]:
    """The split of each sample, in order."""
    present = {s.split for s in samples if s.split is not None}
    splits = [s.split or "train" for s in samples]
    carve = {}
    for name, fraction, key, default in (
        ("test", test_split, "data.test_split", 0.0),
        ("val", validation_split, "data.validation_split", DEFAULT_VALIDATION_SPLIT),
    ):
        if name in present and fraction is not None:
            raise ConfigError(
                f"{key}: the source already has a {name} part; remove {key} to use it, "
                f"or merge the part into train to re-split"
            )
        if name not in present:
            carve[name] = default if fraction is None else fraction
    pool = [i for i, s in enumerate(splits) if s == "train"]
    rng = np.random.default_rng(seed)
    # Both fractions are of the whole pool (S1's 4/6, 1/6, 1/6): once test is carved,
    # val's share of what is left is val / (1 - test).
    left = 1.0
    for name, fraction in carve.items():  # test first
        if fraction > 0:
            for i in _carve(samples, pool, fraction / left, rng):
                splits[i] = name
            pool = [i for i in pool if splits[i] == "train"]
            left -= fraction
    return splits


def _carve(samples: Sequence[Sample], pool: list[int], fraction: float, rng) -> list[int]:
    """`fraction` of each class's groups of identical files, drawn at random."""
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in sorted(pool, key=lambda i: samples[i].path):
        groups[samples[i].label][samples[i].sha256 or samples[i].path].append(i)
    chosen = []
    for label in sorted(groups):
        members = list(groups[label].values())
        take = round(len(members) * fraction)
        if fraction > 0 and len(members) > 1:
            take = min(max(take, 1), len(members) - 1)  # every class in both sides
        for k in rng.permutation(len(members))[:take]:
            chosen += members[k]
    return chosen


def assign_fold(
    samples: Sequence[Sample], splits: Sequence[str], folds: int, fold: int, seed: int
) -> list[str]:
    """K-fold cross-validation: the training pool (train and val) dealt into `folds` folds,
    class by class, in groups of identical files; fold `fold` is val, the others train. The
    folds follow the seed alone, so the K runs of one seed see the same folds."""
    pool = [i for i, split in enumerate(splits) if split in ("train", "val")]
    pool.sort(key=lambda i: samples[i].path)
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in pool:
        groups[samples[i].label][samples[i].sha256 or samples[i].path].append(i)
    rng = np.random.default_rng([seed, folds])  # its own stream: the test carve stays as it was
    result = list(splits)
    dealt = 0  # dealing continues across classes, so the folds' sizes differ by one at most
    for label in sorted(groups):
        members = list(groups[label].values())
        if len(members) < folds:
            raise ConfigError(
                f"data.folds: class {label!r} has {len(members)} distinct images in the training "
                f"pool, fewer than {folds} folds; lower data.folds"
            )
        for k in rng.permutation(len(members)):
            for i in members[k]:
                result[i] = "val" if dealt % folds == fold else "train"
            dealt += 1
    return result


def manifest_csv(samples: Sequence[Sample], splits: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "split", "sha256"])
    for sample, split in sorted(zip(samples, splits, strict=True), key=lambda p: p[0].path):
        writer.writerow([sample.path, sample.label, split, sample.sha256])
    return out.getvalue()


def write_manifest(path: Path, samples: Sequence[Sample], splits: Sequence[str]) -> None:
    write_text(path, manifest_csv(samples, splits))
